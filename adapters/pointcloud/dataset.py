"""Clouds in two halves: the stored one (read and normalised, every point kept) and ``finish`` (cut or filled to
N points, Point-MAE's augmentation in training), so a folder and the shards made from it train alike."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimsdk.adapters.pointcloud.options import AXES, PointCloudOptions
from mimsdk.adapters.pointcloud.reading import normalise, read_points
from mimsdk.data import PreparedDataset
from mimsdk.errors import DataError
from mimsdk.variants.point_groups import farthest_point_sample

# Coordinates on the unit sphere, stored in float32: what training has always used, so a folder trains as it did
# before shards existed; float16 would halve a shard but move points by up to 2^-11 (5e-4).
STORED_DTYPE = np.float32


class CloudFiles:
    """Point-cloud files -> stored samples ``{"points": float32 P×3, "label": int, "source": bytes}``.

    The stored half is deterministic: the file read (a mesh sampled under its fixed seed) and centred and
    scaled onto the unit sphere, with all of its P points. The cut to N is random per epoch in training, so
    it belongs to :class:`FinishCloud`; storing every point keeps that draw the same for a folder and its shards.
    ``source`` is the file's path under the folder, as bytes (the name survives whatever its encoding, and
    litdata would read a string naming an existing file as that file's contents).

    Args:
        files, labels, classes: from :func:`~mimsdk.adapters.pointcloud.scan.scan_files`; root: the folder.
        opts: the adapter's options. need: the tokenizer's (G, K). verify: when writing shards, refuse a cloud
            with fewer points than max(G, K) here, so a shard never stores one training cannot use.
    """

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        classes: list[str],
        root: Path,
        opts: PointCloudOptions,
        need: tuple[int, int],
        verify: bool = False,
    ) -> None:
        self.files, self.labels, self.classes, self.root = files, labels, classes, root
        self.opts, self.need, self.verify = opts, need, verify

    def __len__(self) -> int:
        return len(self.files)

    def source(self, index: int) -> str:
        return str(self.files[index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        points = normalise(read_points(path, self.opts.mesh_samples, self.opts.mesh_seed)).astype(STORED_DTYPE)
        if self.verify:
            check_count(len(points), self.need)
        name = path.relative_to(self.root) if path != self.root and path.is_relative_to(self.root) else path.name
        return {"points": points, "label": self.labels[index], "source": os.fsencode(name)}


def check_count(count: int, need: tuple[int, int]) -> None:
    """A cloud needs at least as many points as the tokenizer's groups and group size."""
    groups, group_size = need
    if count < max(groups, group_size):
        raise DataError(f"{count} points, fewer than the tokenizer's {groups} groups of {group_size} points need")


class FinishCloud:
    """A stored cloud (P×3) -> tensor N×3 float32: a random subset and Point-MAE's augmentation in training,
    farthest point sampling (or the first N) for evaluation; P < N is filled with the cloud's own points.

    Randomness comes from torch's global generator, which :class:`~mimsdk.data.SeededDataset` seeds per
    (seed, epoch, index): the same draws whether the stored cloud came from a file or a shard.
    """

    def __init__(self, num_points: int, need: tuple[int, int], opts: PointCloudOptions, train: bool) -> None:
        self.num_points, self.need, self.opts, self.train = num_points, need, opts, train

    def __call__(self, sample: dict[str, Any]) -> torch.Tensor:
        points = torch.from_numpy(np.asarray(sample["points"], dtype=STORED_DTYPE))
        if points.ndim != 2 or points.shape[1] != 3:
            raise DataError(f"a stored cloud of shape {tuple(points.shape)}; expected P×3")
        check_count(points.shape[0], self.need)  # a header-only scan or another model's shards let it through
        points = self.sample(points)
        if self.train and self.opts.augment:
            points = self.augment(points)
        return points.contiguous()

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


class PointCloudDataset(PreparedDataset):
    """A folder's clouds -> (tensor N×3 float32, label): :class:`CloudFiles` then :class:`FinishCloud`; a file
    that fails when read is named once and replaced. ``files`` and ``labels`` are the folder's."""

    prepared: CloudFiles
    finish: FinishCloud

    @property
    def files(self) -> list[Path]:
        return self.prepared.files

    @property
    def opts(self) -> PointCloudOptions:
        """The options the clouds are finished with (the recipe's over those stored with the model)."""
        return self.finish.opts
