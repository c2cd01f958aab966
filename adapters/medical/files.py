"""What a medical data path holds: items (a file, a DICOM series, a subject's sequences, an npz image), labels.

An item is a dict MONAI's datasets carry through *prepare*: ``{"image": [paths], "src", "stamp"}`` for files
(``stamp`` keys the disk cache to the files' size and time), ``{"npz": (path, array, index), "src", "label",
"nan"}`` for an image of an npz array. ``src`` names the item in every message.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import struct
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mimsdk.adapters.medical.options import MedicalOptions
from mimsdk.errors import DataError
from mimsdk.labels import label_files

NIFTI = (".nii", ".nii.gz")
PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def is_dicom(path: Path) -> bool:
    """A ``.dcm`` file, or one without a suffix holding the DICOM preamble's ``DICM`` marker."""
    if path.suffix.lower() == ".dcm":
        return True
    if path.suffix:
        return False
    try:
        with path.open("rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


# npz arrays are decompressed once per process, not once per item.
_NPZ: dict[tuple[str, str], np.ndarray] = {}


def npz_array(path: str, key: str) -> np.ndarray:
    """Array ``key`` of the npz file ``path`` (N×S1..Sn), loaded once per process."""
    if (path, key) not in _NPZ:
        # numpy leaves its own handle open when the zip is bad (a ResourceWarning naming the file): give it ours
        with open(path, "rb") as handle, np.load(handle) as z:
            if key not in z:
                raise DataError(f"{path} holds no array {key!r}; arrays: {', '.join(z.files)} (set data.options.split)")
            _NPZ[path, key] = z[key]
    return _NPZ[path, key]


def _too_many(path: Path, what: str, voxels: int, max_voxels: int) -> DataError:
    return DataError(
        f"{path}: its header claims {what} ({voxels:,} voxels), more than data.options.max_voxels={max_voxels:,}; "
        "not decoded (raise data.options.max_voxels to read it)"
    )


def _dicom_header(path: Path) -> Any:
    import pydicom

    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # noqa: BLE001 - any parser failure: the file is not DICOM we can read
        raise DataError(f"{path}: not a readable DICOM file ({type(err).__name__}: {str(err)[:160]})") from err


def _dicom_voxels(header: Any) -> int:
    frames = header.get("NumberOfFrames", 1)
    return int(header.get("Rows", 0) or 0) * int(header.get("Columns", 0) or 0) * max(int(frames or 1), 1)


def check_series(folder: Path, max_voxels: int | None = None) -> None:
    """One DICOM series per folder: mixed series would be stacked into one nonsense volume. With
    ``max_voxels``, the slices' headers together may claim at most that many voxels."""
    uids: dict[str, str] = {}
    voxels = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file() and is_dicom(p)):
        header = _dicom_header(path)
        voxels += _dicom_voxels(header)
        uids.setdefault(str(header.get("SeriesInstanceUID", "?")), path.name)
    if max_voxels is not None and voxels > max_voxels:
        raise _too_many(folder, "a series of slices", voxels, max_voxels)
    if len(uids) > 1:
        listed = "; ".join(f"{uid} (e.g. {name})" for uid, name in uids.items())
        raise DataError(
            f"{folder}: DICOM folder mixes {len(uids)} series ({listed}); put each series in its own folder"
        )
    if not uids:
        raise DataError(f"{folder}: holds no DICOM files")


NIFTI1_DIMS, NIFTI2_DIMS = (40, "8h"), (16, "8q")


def nifti_header(path: Path) -> bytes:
    """The first 540 bytes of a NIfTI file, decompressed when its name says ``.gz``."""
    with path.open("rb") as f:
        magic = f.read(2)
    if path.name.lower().endswith(".gz"):
        if magic != b"\x1f\x8b":
            raise DataError(f"{path}: named .nii.gz but not gzip-compressed (not a NIfTI file, or a misnamed one)")
        try:
            with gzip.open(path) as f:
                return f.read(540)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: truncated or incomplete file ({type(err).__name__}: {err})") from err
    with path.open("rb") as f:
        return f.read(540)


