"""*Prepare*: the deterministic MONAI chain every item goes through once, its output cached by MONAI.

Load, channel first, checks (dimensions, channels, NaN), RAS orientation, resampling to ``spacing``, CT window
or MRI percentiles to [0, 1], foreground crop, size check, then packed compactly (:func:`~.stored.pack`): the
stored half of the preparation, what MONAI's caches and a shard set hold. A bad file becomes an error record,
not an exception, so the scan can report it and MONAI's caches can keep the verdict.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform

from mimsdk.adapters.medical.files import NIFTI, PICTURES, check_file, check_series, npz_array
from mimsdk.adapters.medical.options import PREPARE_KEYS, MedicalOptions, crops, intensity
from mimsdk.adapters.medical.stored import pack
from mimsdk.config import ModelConfig
from mimsdk.data import failure_reason, first_line
from mimsdk.errors import DataError

DEFAULT_MAX_VOXELS = MedicalOptions().max_voxels
# What a record holds (compact images with their spacing since 2): part of the disk cache's key, so a cache
# written by an earlier mimsdk is not read as this one's.
RECORD_FORMAT = 2


def _above_zero(x: torch.Tensor) -> torch.Tensor:
    return x > 0


class Prepare(Transform):
    """The deterministic chain, item dict -> ``{"image": C×S1..Sn packed, "spacing", "label", "src"}`` or
    ``{"error", "src"}``; the image is uint16 for window and percentile scaling, float32 for none.

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
        self.intensity = intensity(opts)
        if self.intensity == "window":
            lo, hi = opts.window
            steps.append(ScaleIntensityRanged("image", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
        # Percentiles are taken per channel in _percentiles, which names a volume whose percentiles coincide.
        if opts.foreground_crop:
            steps.append(CropForegroundd("image", source_key="image", select_fn=_above_zero, margin=opts.margin,
                                         allow_smaller=True))  # fmt: skip
        self.values = Compose(steps)
        self.crop = crops(opts, self.ndim)

    def settings(self) -> str:
        """What decides the output, hashed into the disk cache's folder name."""
        values = [asdict(self.opts)[k] for k in PREPARE_KEYS] + [self.ndim, self.in_chans, self.input_size]
        values.append(RECORD_FORMAT)
        if self.opts.max_voxels != DEFAULT_MAX_VOXELS:  # it decides which files are refused (default: as before)
            values.append(self.opts.max_voxels)
        return json.dumps(values)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        src = item["src"]
        if "error" in item:  # found unreadable while listing (an npz that does not open)
            return {"error": item["error"], "src": src}
        notes: list[str] = []
        try:
            image, spacing = self._prepare(item, notes)
        except DataError as err:
            text = first_line(str(err))
            return {"error": text if text.startswith(src) else f"{src}: {text}", "src": src}
        except Exception as err:  # noqa: BLE001 - any reader failure becomes a message naming the file
            return {"error": f"{src}: {_reason(err)}", "src": src}
        record = {"image": pack(image, self.intensity), "spacing": spacing, "label": item["label"], "src": src}
        if notes:
            record["notes"] = notes
        return record

    def _load(self, item: dict[str, Any]) -> torch.Tensor:
        from monai.data import MetaTensor

        if "npz" in item:
            path, key, index = item["npz"]
            array = np.asarray(npz_array(path, key)[index], dtype=np.float32)
            # MedMNIST arrays are N×S1..Sn, or N×H×W×3 for colour: channels last, if any.
            rgb = array.ndim == 3 and array.shape[-1] in (3, 4) and self.ndim == 2
            array = np.moveaxis(array, -1, 0) if rgb else array[None]
            return MetaTensor(torch.from_numpy(array))
        paths = item["image"]
        first = Path(paths[0])
        for path in paths:  # before any reader decodes: not empty, the format named, a sane size
            check_file(Path(path), self.opts.max_voxels)
        if first.is_dir():
            check_series(first, self.opts.max_voxels)
            reader = "dicom"
        elif first.name.lower().endswith(NIFTI):
            reader = "nifti"
        elif first.suffix.lower() in PICTURES:
            reader = "picture"
        else:
            reader = "dicom"
        loaded = self.load[reader]({"image": paths if len(paths) > 1 else paths[0]})
        return self.channel_first(loaded)["image"]

    def _prepare(self, item: dict[str, Any], notes: list[str]) -> tuple[torch.Tensor, list[float]]:
        """C×S1..Sn float32 (scaled, cropped) and its voxel spacing in mm."""
        src = item["src"]
        image = self._load(item)
        spatial = tuple(image.shape[1:])
        if math.prod(spatial) <= 1:
            raise DataError(f"{src}: a one-voxel image {spatial}: nothing to crop or learn from")
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
        low, high = float(values.min()), float(values.max())
        if low == high:
            notes.append(f"{src}: every voxel is {low:g} (a constant image, nothing to learn from); kept")
        image = image.float()
        if self.geometry.transforms:
            self._check_resampled(image, src)
            image = self.geometry({"image": image})["image"]
        pixdim = getattr(image, "pixdim", None)  # the MetaTensor's, after resampling (an npz's: 1)
        spacing = [float(p) for p in pixdim][: self.ndim] if pixdim is not None else [1.0] * self.ndim
        image = image.as_tensor() if hasattr(image, "as_tensor") else image
        if self.intensity == "percentiles":
            image = self._percentiles(image, src, notes, constant=low == high)
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
        return image.float().contiguous(), spacing

    def _check_resampled(self, image: Any, src: str) -> None:
        """Refuse a volume that resampling to ``spacing`` would blow up beyond ``max_voxels`` (a header with a
        pixel spacing of metres), before Spacingd allocates it."""
        pixdim = getattr(image, "pixdim", None)
        if pixdim is None or not self.opts.spacing:
            return
        pixdim = [float(p) for p in pixdim][: self.ndim]
        spatial = list(image.shape[1:])
        voxels = image.shape[0] * math.prod(
            max(1, math.ceil(n * p / t)) for n, p, t in zip(spatial, pixdim, self.opts.spacing)
        )
        if voxels > self.opts.max_voxels:
            raise DataError(
                f"{src}: resampling its {'×'.join(map(str, spatial))} voxels of {pixdim} mm to {self.opts.spacing} mm "
                f"would make {voxels:,} voxels, more than data.options.max_voxels={self.opts.max_voxels:,}"
            )

    def _percentiles(self, image: torch.Tensor, src: str, notes: list[str], constant: bool) -> torch.Tensor:
        """MONAI's per-channel percentile scaling to [0, 1] (the same computation), except where a channel's
        percentiles coincide, which MONAI reports as a bare "Divide by zero" and leaves unscaled: there its
        minimum and maximum are used instead, and the file is named; a constant channel becomes 0."""
        from monai.transforms import ScaleIntensityRange
        from monai.transforms.utils_pytorch_numpy_unification import percentile
        from monai.utils import convert_to_tensor

        lower, upper = self.opts.percentiles
        channels = []
        for c, channel in enumerate(image):
            a_min, a_max = percentile(channel, lower), percentile(channel, upper)
            if not float(a_max) > float(a_min):
                a_min, a_max = channel.min(), channel.max()
                if not float(a_max) > float(a_min):
                    channels.append(torch.zeros_like(channel, dtype=torch.float32))
                    continue
                if not constant:
                    notes.append(
                        f"{src}: the {lower:g} and {upper:g} percentiles of channel {c} are equal "
                        f"({float(percentile(channel, lower)):g}); it is scaled by its minimum and maximum instead"
                    )
            scale = ScaleIntensityRange(a_min=a_min, a_max=a_max, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)
            channels.append(convert_to_tensor(scale(channel), track_meta=False))
        return torch.stack(channels)


def _reason(err: Exception) -> str:
    """One line: the innermost error of MONAI's nested wrappers, never their tracebacks."""
    text = failure_reason(err)
    if isinstance(err, EOFError) or "ended before" in text or "truncated" in text.lower() or "EOFError" in text:
        return f"truncated or incomplete file ({text})"
    return f"cannot be read ({text})"
