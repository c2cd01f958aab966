"""Radiology: CT, MRI and X-ray through MONAI, in 2D or 3D, with physical spacing, orientation and intensity units.

The model's ``input_size`` says which: two sizes are an X-ray (C×H×W), three a volume (C×X×Y×Z, in the
canonical RAS frame). What a path may hold:

- NIfTI files (``.nii``, ``.nii.gz``), read with MONAI's ``NibabelReader``;
- DICOM: a folder of one series is one volume (slices stacked in instance order by ``PydicomReader``); in 2D
  every ``.dcm`` file is one image;
- PNG / JPEG X-rays (``PILReader``);
- ``.npz`` arrays (MedMNIST: ``train_images``, ``train_labels``, ``val_images``, ...), a split chosen by
  ``data.options.split``;
- multi-sequence MRI: one folder per subject with a file per sequence named after ``data.options.channels``
  (``sub01/T1.nii.gz``, ``sub01/FLAIR.nii.gz``, or ``..._T1.nii.gz``), stacked as channels; or one 4D file
  whose volumes are the sequences.

Every volume goes through one deterministic MONAI chain, *prepare* (load, channel first, checks, RAS,
resampling to ``spacing``, CT window or MRI percentiles to [0, 1], foreground crop, size check), whose output
MONAI's ``CacheDataset`` (``cache: memory``) or ``PersistentDataset`` (``cache: disk``) keeps, so decoding
happens once per run, or once ever. Then a random chain per item: a crop of ``model.input_size`` (or a random
scaled crop resized to it) and flips, drawn from a seed taken from torch's generator, so the trainer's
per-(seed, epoch, index) seeding makes it exact on resume.

Bad input (a truncated file, a DICOM folder mixing series, a 4D volume where 3D is expected, NaN voxels, a
volume smaller than the crop) is found by running *prepare* over every item before training: one warning per
file naming it and the problem, then training goes on over the rest; ``data.strict`` makes the first an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Transform
from PIL import Image

from mimsdk.config import DataConfig, ModelConfig, adapter_options, choice
from mimsdk.data import DataError, normalisation
from mimsdk.labels import label_files
from mimsdk.picture import grid

log = logging.getLogger(__name__)

NIFTI = (".nii", ".nii.gz")
PICTURES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PLANES = ("axial", "coronal", "sagittal")


@dataclass
class MedicalOptions:
    """``data.options`` of the medical adapter; the preparation keys are stored with the model."""

    kind: str = choice("auto", "auto", "ct", "mri", "xray")  # auto: intensity by percentiles, as for MRI
    intensity: str = choice("auto", "auto", "window", "percentiles", "none")  # auto: window for CT, else percentiles
    window: list[float] = field(default_factory=lambda: [-1000.0, 1000.0])  # CT: Hounsfield units -> [0, 1], clipped
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])  # MRI / X-ray: per channel -> [0, 1]
    spacing: list[float] | None = None  # target voxel (pixel) spacing in mm; None keeps each file's own
    orientation: str = choice("RAS", "RAS", "LPS", "none")  # 3D only: axes reordered and flipped to this frame
    channels: list[str] | None = None  # sequence names, e.g. [T1, T2, FLAIR]; None: one channel, "image"
    foreground_crop: bool = False  # crop to the bounding box of voxels above 0 after intensity scaling
    margin: int = 0  # voxels kept around the foreground
    fit: str = choice("auto", "auto", "crop", "resize")  # auto: crop for 3D, resize for 2D
    pad: bool = False  # pad volumes smaller than the crop (else they are bad input)
    cache: str = choice("auto", "auto", "none", "memory", "disk")  # auto: memory for files, none for npz
    cache_dir: str | None = None  # for cache: disk (default: <data path>.mimsdk-cache beside a file, inside a folder)
    split: str = "train"  # npz: arrays <split>_images / <split>_labels
    npz_images: str | None = None  # npz: explicit array names instead of the split's
    npz_labels: str | None = None


# Keys that change what a prepared volume looks like: they are stored with the model, so the evaluation
# commands (embed, probe, reconstruct) prepare data as in pre-training without the recipe.
PREPARE_KEYS = (
    "kind", "intensity", "window", "percentiles", "spacing", "orientation", "channels", "foreground_crop", "margin",
    "fit", "pad",
)  # fmt: skip


def _intensity(opts: MedicalOptions) -> str:
    if opts.intensity != "auto":
        return opts.intensity
    return "window" if opts.kind == "ct" else "percentiles"


def _channel_names(opts: MedicalOptions, model: ModelConfig) -> list[str]:
    names = opts.channels or (["image"] if model.in_chans == 1 else [f"channel{i}" for i in range(model.in_chans)])
    if len(names) != model.in_chans:
        raise DataError(
            f"data.options.channels names {len(names)} sequences {names}; model.in_chans is {model.in_chans}"
        )
    return names


@contextlib.contextmanager
def _plain_tensors() -> Iterator[None]:
    """MONAI transforms on plain tensors: no MetaTensor bookkeeping, which costs more than a small crop itself.

    Only for the random chain, which needs no affine. MONAI's switch is global to the process, so it is never
    used while *prepare* may run in CacheDataset's filling threads (only after construction, per item).
    """
    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


def _above_zero(x: torch.Tensor) -> torch.Tensor:
    return x > 0


def _is_dicom(path: Path) -> bool:
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


def _npz_array(path: str, key: str) -> np.ndarray:
    if (path, key) not in _NPZ:
        with np.load(path) as z:
            if key not in z:
                raise DataError(f"{path} holds no array {key!r}; arrays: {', '.join(z.files)} (set data.options.split)")
            _NPZ[path, key] = z[key]
    return _NPZ[path, key]


class Prepare(Transform):
    """The deterministic chain, item dict -> ``{"image": C×S1..Sn float32, "label", "src"}`` or ``{"error"}``.

    It never raises: a bad file becomes an error record, so MONAI's caches can hold the verdict too and a
    second run with ``cache: disk`` neither decodes nor re-checks. A MONAI ``Transform`` (not random), so
    ``CacheDataset`` and ``PersistentDataset`` keep its output.
    """

    def __init__(self, opts: MedicalOptions, model: ModelConfig) -> None:
        from monai.data import NibabelReader, PILReader, PydicomReader
        from monai.transforms import (
            Compose,
            CropForegroundd,
            EnsureChannelFirstd,
            LoadImaged,
            Orientationd,
            ScaleIntensityRanged,
            ScaleIntensityRangePercentilesd,
            Spacingd,
        )

        self.opts, self.ndim, self.in_chans = opts, len(model.input_size), model.in_chans
        self.input_size = tuple(model.input_size)
        # PIL and pydicom are told to keep numpy's (row, column) order in 2D so an X-ray stays upright; in 3D
        # pydicom's default (x, y) order matches NIfTI's and the affine.
        readers = {
            "nifti": NibabelReader(),
            "dicom": PydicomReader(swap_ij=self.ndim == 3, fname_regex=None),
            "picture": PILReader(reverse_indexing=False),
        }
        # LoadImage registers every reader MONAI knows besides ours, and the GPU DICOM one complains, at each
        # construction, that it has no GPU decoder: it is never used here, so it is made quiet.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
            level, plugin_log.level = plugin_log.level, logging.ERROR
            try:
                self.load = {k: LoadImaged("image", reader=r, image_only=True) for k, r in readers.items()}
            finally:
                plugin_log.setLevel(level)
        self.channel_first = EnsureChannelFirstd("image")
        steps: list[Any] = []
        if self.ndim == 3 and opts.orientation != "none":
            # Readers give affines in RAS world coordinates (pydicom's LPS is converted on reading).
            steps.append(Orientationd("image", axcodes=opts.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))))
        if opts.spacing:
            if len(opts.spacing) != self.ndim:
                raise DataError(f"data.options.spacing {opts.spacing} needs {self.ndim} values, one per axis")
            steps.append(Spacingd("image", pixdim=opts.spacing, mode="bilinear"))
        # Geometry needs the affine a MetaTensor carries; intensity and cropping run on plain tensors, which
        # skip MetaTensor's per-operation bookkeeping (several times faster on small volumes).
        self.geometry = Compose(steps)
        steps = []
        self.intensity = _intensity(opts)
        if self.intensity == "window":
            lo, hi = opts.window
            steps.append(ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
        elif self.intensity == "percentiles":
            lo, hi = opts.percentiles
            steps.append(
                ScaleIntensityRangePercentilesd("image", lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True,
                                                channel_wise=True)
            )  # fmt: skip
        if opts.foreground_crop:
            steps.append(CropForegroundd("image", source_key="image", select_fn=_above_zero, margin=opts.margin,
                                         allow_smaller=True))  # fmt: skip
        self.values = Compose(steps)
        self.crop = (opts.fit == "crop") or (opts.fit == "auto" and self.ndim == 3)

    def settings(self) -> str:
        """What decides the output, hashed into the disk cache's folder name."""
        return json.dumps([asdict(self.opts)[k] for k in PREPARE_KEYS] + [self.ndim, self.in_chans, self.input_size])

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        src = item["src"]
        try:
            image = self._prepare(item)
        except DataError as err:
            return {"error": str(err), "src": src}
        except Exception as err:  # noqa: BLE001 - any reader failure becomes a message naming the file
            return {"error": f"{src}: {_reason(err)}", "src": src}
        return {"image": image, "label": item["label"], "src": src}

    def _load(self, item: dict[str, Any]) -> torch.Tensor:
        from monai.data import MetaTensor

        if "npz" in item:
            path, key, index = item["npz"]
            array = np.asarray(_npz_array(path, key)[index], dtype=np.float32)
            # MedMNIST arrays are N×S1..Sn, or N×H×W×3 for colour: channels last, if any.
            rgb = array.ndim == 3 and array.shape[-1] in (3, 4) and self.ndim == 2
            array = np.moveaxis(array, -1, 0) if rgb else array[None]
            return MetaTensor(torch.from_numpy(array))
        paths = item["image"]
        first = Path(paths[0])
        if first.is_dir():
            _check_series(first)
            reader = "dicom"
        elif first.name.lower().endswith(NIFTI):
            reader = "nifti"
        elif first.suffix.lower() in PICTURES:
            reader = "picture"
        else:
            reader = "dicom"
        loaded = self.load[reader]({"image": paths if len(paths) > 1 else paths[0]})
        return self.channel_first(loaded)["image"]

    def _prepare(self, item: dict[str, Any]) -> torch.Tensor:
        src = item["src"]
        image = self._load(item)
        spatial = tuple(image.shape[1:])
        what = {2: "2D image", 3: "3D volume"}
        if len(spatial) != self.ndim:
            got = what.get(len(spatial), f"{len(spatial)}D array")
            raise DataError(f"{src}: a {got} of shape {spatial} where a {what[self.ndim]} is expected")
        channels = image.shape[0]
        if channels != self.in_chans:
            if self.ndim == 2 and self.in_chans == 1 and channels in (3, 4):
                image = image[:3].mean(0, keepdim=True)  # an X-ray saved as RGB: its channels are equal
            elif self.ndim == 3 and channels > 1 and "npz" not in item and len(item["image"]) == 1:
                raise DataError(
                    f"{src}: a 4D volume ({channels} volumes of {spatial}) where a 3D volume with "
                    f"{self.in_chans} channel(s) is expected; set model.in_chans and data.options.channels "
                    "to read its volumes as sequences"
                )
            else:
                raise DataError(f"{src}: has {channels} channels; model.in_chans is {self.in_chans}")
        values = image.as_tensor() if hasattr(image, "as_tensor") else image
        if values.is_floating_point() and "npz" not in item:  # npz arrays were checked whole by the scan
            nan = int(torch.isnan(values).sum())
            if nan:
                raise DataError(f"{src}: contains {nan} NaN voxel(s) of {image.numel()}; no tensor is made from it")
            if not torch.isfinite(values).all():
                raise DataError(f"{src}: contains infinite values")
        image = image.float()
        if self.geometry.transforms:
            image = self.geometry({"image": image})["image"]
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
        image = self.values({"image": image})["image"]
        size = tuple(image.shape[1:])
        if self.crop and not self.opts.pad and any(s < c for s, c in zip(size, self.input_size)):
            after = []
            if self.opts.spacing:
                after.append(f"resampling to spacing {self.opts.spacing} mm")
            if self.opts.foreground_crop:
                after.append("the foreground crop")
            when = f" after {' and '.join(after)}" if after else ""
            raise DataError(
                f"{src}: {'×'.join(map(str, size))} voxels{when}, smaller than the "
                f"{'×'.join(map(str, self.input_size))} crop (model.input_size); set data.options.pad: true to pad"
            )
        return image.float().contiguous()


