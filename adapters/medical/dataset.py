"""The finishing half of the medical preparation: a random crop (or scaled crop resized) and flips per item,
then normalisation, applied to stored samples from a folder or a shard set."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from monai.data import get_track_meta, set_track_meta

from mimsdk.adapters.medical.options import MedicalOptions, crops
from mimsdk.adapters.medical.stored import StoredVolumes, unpack
from mimsdk.data import PreparedDataset
from mimsdk.errors import DataError


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


def augment(
    opts: MedicalOptions, size: Sequence[int], train: bool, crop_scale: tuple[float, float], hflip: bool
) -> Any:
    """The random chain (``train``) or the deterministic evaluation view, as a MONAI ``Compose``.

    Args:
        size: ``model.input_size``, 2 (H, W) or 3 (X, Y, Z) sizes. crop_scale: ``data.crop_scale`` (resize fits).
        hflip: ``data.hflip``: left-right flips, the R axis of a RAS volume or the columns of an X-ray.
    """
    from monai.transforms import (
        CenterSpatialCropd,
        Compose,
        RandFlipd,
        RandScaleCropd,
        RandSpatialCropd,
        Resized,
        SpatialPadd,
    )

    size = list(size)
    n = len(size)
    crop = crops(opts, n)
    steps: list[Any] = [SpatialPadd("image", size)] if crop and opts.pad else []
    if crop:
        steps.append(RandSpatialCropd("image", size, random_size=False) if train else CenterSpatialCropd("image", size))
    else:
        if train:
            # RandomResizedCrop's area scale drawn per axis as its n-th root (MONAI's scaled crop).
            lo, hi = (s ** (1 / n) for s in crop_scale)
            steps.append(RandScaleCropd("image", roi_scale=lo, max_roi_scale=hi, random_size=True))
        steps.append(Resized("image", size, mode="area"))
    if train and hflip:
        steps.append(RandFlipd("image", prob=0.5, spatial_axis=0 if n == 3 else 1))
    return Compose(steps)


class FinishVolume:
    """The finishing half: a stored sample -> C×S1..Sn float32 (``input_size``), for folders and shards alike.

    Unpacked to float32, then ``augment`` (a MONAI ``Compose`` of random crops and flips, or the deterministic
    evaluation view), re-seeded for every item from torch's global generator, which the trainer seeds per
    (seed, epoch, index), then normalised by ``mean`` and ``std`` (one per channel).
    """

    def __init__(self, augment: Any, input_size: Sequence[int], mean: list[float], std: list[float]) -> None:
        self.augment, self.input_size = augment, tuple(input_size)
        n = len(self.input_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, *[1] * n)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, *[1] * n)

    def __call__(self, sample: dict[str, Any]) -> torch.Tensor:
        x = unpack(sample["image"])  # a new tensor: the cached or stored volume is never modified
        # MONAI draws from numpy RandomStates: seed them from torch so the item is a function of torch's seed.
        self.augment.set_random_state(seed=int(torch.randint(0, 2**31 - 1, ()).item()))
        with _plain_tensors():
            out = self.augment({"image": x})["image"]
        x = torch.as_tensor(out.as_tensor() if hasattr(out, "as_tensor") else out, dtype=torch.float32)
        if tuple(x.shape[1:]) != self.input_size:  # SampleDataset names the file
            raise DataError(f"prepared to {tuple(x.shape)}, not C×{self.input_size} (model.input_size)")
        return ((x - self.mean) / self.std).contiguous()


class MedicalDataset(PreparedDataset):
    """A medical folder's items ``(tensor C×S1..Sn float32, label)``, label -1 if none: the stored samples
    (:class:`~.stored.StoredVolumes`, prepared once and cached by MONAI) through :class:`FinishVolume`, as a
    shard set's are. An item whose preparation fails when read (no cache, a file changed since the check, or a
    big folder checked by headers only) is named once and replaced (:class:`~mimsdk.data.SampleDataset`).
    """

    prepared: StoredVolumes

    @property
    def files(self) -> list[str]:
        """The usable items' sources (a file, a DICOM series, a subject folder, an npz image), in order."""
        return self.prepared.files