def check_nifti(path: Path, max_voxels: int) -> None:
    """The header of a NIfTI-1/2 (or Analyze) file, before any voxel is read: a NIfTI header at all, sane
    dimensions, at most ``max_voxels`` voxels, and for an uncompressed ``.nii`` all the voxel bytes present."""
    head = nifti_header(path)
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] in (348, 540):
            break
    else:
        raise DataError(f"{path}: not a NIfTI file (no NIfTI-1 or NIfTI-2 header; a misnamed file?)")
    two = struct.unpack(order + "i", head[:4])[0] == 540
    if two and len(head) < 540:
        raise DataError(f"{path}: truncated NIfTI-2 header ({len(head)} of 540 bytes)")
    at, fmt = NIFTI2_DIMS if two else NIFTI1_DIMS
    dims = struct.unpack(order + fmt, head[at : at + struct.calcsize(fmt)])
    if not 1 <= dims[0] <= 7 or any(d < 1 for d in dims[1 : dims[0] + 1]):
        raise DataError(f"{path}: corrupt NIfTI header (dimensions {list(dims)})")
    shape = dims[1 : dims[0] + 1]
    voxels = math.prod(shape)
    if voxels > max_voxels:
        raise _too_many(path, "a volume of " + "×".join(map(str, shape)), voxels, max_voxels)
    if not path.name.lower().endswith(".gz"):
        bitpix = struct.unpack(order + "h", head[14:16] if two else head[72:74])[0]
        offset = (
            struct.unpack(order + "q", head[168:176])[0] if two else int(struct.unpack(order + "f", head[108:112])[0])
        )
        need = max(offset, 348) + voxels * max(bitpix, 1) // 8
        size = path.stat().st_size
        if path.suffix.lower() == ".nii" and size < need:
            raise DataError(f"{path}: truncated: its header declares {need} bytes, the file holds {size}")


