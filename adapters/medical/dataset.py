"""Items of prepared volumes: a random crop (or scaled crop resized) and flips per item, then normalisation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from monai.data import get_track_meta, set_track_meta

from mimsdk.adapters.medical.options import MedicalOptions, crops
from mimsdk.data import SampleDataset
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


class MedicalDataset(SampleDataset):
    """Prepared volumes (cached by MONAI) -> ``(tensor C×S1..Sn float32, label)``, label -1 if none.

    An item whose preparation fails when read (no cache, or a file changed since the scan) is named once and
    replaced by the next good one (:class:`~mimsdk.data.SampleDataset`).

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

    def source(self, index: int) -> str:
        return self.files[index]

    def load(self, index: int) -> tuple[torch.Tensor, int]:
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