def _reason(err: Exception) -> str:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, EOFError) or "ended before" in text or "truncated" in text.lower():
        return f"truncated or incomplete file ({text})"
    return f"cannot be read ({text})"


def _check_series(folder: Path) -> None:
    """One DICOM series per folder: mixed series would be stacked into one nonsense volume."""
    import pydicom

    uids: dict[str, str] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and _is_dicom(p)):
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


def find_items(root: Path, opts: MedicalOptions, ndim: int) -> tuple[list[dict[str, Any]], list[Path]]:
    """Items (``{"image": [paths], "src", "stamp"}`` or npz entries) under ``root``, and ignored files."""
    if root.is_file():
        files = [root]
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    items: list[dict[str, Any]] = []
    ignored: list[Path] = []
    npz = [f for f in files if f.suffix.lower() == ".npz"]
    for f in npz:
        items += _npz_items(f, opts)
    dicom = [f for f in files if f not in npz and _is_dicom(f)]
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
            images = _npz_array(str(path), images_key)
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


class MedicalDataset(torch.utils.data.Dataset):
    """Prepared volumes (cached by MONAI) -> ``(tensor C×S1..Sn float32, label)``, label -1 if none.

    ``augment`` is a MONAI ``Compose`` of random crops and flips (or the deterministic evaluation view); it is
    re-seeded for every item from torch's global generator, which the trainer seeds per (seed, epoch, index).
    """

    def __init__(
        self,
        prepared: Any,
        indices: list[int],
        items: list[dict[str, Any]],
        classes: list[str],
        augment: Any,
        input_size: Sequence[int],
        mean: list[float],
        std: list[float],
    ) -> None:
        self.prepared, self.indices, self.augment = prepared, indices, augment
        self.files = [items[i]["src"] for i in indices]
        self.labels = [int(items[i].get("label", -1)) for i in indices]
        self.classes = classes
        self.input_size = tuple(input_size)
        n = len(self.input_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, *[1] * n)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, *[1] * n)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        record = self.prepared[self.indices[index]]
        if "error" in record:  # the file changed after the check
            raise DataError(record["error"])
        # MONAI draws from numpy RandomStates: seed them from torch so the item is a function of torch's seed.
        self.augment.set_random_state(seed=int(torch.randint(0, 2**31 - 1, ()).item()))
        with _plain_tensors():
            out = self.augment({"image": record["image"]})["image"]
        x = torch.as_tensor(out.as_tensor() if hasattr(out, "as_tensor") else out, dtype=torch.float32)
        if tuple(x.shape[1:]) != self.input_size:
            raise DataError(f"{record['src']}: prepared to {tuple(x.shape)}, not C×{self.input_size}")
        x = (x - self.mean) / self.std  # a new tensor: the cached volume is never modified
        return x.contiguous(), self.labels[index]


