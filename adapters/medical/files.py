"""What a medical data path holds: items (a file, a DICOM series, a subject's sequences, an npz image), labels.

An item is a dict MONAI's datasets carry through *prepare*: ``{"image": [paths], "src", "stamp"}`` for files
(``stamp`` keys the disk cache to the files' size and time), ``{"npz": (path, array, index), "src", "label",
"nan"}`` for an image of an npz array. ``src`` names the item in every message.
"""

from __future__ import annotations

import hashlib
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
        with np.load(path) as z:
            if key not in z:
                raise DataError(f"{path} holds no array {key!r}; arrays: {', '.join(z.files)} (set data.options.split)")
            _NPZ[path, key] = z[key]
    return _NPZ[path, key]


def check_series(folder: Path) -> None:
    """One DICOM series per folder: mixed series would be stacked into one nonsense volume."""
    import pydicom

    uids: dict[str, str] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and is_dicom(p)):
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"{path}: not a readable DICOM file ({err})") from err
        uids.setdefault(str(header.get("SeriesInstanceUID", "?")), path.name)
    if len(uids) > 1:
        listed = "; ".join(f"{uid} (e.g. {name})" for uid, name in uids.items())
        raise DataError(
            f"{folder}: DICOM folder mixes {len(uids)} series ({listed}); put each series in its own folder"
        )
    if not uids:
        raise DataError(f"{folder}: holds no DICOM files")


def _stamp(paths: Sequence[str]) -> str:
    """Size and modification time: a changed file gets a new disk-cache entry."""
    parts = []
    for p in paths:
        path = Path(p)
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        parts += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()


def find_items(files: list[Path], opts: MedicalOptions, ndim: int) -> tuple[list[dict[str, Any]], list[Path]]:
    """Items among ``files`` (a walked data path), and the files of no format read here."""
    items: list[dict[str, Any]] = []
    npz = [f for f in files if f.suffix.lower() == ".npz"]
    for f in npz:
        items += _npz_items(f, opts)
    dicom = [f for f in files if f not in npz and is_dicom(f)]
    if ndim == 3:
        for series in sorted({f.parent for f in dicom}):
            items.append({"image": [str(series)], "src": str(series)})
    else:
        items += [{"image": [str(f)], "src": str(f)} for f in dicom]
    rest = [f for f in files if f not in npz and f not in dicom]
    volumes = [f for f in rest if f.name.lower().endswith(NIFTI) or f.suffix.lower() in PICTURES]
    ignored = [f for f in rest if f not in volumes]
    names = [n.lower() for n in opts.channels or []]
    if len(names) > 1:
        items += _sequence_items(volumes, names)
    else:
        items += [{"image": [str(f)], "src": str(f)} for f in volumes]
    for item in items:
        if "npz" not in item:
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
        with np.load(path) as z:
            keys = set(z.files)
            if images_key not in keys:
                raise DataError(
                    f"{path} holds no array {images_key!r}; arrays: {', '.join(sorted(keys))} "
                    "(set data.options.split or data.options.npz_images)"
                )
            images = npz_array(str(path), images_key)
            labels = z[labels_key].reshape(len(images), -1)[:, 0].astype(int) if labels_key in keys else None
    except (OSError, ValueError, EOFError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz ({err})") from err
    if images.dtype.kind == "f":
        bad = np.isnan(images.reshape(len(images), -1)).any(1)
    else:
        bad = np.zeros(len(images), bool)
    return [
        {
            "npz": (str(path), images_key, i),
            "src": f"{path}[{images_key}][{i}]",
            "label": -1 if labels is None else int(labels[i]),
            "nan": bool(bad[i]),
        }
        for i in range(len(images))
    ]


def attach_labels(items: list[dict[str, Any]], root: Path, labels_csv: str | None) -> list[str]:
    """Labels from a CSV (``path,label``) for files, from their own arrays for npz entries, as class indices."""
    if labels_csv:
        files = [item for item in items if "npz" not in item]  # npz entries keep the labels their arrays give
        labels, classes = label_files([Path(item["src"]) for item in files], root, labels_csv)
        for item, label in zip(files, labels):
            item["label"] = label
        return classes
    values = sorted({item.get("label", -1) for item in items} - {-1})
    for item in items:
        item.setdefault("label", -1)
    return [str(v) for v in range(max(values) + 1)] if values else []
