"""Tiles of stored chips: random windows and flips in training, the centre or a grid of windows in evaluation,
normalised by the band statistics (the half of the preparation done as items are read, folders and shards alike)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from mimsdk.adapters.multispectral.scenes import Scene
from mimsdk.adapters.multispectral.stored import CENTER, Tiles, chip_of, source_name
from mimsdk.data import PreparedDataset
from mimsdk.errors import DataError

TRIES = 8  # random windows tried before a training tile that is all nodata (outside the swath) is an error


class FinishTile:
    """A stored chip (with its item's ``corner``) -> tensor C×H×W, or C×T×H×W for a series: float32,
    normalised per band, NaN at nodata.

    Training (``corner`` None): a random ``size`` window of the chip (up to :data:`TRIES` draws while the window
    is all nodata), flipped left-right and up-down at random (``flip``); torch's global generator, which
    :class:`~mimsdk.data.SeededDataset` seeds per (seed, epoch, index). Evaluation: the centre window, or the
    window at ``corner``.
    """

    def __init__(
        self,
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        flip: bool,
        series: bool,
    ) -> None:
        self.size, self.train, self.flip, self.series = size, train, flip, series
        self.mean = np.asarray(mean, dtype=np.float32)[None, :, None, None]
        self.std = np.asarray(std, dtype=np.float32)[None, :, None, None]

    def __call__(self, sample: dict[str, Any]) -> torch.Tensor:
        chip, corner = chip_of(sample), sample.get("corner", CENTER)
        source, (top, left) = source_name(sample), sample["window"][:2]
        (height, width), (h, w) = chip.shape[-2:], self.size
        if height < h or width < w:
            raise DataError(
                f"{source}: a chip of {height}×{width} pixels is smaller than the {h}×{w} tile (model.input_size); "
                "raise data.options.chip_size"
            )
        for _ in range(TRIES if corner is None else 1):
            if corner is None:
                row = int(torch.randint(0, height - h + 1, ()).item())
                col = int(torch.randint(0, width - w + 1, ()).item())
            else:
                row, col = ((height - h) // 2, (width - w) // 2) if corner == CENTER else corner
            x = chip.read(row, col, h, w)  # T×C×h×w
            if not np.isnan(x).all():
                break
        window = Window(int(left) + col, int(top) + row, w, h)  # on the scene's grid, for the message
        if np.isnan(x).all():
            tried = f" (tried {TRIES} random windows)" if corner is None else ""
            raise DataError(f"{source}: every pixel of the tile at {window} is nodata{tried}")
        x = torch.from_numpy((x - self.mean) / self.std)
        if self.train and self.flip:
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            if torch.rand(()) < 0.5:  # overhead imagery has no up: vertical flips are as natural as horizontal
                x = x.flip(-2)
        x = x.permute(1, 0, 2, 3) if self.series else x[0]  # C×T×H×W or C×H×W
        return x.contiguous()


class MultispectralDataset(PreparedDataset):
    """Items ``(tensor, label)`` of :class:`Tiles` over stored chips, finished by :class:`FinishTile`.

    A tile that fails when read (a block beyond a truncated file's end, a window all nodata) is named once per
    scene and replaced by the next good one (:class:`~mimsdk.data.SampleDataset`). ``scenes`` and ``files``:
    the scenes of a folder (empty for a shard set).
    """

    def __init__(self, tiles: Tiles, finish: FinishTile, scenes: list[Scene] | None = None) -> None:
        super().__init__(tiles, finish)
        self.scenes = list(scenes or [])
        self.files: list[Path] = [s.path for s in self.scenes]

    @property
    def mean(self) -> np.ndarray:
        """The per-band mean the tiles are normalised by (1×C×1×1)."""
        return self.finish.mean

    @property
    def std(self) -> np.ndarray:
        return self.finish.std
