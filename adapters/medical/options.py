"""The medical adapter's ``data.options`` and what follows from them alone."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from mimsdk.config import ModelConfig, choice
from mimsdk.errors import ConfigError, DataError


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
    # cache: memory holds at most this many bytes of prepared volumes (an integer or "8GB", "512MiB"); the items
    # beyond it are kept by the disk cache instead. None: a share of this machine's RAM (memory_limit below).
    memory_limit: int | str | None = None
    split: str = "train"  # npz: arrays <split>_images / <split>_labels
    npz_images: str | None = None  # npz: explicit array names instead of the split's
    npz_labels: str | None = None
    # Largest image a header may claim, and a volume may reach after resampling, in voxels (2D: pixels), all
    # channels: 2**29 holds a whole-body CT (512×512×2000) as read; a larger claim is refused before decoding.
    max_voxels: int = 1 << 29


# Keys that change what a prepared volume looks like: they are stored with the model, so the evaluation
# commands (embed, probe, reconstruct) prepare data as in pre-training without the recipe.
PREPARE_KEYS = (
    "kind", "intensity", "window", "percentiles", "spacing", "orientation", "channels", "foreground_crop", "margin",
    "fit", "pad",
)  # fmt: skip


def intensity(opts: MedicalOptions) -> str:
    """The intensity scaling ``opts`` asks for, ``auto`` resolved: a window for CT, percentiles otherwise."""
    if opts.intensity != "auto":
        return opts.intensity
    return "window" if opts.kind == "ct" else "percentiles"


def crops(opts: MedicalOptions, ndim: int) -> bool:
    """Whether volumes are cropped to ``model.input_size`` (else resized): ``auto`` crops 3D, resizes 2D."""
    return opts.fit == "crop" or (opts.fit == "auto" and ndim == 3)


def channel_names(opts: MedicalOptions, model: ModelConfig) -> list[str]:
    """One name per channel of ``model``: the sequences of ``data.options.channels``, or defaults."""
    names = opts.channels or (["image"] if model.in_chans == 1 else [f"channel{i}" for i in range(model.in_chans)])
    if len(names) != model.in_chans:
        raise DataError(
            f"data.options.channels names {len(names)} sequences {names}; model.in_chans is {model.in_chans}"
        )
    return names


# The default memory cache is a quarter of the machine's RAM, split between the processes torchrun starts on it
# (each builds its own cache). The cache is filled before DataLoader workers fork and shared with them, so it is
# counted once per process; the other three quarters stay for the model, the optimiser, pinned batches and the
# page cache, which serves the volumes spilled to the disk cache. A fixed 4 GB would idle a 512 GB node and
# overrun a 16 GB laptop with 8 ranks.
RAM_SHARE = 0.25
UNKNOWN_RAM = 16 * 2**30  # where the platform does not say (not POSIX): a small workstation's
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})
SIZE = re.compile(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]i?b|b)?\s*", re.IGNORECASE)


def memory_limit(opts: MedicalOptions) -> int:
    """``data.options.memory_limit`` in bytes, or the default share of RAM; ConfigError naming the key."""
    value = opts.memory_limit
    if value is None:
        try:
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            ram = UNKNOWN_RAM
        return int(ram * RAM_SHARE) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    if isinstance(value, int):
        number = value
    else:
        match = SIZE.fullmatch(value)
        if match is None:
            raise ConfigError(
                f"data.options.memory_limit: {value!r} is not a size; expected bytes or e.g. '8GB', '512MiB'"
            )
        number = int(float(match.group(1)) * UNITS[(match.group(2) or "").lower()])
    if number < 0:
        raise ConfigError(f"data.options.memory_limit: {value!r} is negative; expected 0 or more bytes")
    return number
