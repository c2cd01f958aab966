"""Tiles of scenes: random windows and flips in training, the centre or a grid of windows in evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from rasterio.windows import Window

from mimsdk.adapters.multispectral.options import MultispectralOptions
from mimsdk.adapters.multispectral.scenes import Scene, read_window
from mimsdk.data import SampleDataset
from mimsdk.errors import DataError


class MultispectralDataset(SampleDataset):
    """Scenes -> ``(tensor C×H×W or C×T×H×W float32, normalised, NaN at nodata, label)``.

    A tile that fails when read (a block beyond a truncated file's end, a window all nodata) is named once per
    scene and replaced by the next good one (:class:`~mimsdk.data.SampleDataset`).

    Training: item ``i`` is a random window of scene ``i // tiles_per_scene`` plus random flips.
    Evaluation: the centre window of each scene, or (``grid``) every whole window in row-major order.
    """

    def __init__(
        self,
        scenes: list[Scene],
        classes: list[str],
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        opts: MultispectralOptions,
        train: bool,
        flip: bool,
        series: bool,
    ) -> None:
        self.scenes, self.classes, self.size = scenes, classes, size
        self.mean = np.asarray(mean, dtype=np.float32)[None, :, None, None]
        self.std = np.asarray(std, dtype=np.float32)[None, :, None, None]
        self.opts, self.train, self.flip, self.series = opts, train, flip, series
        self.files = [s.path for s in scenes]
        h, w = size
        for s in scenes:
            if s.height < h or s.width < w:
                raise DataError(
                    f"{s.path} is {s.height}×{s.width} pixels, smaller than the {h}×{w} tile (model.input_size)"
                )
        if train:
            self.index = [(i, None) for i in range(len(scenes)) for _ in range(opts.tiles_per_scene)]
        elif opts.eval_tiles == "center":
            self.index = [(i, ((s.height - h) // 2, (s.width - w) // 2)) for i, s in enumerate(scenes)]
        else:
            self.index = [
                (i, (r * h, c * w))
                for i, s in enumerate(scenes)
                for r in range(s.height // h)
                for c in range(s.width // w)
            ]

    def __len__(self) -> int:
        return len(self.index)

    def _window(self, scene: Scene, corner: tuple[int, int] | None) -> Window:
        h, w = self.size
        if corner is None:
            corner = (
                int(torch.randint(0, scene.height - h + 1, ()).item()),
                int(torch.randint(0, scene.width - w + 1, ()).item()),
            )
        return Window(corner[1], corner[0], w, h)

    def source(self, index: int) -> str:
        return str(self.scenes[self.index[index][0]].path)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        i, corner = self.index[index]
        scene = self.scenes[i]
        # A random window may fall wholly outside the swath (nodata): try a few others before giving up.
        for _ in range(8 if corner is None else 1):
            window = self._window(scene, corner)
            x = read_window(scene, window, self.opts.nodata)  # T×C×h×w
            if not np.isnan(x).all():
                break
        else:
            raise DataError(f"{scene.path}: every pixel of the tile at {window} is nodata (tried 8 random windows)")
        if np.isnan(x).all():
            raise DataError(f"{scene.path}: every pixel of the tile at {window} is nodata")
        x = torch.from_numpy((x - self.mean) / self.std)
        if self.train and self.flip:
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            if torch.rand(()) < 0.5:  # overhead imagery has no up: vertical flips are as natural as horizontal
                x = x.flip(-2)
        x = x.permute(1, 0, 2, 3) if self.series else x[0]  # C×T×H×W or C×H×W
        return x.contiguous(), scene.label