class MedicalAdapter:
    name = "medical"

    def __init__(self) -> None:
        # The training and evaluation views of one path share one check and one cache.
        self._scans: dict[str, tuple[Any, list[int], list[dict[str, Any]], list[str]]] = {}

    def options(self, data: DataConfig, model: ModelConfig) -> MedicalOptions:
        """``data.options``, or for a trained model read without its recipe, the options stored with it."""
        if not data.options and model.metadata.get("options"):
            return adapter_options(MedicalOptions, DataConfig(options=dict(model.metadata["options"])))
        return adapter_options(MedicalOptions, data)

    def _stats(self, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        # Intensities are in [0, 1] after windowing or percentiles; mean and std are optional on top.
        return normalisation(data.mean, data.std, model.in_chans, [0.0] * model.in_chans, [1.0] * model.in_chans)

    def scan(self, path: str | Path, data: DataConfig, model: ModelConfig) -> tuple[Any, list[int], list, list]:
        """Check every item once (through the cache), warn about or refuse bad ones; memoised per path."""
        opts = self.options(data, model)
        if len(model.input_size) not in (2, 3):
            raise DataError(f"model.input_size {model.input_size}: medical data are 2D (H, W) or 3D (X, Y, Z)")
        _channel_names(opts, model)
        prepare = Prepare(opts, model)
        root = Path(path)
        key = json.dumps([str(root.resolve()), prepare.settings(), asdict(opts), data.labels, data.strict])
        if key in self._scans:
            return self._scans[key]
        if not root.exists():
            raise DataError(f"data path {root} does not exist")
        items, ignored = find_items(root, opts, len(model.input_size))
        if data.labels:
            ignored = [f for f in ignored if f.resolve() != Path(data.labels).resolve()]
        if ignored:
            warnings.warn(
                f"ignoring {len(ignored)} file(s) in {root} that are not NIfTI, DICOM, PNG/JPEG or npz "
                f"(e.g. {ignored[0].name})",
                stacklevel=3,
            )
        if not items:
            raise DataError(f"{root} holds no medical images; expected NIfTI, DICOM, PNG/JPEG or .npz files")
        classes = _attach_labels(items, root, data.labels)
        prepared = self._cached(items, prepare, opts, root, data)
        bad: list[str] = []  # one message per bad file (or npz array)
        skip: set[int] = set()
        arrays: dict[tuple[str, str], str | None] = {}  # npz array -> verdict on its first image
        for i, item in enumerate(items):
            reason = None
            if item.get("missing"):
                reason = f"{item['src']}: no file for sequence(s) {', '.join(item['missing'])}"
            elif "npz" in item:
                # An array's images share shape and dtype: one check speaks for all, and one message.
                array = item["npz"][:2]
                if array not in arrays:
                    arrays[array] = prepared[i].get("error")
                    if arrays[array]:
                        count = sum(1 for it in items if it.get("npz", ())[:2] == array)
                        bad.append(f"{arrays[array]} (all {count} images of {array[0]}[{array[1]}])")
                if arrays[array]:
                    skip.add(i)
                elif item["nan"]:
                    reason = f"{item['src']}: contains NaN values; no tensor is made from it"
            else:
                reason = prepared[i].get("error")
            if reason:
                bad.append(reason)
                skip.add(i)
            if bad and data.strict:
                raise DataError(f"{bad[0]} (strict mode)")
        for reason in bad:
            warnings.warn(f"skipping {reason}", stacklevel=3)
        good = [i for i in range(len(items)) if i not in skip]
        if skip:
            warnings.warn(f"skipped {len(skip)} of {len(items)} items in {root}; using {len(good)}", stacklevel=3)
        if not good:
            raise DataError(f"{root} holds no usable images ({len(skip)} bad)")
        self._scans[key] = (prepared, good, items, classes)
        return self._scans[key]

    def _cached(self, items: list[dict], prepare: Prepare, opts: MedicalOptions, root: Path, data: DataConfig) -> Any:
        from monai.data import CacheDataset, Dataset, PersistentDataset

        cache = opts.cache
        if cache == "auto":
            cache = "none" if all("npz" in item for item in items) else "memory"
        if cache == "memory":
            return CacheDataset(items, prepare, num_workers=max(1, data.num_workers), progress=False, copy_cache=False)
        if cache == "disk":
            base = Path(opts.cache_dir) if opts.cache_dir else (root if root.is_dir() else root.parent)
            if not opts.cache_dir:
                base = base / ".mimsdk-cache"
            folder = base / hashlib.sha1(prepare.settings().encode()).hexdigest()[:16]
            folder.mkdir(parents=True, exist_ok=True)
            return PersistentDataset(items, prepare, cache_dir=folder)
        return Dataset(items, prepare)

    def augment(self, data: DataConfig, model: ModelConfig, train: bool) -> Any:
        """The random chain (``train``) or the deterministic evaluation view, as a MONAI ``Compose``."""
        from monai.transforms import (
            CenterSpatialCropd,
            Compose,
            RandFlipd,
            RandScaleCropd,
            RandSpatialCropd,
            Resized,
            SpatialPadd,
        )

        opts = self.options(data, model)
        size = list(model.input_size)
        n = len(size)
        crop = opts.fit == "crop" or (opts.fit == "auto" and n == 3)
        steps: list[Any] = [SpatialPadd("image", size)] if crop and opts.pad else []
        if crop:
            steps.append(
                RandSpatialCropd("image", size, random_size=False) if train else CenterSpatialCropd("image", size)
            )
        else:
            if train:
                # RandomResizedCrop's area scale drawn per axis as its n-th root (MONAI's scaled crop).
                lo, hi = (s ** (1 / n) for s in data.crop_scale)
                steps.append(RandScaleCropd("image", roi_scale=lo, max_roi_scale=hi, random_size=True))
            steps.append(Resized("image", size, mode="area"))
        if train and data.hflip:
            # Left-right: the R axis of a RAS volume, the columns of an X-ray.
            steps.append(RandFlipd("image", prob=0.5, spatial_axis=0 if n == 3 else 1))
        return Compose(steps)

    def dataset(self, path: str | Path, data: DataConfig, model: ModelConfig, train: bool) -> MedicalDataset:
        prepared, good, items, classes = self.scan(path, data, model)
        mean, std = self._stats(data, model)
        augment = self.augment(data, model, train)
        return MedicalDataset(prepared, good, items, classes, augment, model.input_size, mean, std)

    def metadata(self, data: DataConfig, model: ModelConfig) -> dict[str, Any]:
        opts = self.options(data, model)
        mean, std = self._stats(data, model)
        stored = {k: v for k, v in asdict(opts).items() if k in PREPARE_KEYS}
        intensity = _intensity(opts)
        meta: dict[str, Any] = {
            "kind": opts.kind,
            "dims": len(model.input_size),
            "channel_names": _channel_names(opts, model),
            "spacing": opts.spacing,
            "orientation": opts.orientation if len(model.input_size) == 3 else None,
            "intensity": intensity,
            "mean": mean,
            "std": std,
            "options": stored,
        }
        if intensity == "window":
            meta["window"] = opts.window
        elif intensity == "percentiles":
            meta["percentiles"] = opts.percentiles
        return meta

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        """Columns original | masked | reconstruction; a row per sample (2D) or per sample and plane (3D).

        Volumes show their axial, coronal and sagittal mid-slices, superior/anterior up; the first channel.
        """
        meta = model.metadata
        mean = float((meta.get("mean") or [0.0])[0])
        std = float((meta.get("std") or [1.0])[0])

        def planes(t: torch.Tensor, scaled: bool = True) -> list[np.ndarray]:
            v = t.detach().float().cpu()[0].numpy()
            v = v * std + mean if scaled else v
            if v.ndim == 2:
                return [v]
            x, y, z = (s // 2 for s in v.shape)
            return [np.rot90(v[:, :, z]), np.rot90(v[:, y, :]), np.rot90(v[x, :, :])]

        rows = []
        for i in range(recon["input"].shape[0]):
            masked = [m > 0.5 for m in planes(recon["mask"][i], scaled=False)]
            original = planes(recon["input"][i])
            shown = [np.where(m, 0.5, o) for m, o in zip(masked, original)]  # grey where masked
            rows += [list(r) for r in zip(original, shown, planes(recon["reconstruction"][i]))]
        return grid(rows, ["original", "masked", "reconstruction"])

    def sample_path(self) -> None:
        return None


def _attach_labels(items: list[dict[str, Any]], root: Path, labels_csv: str | None) -> list[str]:
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


ADAPTER = MedicalAdapter()
