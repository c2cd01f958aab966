"""*Prepare*: the deterministic MONAI chain every item goes through once, its output cached by MONAI.

Load, channel first, checks (dimensions, channels, NaN), RAS orientation, resampling to ``spacing``, CT window
or MRI percentiles to [0, 1], foreground crop, size check. A bad file becomes an error record, not an
exception, so the scan can report it and MONAI's caches can keep the verdict.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Transform

from mimsdk.adapters.medical.files import NIFTI, PICTURES, check_series, npz_array
from mimsdk.adapters.medical.options import PREPARE_KEYS, MedicalOptions, crops, intensity
from mimsdk.config import ModelConfig
from mimsdk.errors import DataError


def _above_zero(x: torch.Tensor) -> torch.Tensor:
    return x > 0


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
        self.intensity = intensity(opts)
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
        self.crop = crops(opts, self.ndim)

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
            array = np.asarray(npz_array(path, key)[index], dtype=np.float32)
            # MedMNIST arrays are N×S1..Sn, or N×H×W×3 for colour: channels last, if any.
            rgb = array.ndim == 3 and array.shape[-1] in (3, 4) and self.ndim == 2
            array = np.moveaxis(array, -1, 0) if rgb else array[None]
            return MetaTensor(torch.from_numpy(array))
        paths = item["image"]
        first = Path(paths[0])
        if first.is_dir():
            check_series(first)
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
