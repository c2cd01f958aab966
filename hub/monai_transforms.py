"""The MONAI transforms that prepare a file as the medical adapter did in pre-training, from a model's metadata.

Written into a MONAI export's ``monai_args.json`` and its card, and built by :func:`monai_transforms`, so a
team fine-tuning in MONAI reads its scans (orientation, spacing, intensity window or percentiles, crop or
resize, normalisation) as the encoder saw them.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from mimsdk.model import MaskedAutoencoder

ARGS_NAME = "monai_args.json"  # the export's arguments file, which holds the transforms too


def _step(name: str, **kwargs: Any) -> list[Any]:
    """[a MONAI dictionary transform's name, its keyword arguments on the key "image"]."""
    return [name, {"keys": "image", **kwargs}]


def monai_transforms_spec(model: MaskedAutoencoder) -> list[list[Any]]:
    """MONAI dictionary transforms (key ``"image"``) that prepare a file as the medical adapter did in
    pre-training, as [name, keyword arguments] pairs, from the facts in ``model.config.metadata``; only the
    steps those facts name. The evaluation view: a centre crop where training took random ones.

    Empty for a model not pre-trained on medical data (the card's table says how its inputs were prepared).
    """
    cfg = model.config
    meta: dict[str, Any] = cfg.metadata
    if cfg.modality != "medical":
        return []
    opts = meta.get("options") or {}
    n, size = len(cfg.input_size), list(cfg.input_size)
    # The adapter's readers: nibabel for NIfTI (pydicom's reads a DICOM series the same way in 3D); in 2D, PIL
    # told to keep numpy's (row, column) order so an X-ray stays upright.
    reader = {"reader": "NibabelReader"} if n == 3 else {"reader": "PILReader", "reverse_indexing": False}
    steps = [_step("LoadImaged", **reader), _step("EnsureChannelFirstd")]
    if meta.get("orientation") not in (None, "none"):
        # labels given, as the adapter gives them: MONAI's default is to change to the MetaTensor's own space
        steps.append(_step("Orientationd", axcodes=meta["orientation"], labels=[["L", "R"], ["P", "A"], ["I", "S"]]))
    if meta.get("spacing"):
        steps.append(_step("Spacingd", pixdim=list(meta["spacing"]), mode="bilinear"))
    if meta.get("intensity") == "window":
        lo, hi = meta["window"]
        steps.append(_step("ScaleIntensityRanged", a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    elif meta.get("intensity") == "percentiles":  # per channel, as the adapter computes them
        lo, hi = meta["percentiles"]
        steps.append(_step("ScaleIntensityRangePercentilesd", lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True,
                           channel_wise=True))  # fmt: skip
    if opts.get("foreground_crop"):  # MONAI's default select_fn keeps voxels above 0, as the adapter does
        steps.append(_step("CropForegroundd", source_key="image", margin=opts.get("margin", 0), allow_smaller=True))
    fit = opts.get("fit", "auto")
    if fit == "crop" or (fit == "auto" and n == 3):
        if opts.get("pad"):
            steps.append(_step("SpatialPadd", spatial_size=size))
        steps.append(_step("CenterSpatialCropd", roi_size=size))
    else:
        steps.append(_step("Resized", spatial_size=size, mode="area"))
    mean, std = meta.get("mean"), meta.get("std")
    if mean is not None and std is not None and (any(m != 0 for m in mean) or any(s != 1 for s in std)):
        steps.append(_step("NormalizeIntensityd", subtrahend=list(mean), divisor=list(std), channel_wise=True))
    return steps


def monai_transforms(source: str | Path | MaskedAutoencoder) -> Any:
    """``monai.transforms.Compose`` of the transforms that prepare a file (``{"image": path}``) as pre-training
    did, from a MONAI export folder, a model or anything ``load_model`` takes; see :func:`monai_transforms_spec`."""
    import monai.transforms

    folder = Path(source).expanduser() if not isinstance(source, MaskedAutoencoder) else None
    if folder is not None and (folder / ARGS_NAME).is_file():
        spec = json.loads((folder / ARGS_NAME).read_text())["transforms"]
    else:
        from mimsdk.hub.pretrained import load_model

        spec = monai_transforms_spec(source if folder is None else load_model(source))
    # LoadImaged registers every reader MONAI knows; the GPU DICOM one warns that it has no GPU decoder at each
    # construction, though it is never used here (the medical adapter quiets it the same way).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return monai.transforms.Compose([getattr(monai.transforms, name)(**kwargs) for name, kwargs in spec])


def call_text(name: str, kwargs: dict[str, Any]) -> str:
    """``Orientationd(keys='image', axcodes='RAS')``."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