def check_picture(path: Path, max_voxels: int) -> None:
    """A PNG/JPEG/TIFF header (Pillow, nothing decoded) claiming at most ``max_voxels`` pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: its header claims more pixels than Pillow decodes ({err}); not decoded") from err
    except UnidentifiedImageError as err:
        raise DataError(f"{path}: not an image Pillow can read") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err
    if width * height > max_voxels:
        raise _too_many(path, f"an image of {width}×{height}", width * height, max_voxels)


def check_file(path: Path, max_voxels: int) -> None:
    """Header-level checks of one file before a reader decodes it: not empty, of the format its name says,
    no larger than ``max_voxels``. Raises DataError naming the file."""
    if path.is_dir():
        return
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    name = path.name.lower()
    if name.endswith(NIFTI):
        check_nifti(path, max_voxels)
    elif path.suffix.lower() in PICTURES:
        check_picture(path, max_voxels)
    elif is_dicom(path):
        voxels = _dicom_voxels(_dicom_header(path))
        if voxels > max_voxels:
            raise _too_many(path, "a DICOM image", voxels, max_voxels)


def _stamp(paths: Sequence[str]) -> str:
    """Size and modification time: a changed file gets a new disk-cache entry."""
    parts = []
    for p in paths:
        path = Path(p)
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        parts += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()]
    # A name that is not UTF-8 reaches Python as surrogate escapes: hash its bytes as the file system has them.
    return hashlib.sha1("|".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def find_items(files: list[Path], opts: MedicalOptions, ndim: int) -> tuple[list[dict[str, Any]], list[Path]]:
    """Items among ``files`` (a walked data path), and the files of no format read here."""
    items: list[dict[str, Any]] = []
    npz = [f for f in files if f.suffix.lower() == ".npz"]
    for f in npz:
        items += _npz_items(f, opts)
    taken = set(npz)  # sets, not lists: a folder of 10^5 files is sorted in one pass, not 10^10 comparisons
    dicom = [f for f in files if f not in taken and is_dicom(f)]
    taken.update(dicom)
    if ndim == 3:
        for series in sorted({f.parent for f in dicom}):
            items.append({"image": [str(series)], "src": str(series)})
    else:
        items += [{"image": [str(f)], "src": str(f)} for f in dicom]
    rest = [f for f in files if f not in taken]
    volumes = [f for f in rest if f.name.lower().endswith(NIFTI) or f.suffix.lower() in PICTURES]
    ignored = [f for f in rest if not (f.name.lower().endswith(NIFTI) or f.suffix.lower() in PICTURES)]
    names = [n.lower() for n in opts.channels or []]
    if len(names) > 1:
        items += _sequence_items(volumes, names)
    else:
        items += [{"image": [str(f)], "src": str(f)} for f in volumes]
    for item in items:
        if "npz" not in item and "error" not in item:
            item["stamp"] = _stamp(item["image"])
    return items, ignored


def _sequence_items(volumes: list[Path], names: list[str]) -> list[dict[str, Any]]:
    """Subject folders holding one file per sequence name -> one item each; other files are 4D volumes."""
    by_folder: dict[Path, dict[str, Path]] = {}
    loose = []
    for f in volumes:
        stem = _stem(f).lower()
        name = next((n for n in names if stem == n or stem.endswith(("_" + n, "-" + n))), None)
        if name is None:
            loose.append(f)
        else:
            by_folder.setdefault(f.parent, {})[name] = f
    items = []
    for folder, found in sorted(by_folder.items()):
        missing = [n for n in names if n not in found]
        if missing:
            items.append({"image": [str(folder)], "src": str(folder), "missing": missing})
        else:
            items.append({"image": [str(found[n]) for n in names], "src": str(folder)})
    return items + [{"image": [str(f)], "src": str(f)} for f in loose]


def _npz_items(path: Path, opts: MedicalOptions) -> list[dict[str, Any]]:
    images_key = opts.npz_images or f"{opts.split}_images"
    labels_key = opts.npz_labels or f"{opts.split}_labels"
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        with path.open("rb") as handle, np.load(handle) as z:
            keys = set(z.files)
            if images_key not in keys:
                raise DataError(
                    f"{path} holds no array {images_key!r}; arrays: {', '.join(sorted(keys))} "
                    "(set data.options.split or data.options.npz_images)"
                )
            check_npz_array(path, images_key, opts.max_voxels)
            images = npz_array(str(path), images_key)
            labels = z[labels_key].reshape(len(images), -1)[:, 0].astype(int) if labels_key in keys else None
    except DataError as err:
        if "holds no array" in str(err):
            raise  # the split asked for is not there: a setting, not a bad file
        return [{"src": str(path), "error": str(err)}]
    except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, zlib errors, ...: a file that cannot be read
        return [{"src": str(path), "error": f"{path}: not a readable .npz ({type(err).__name__}: {err})"}]
    flat = images.reshape(len(images), -1)
    bad = np.isnan(flat).any(1) if images.dtype.kind == "f" else np.zeros(len(images), bool)
    constant = flat.min(1) == flat.max(1) if flat.shape[1] else np.ones(len(images), bool)
    return [
        {
            "npz": (str(path), images_key, i),
            "src": f"{path}[{images_key}][{i}]",
            "label": -1 if labels is None else int(labels[i]),
            "nan": bool(bad[i]),
            "constant": bool(constant[i]) and not bad[i],
        }
        for i in range(len(images))
    ]


def check_npz_array(path: Path, key: str, max_voxels: int) -> None:
    """The ``.npy`` header of array ``key`` inside the npz, before it is decompressed: a shape of at most
    ``max_voxels`` values in all (the whole array is read into memory) and an entry as large as it says."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_2_0 if version[0] >= 2 else np.lib.format.read_array_header_1_0
            shape, _, dtype = read(f)
            header = f.tell()
    values = math.prod(shape)
    if values > max_voxels:
        raise _too_many(path, f"an array {key} of shape {tuple(shape)}", values, max_voxels)
    if header + values * dtype.itemsize > info.file_size:
        raise DataError(
            f"{path}: array {key} declares shape {tuple(shape)} of {dtype}, more than its "
            f"{info.file_size} bytes hold (a corrupt or truncated file)"
        )


def attach_labels(items: list[dict[str, Any]], root: Path, labels_csv: str | None) -> list[str]:
    """Labels from a CSV (``path,label``) for files, from their own arrays for npz entries, as class indices."""
    if labels_csv:
        # npz entries keep the labels their arrays give; an unreadable npz is skipped, unlabelled
        files = [item for item in items if "npz" not in item and "error" not in item]
        labels, classes = label_files([Path(item["src"]) for item in files], root, labels_csv)
        for item, label in zip(files, labels):
            item["label"] = label
        return classes
    values = sorted({item.get("label", -1) for item in items} - {-1})
    for item in items:
        item.setdefault("label", -1)
    return [str(v) for v in range(max(values) + 1)] if values else []
