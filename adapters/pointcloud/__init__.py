"""Point clouds: open3d reading, unit-sphere normalisation, subsampling, Point-MAE's augmentation, pictures.

Files, read through open3d:

- ``.ply``, ``.pcd``, ``.xyz``, ``.xyzn``, ``.xyzrgb``, ``.pts``: point clouds (``o3d.io.read_point_cloud``);
- ``.npy``: a P×3 (or wider, xyz first) array, as Point-MAE's ShapeNet-55 release ships its clouds;
- ``.txt``: ModelNet's ``x,y,z,nx,ny,nz`` rows. open3d's ``xyz`` reader wants spaces and reads
  comma-separated rows as zero points, so these are parsed with numpy (commas or spaces, the
  first three columns) and kept as an ``o3d.geometry.PointCloud`` like the others;
- ``.off``, ``.obj``, ``.stl``: meshes (``o3d.io.read_triangle_mesh``), sampled uniformly on their
  surface to ``mesh_samples`` points under a fixed open3d seed, so a mesh always gives the same cloud.

Every cloud is centred at its centroid and scaled so its farthest point lies on the unit
sphere, then cut to N points (``model.input_size`` is ``[N, 3]``): a random subset for
training (torch's generator, which :class:`mimsdk.data.SeededDataset` seeds per item, so
resume is exact), farthest point sampling for evaluation. A cloud with fewer than N points
(but at least the tokenizer's G and K) is filled up by repeating random points of its own.
Training then scales each axis by U(2/3, 3/2) and shifts it by U(-0.2, 0.2) (Point-MAE's
pre-training augmentation) and, if ``rotate`` is set, turns it about the up axis (``data.options.up_axis``,
stored with the model and read back for its pictures and further training).

Items are ``(tensor N×3 float32, label)``; labels come from ``data.labels`` (CSV ``path,label``,
paths relative to the CSV) or from class sub-folders. Before training every file of a folder is read once
(only its header in a folder of more than ``mimsdk.scan.FULL_CHECK_LIMIT`` files; verdicts cached by path, size
and mtime): an empty file, a PLY file shorter than its header declares (truncated), NaN or infinite coordinates,
fewer points than the tokenizer's groups or group size, an error open3d reports while reading (its RPly
messages are caught and put into the message naming the file), or an unknown extension is one DataError naming
the file (``data.strict``) or one warning per file, which is then skipped. A file that fails only when training
reads it is named once and replaced (:class:`~mimsdk.data.SampleDataset`).

Shard sets (``mimsdk shard``): the stored half of a sample is the cloud read and normalised, every point kept,
float32 (:class:`~mimsdk.adapters.pointcloud.dataset.CloudFiles`); the cut to N points and the augmentation
are drawn afresh each epoch in ``finish`` (:class:`~mimsdk.adapters.pointcloud.dataset.FinishCloud`). A folder
goes through the same two halves, so it trains exactly as the shards made from it. A shard set records the mesh
sampling and the normalisation it was made with; another recipe's is refused, naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image

from mimsdk.adapter import Adapter
from mimsdk.adapters.pointcloud.dataset import CloudFiles, FinishCloud, PointCloudDataset
from mimsdk.adapters.pointcloud.options import (
    AXES,
    PointCloudOptions,
    check_pointcloud_options,
    group_needs,
    input_points,
)
from mimsdk.adapters.pointcloud.pictures import _views, picture, write_ply, write_reconstruction
from mimsdk.adapters.pointcloud.ply import check_ply
from mimsdk.adapters.pointcloud.reading import SUFFIXES, native_stderr, normalise, read_points
from mimsdk.adapters.pointcloud.scan import POLICY, scan_files
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.registry import ADAPTERS

__all__ = [
    "AXES", "SUFFIXES", "CloudFiles", "FinishCloud", "PointCloudAdapter", "PointCloudDataset", "PointCloudOptions",
    "_views", "check_ply", "check_pointcloud_options", "native_stderr", "normalise", "picture", "read_points",
    "scan_files", "write_ply", "write_reconstruction",
]  # fmt: skip


@ADAPTERS.register("pointcloud")
class PointCloudAdapter(Adapter):
    """Point clouds N×3 (``model.input_size`` is ``[N, 3]``) for the ``point_groups`` tokenizer."""

    name = "pointcloud"
    Options = PointCloudOptions
    stored = ("up_axis",)  # pictures and rotations turn about the axis the training data stood on
    policy = POLICY

    def check_options(self, opts: PointCloudOptions, model: ModelConfig | None) -> PointCloudOptions:
        return check_pointcloud_options(opts)

    def scan(
        self, path: str | Path, data: DataConfig, model: ModelConfig, opts: PointCloudOptions
    ) -> tuple[list[Path], list[int], list[str]]:
        extra = (repr(opts), group_needs(model))
        return self.remember(path, data, extra, lambda: scan_files(path, data, model, opts))

    def build(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: PointCloudOptions, train: bool
    ) -> PointCloudDataset:
        finish = self.finish(data, model, opts, train)  # the model's shape checked before any file is read
        return PointCloudDataset(self.prepared(path, data, model, opts), finish)

    def prepared(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: PointCloudOptions, verify: bool = False
    ) -> CloudFiles:
        files, labels, classes = self.scan(path, data, model, opts)
        return CloudFiles(files, labels, classes, Path(path), opts, group_needs(model), verify)

    def finish(self, data: DataConfig, model: ModelConfig, opts: PointCloudOptions, train: bool) -> FinishCloud:
        need = group_needs(model)  # the tokenizer first: an image model is named by it, not by its input size
        return FinishCloud(input_points(model), need, opts, train)

    def preparation(self, data: DataConfig, model: ModelConfig, opts: PointCloudOptions) -> dict[str, Any]:
        # What the stored clouds depend on. N, the augmentation and up_axis act in finish: shards serve any of them.
        return {"normalisation": "unit_sphere", "mesh_samples": opts.mesh_samples, "mesh_seed": opts.mesh_seed}

    def describe(self, data: DataConfig, model: ModelConfig, opts: PointCloudOptions) -> dict[str, Any]:
        # "up_axis" stays at the top level for readers of older metadata.
        return {"points": input_points(model), "up_axis": opts.up_axis, "normalisation": "unit_sphere"}

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        return picture(recon, model, up_axis=self.trained_options(model).up_axis)
