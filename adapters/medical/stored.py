"""The stored half of the medical preparation: what *prepare* makes of an item, kept compactly, read by index.

The same stored samples come from a folder (through MONAI's caches) and from a shard set written from it
(``mimsdk shard``), so both are finished by one function and train alike. A stored sample is::

    {"image": C×S1..Sn array (uint16 or float32, see pack), "label": int (-1 unlabelled),
     "spacing": the voxel (pixel) size in mm, one per axis, float32}

The channel names and the preparation settings are the recipe's, kept with a shard set in its manifest. The
source file's name is not in the sample: litdata stores a string naming an existing NIfTI file as the file's
bytes (its NIfTI serializer), which would copy every source volume into the shards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mimsdk.errors import DataError

# Window and percentile scaling end clipped to [0, 1]: such a volume is stored as uint16 steps of 1/65535, a
# uniform error of at most 7.6e-6 in every voxel. float16, also 2 bytes, would be finer near 0 but 64× coarser
# near 1 (steps of 2^-11, errors up to 2.4e-4 in the brightest tissue), and uint8 (2e-3) would band soft tissue
# in a narrow CT window. With intensity: none the reader's units stay (Hounsfield units, raw MRI values of any
# range): float32, as float16 would overflow above 65504 and lose whole units above 2048.
UNIT_STEPS = 65535
SCALED = ("window", "percentiles")


def pack(image: torch.Tensor, scaling: str) -> torch.Tensor:
    """A prepared C×S1..Sn float32 volume -> its stored form: uint16 for a [0, 1] ``scaling``, else float32."""
    if scaling in SCALED:
        return torch.round(image.clamp(0.0, 1.0) * UNIT_STEPS).to(torch.uint16)
    return image.to(torch.float32).contiguous()


def unpack(image: Any) -> torch.Tensor:
    """A stored C×S1..Sn array or tensor (uint16 or float) -> float32 in the preparation's units, a new tensor."""
    x = torch.as_tensor(image)
    if x.dtype == torch.uint16:
        return x.to(torch.float32) / UNIT_STEPS
    return x.to(torch.float32, copy=True)


class StoredVolumes:
    """The usable items of a medical data path through *prepare*, by index: ``stored[i]`` is a stored sample.

    Args:
        records: MONAI's dataset of *prepare* records over every item (cached in memory, on disk, or not).
        indices: the items that passed the checks before training, in order.
        items: every item (``src`` and ``label`` are read from them). classes: class names.

    A record that is an error (a file that changed since the check, or one only its header was checked of)
    raises DataError naming the file, which :class:`~mimsdk.data.SampleDataset` reports and replaces.
    """

    def __init__(self, records: Any, indices: list[int], items: list[dict[str, Any]], classes: list[str]) -> None:
        self.records, self.indices, self.classes = records, indices, classes
        self.files = [items[i]["src"] for i in indices]
        self.labels = [int(items[i].get("label", -1)) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def source(self, index: int) -> str:
        return self.files[index]

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[self.indices[index]]
        if "error" in record:
            raise DataError(record["error"])
        # The disk cache gives back tensors (MONAI saves with torch), the memory cache what prepare made.
        image = record["image"]
        image = image.numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        spacing = np.asarray(record["spacing"], dtype=np.float32)
        return {"image": image, "label": self.labels[index], "spacing": spacing}
