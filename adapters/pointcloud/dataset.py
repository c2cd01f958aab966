"""The dataset of clouds: normalised, cut or filled to N points, and Point-MAE's augmentation in training."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from mimsdk.adapters.pointcloud.options import AXES, PointCloudOptions
from mimsdk.adapters.pointcloud.reading import normalise, read_points
from mimsdk.data import SampleDataset
from mimsdk.variants.point_groups import farthest_point_sample


class PointCloudDataset(SampleDataset):
    """Point-cloud files -> (tensor N×3 float32, label); a file that fails when read is named once and replaced.

    Args:
        files, labels, classes: from :func:`scan_files`.
        num_points: N. opts: the adapter's options. train: random subset and augmentation, else deterministic.
    """

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        classes: list[str],
        num_points: int,
        opts: PointCloudOptions,
        train: bool,
    ) -> None:
        self.files, self.labels, self.classes = files, labels, classes
        self.num_points, self.opts, self.train = num_points, opts, train

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        """P×3 -> N×3: random subset (training), FPS or the first N (evaluation); repeats points when P < N."""
        n, count = self.num_points, points.shape[0]
        if count < n:  # fill up with the cloud's own points, drawn at random (or cyclically for evaluation)
            extra = torch.randint(count, (n - count,)) if self.train else torch.arange(n - count) % count
            points = torch.cat([points, points[extra]])
        elif self.train:
            points = points[torch.randperm(count)[:n]]
        elif self.opts.eval_sampling == "fps":
            points = points[farthest_point_sample(points[None], n)[0]]
        else:
            points = points[:n]
        return points

    def augment(self, points: torch.Tensor) -> torch.Tensor:
        """N×3 -> N×3: rotation about the up axis (if set), per-axis scale and shift (Point-MAE)."""
        if self.opts.rotate:
            angle = torch.rand(()).item() * 2 * math.pi
            c, s = math.cos(angle), math.sin(angle)
            up = AXES[self.opts.up_axis]
            a, b = [i for i in range(3) if i != up]
            rotation = torch.eye(3)
            rotation[a, a], rotation[a, b], rotation[b, a], rotation[b, b] = c, -s, s, c
            points = points @ rotation.T
        low, high = self.opts.scale
        scale = low + (high - low) * torch.rand(3)
        shift = self.opts.translate * (2 * torch.rand(3) - 1)
        return points * scale + shift

    def source(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        points = read_points(self.files[index], self.opts.mesh_samples, self.opts.mesh_seed)
        points = self.sample(torch.from_numpy(normalise(points)).float())
        if self.train and self.opts.augment:
            points = self.augment(points)
        return points.contiguous(), self.labels[index]
