"""The point-cloud adapter's ``data.options``, and what it needs of the model: the ``point_groups`` tokenizer's
groups and group size, and ``model.input_size`` as ``[N, 3]``."""

from __future__ import annotations

from dataclasses import dataclass, field

from mimsdk.config import ModelConfig, from_mapping
from mimsdk.errors import ConfigError
from mimsdk.variants.point_groups import PointGroupOptions

AXES = {"x": 0, "y": 1, "z": 2}


@dataclass
class PointCloudOptions:
    """``data.options`` of the point-cloud adapter."""

    up_axis: str = "y"  # ModelNet and ShapeNet stand on y
    augment: bool = True  # the training view's augmentation; evaluation never augments
    scale: list[float] = field(default_factory=lambda: [2 / 3, 3 / 2])  # per-axis factor range (Point-MAE)
    translate: float = 0.2  # per-axis shift range ±translate (Point-MAE)
    rotate: bool = False  # random rotation about the up axis
    mesh_samples: int = 8192  # points sampled on a mesh's surface before subsampling
    eval_sampling: str = "fps"  # evaluation view: "fps" or "first" (the first N points)
    mesh_seed: int = 0  # open3d's seed for mesh surface sampling


def check_pointcloud_options(opts: PointCloudOptions) -> PointCloudOptions:
    """Ranges :func:`~mimsdk.config.adapter_options` does not check; errors name ``data.options.<key>``."""
    if opts.up_axis not in AXES:
        raise ConfigError(f"data.options.up_axis: {opts.up_axis!r} is not allowed; expected one of x, y, z")
    if len(opts.scale) != 2 or not 0 < opts.scale[0] <= opts.scale[1]:
        raise ConfigError(f"data.options.scale: expected [low, high] with 0 < low <= high, got {opts.scale}")
    if opts.translate < 0:
        raise ConfigError(f"data.options.translate: must be >= 0, got {opts.translate}")
    if opts.mesh_samples < 1:
        raise ConfigError(f"data.options.mesh_samples: must be at least 1, got {opts.mesh_samples}")
    if opts.eval_sampling not in ("fps", "first"):
        raise ConfigError(f"data.options.eval_sampling: {opts.eval_sampling!r} is not allowed; expected fps or first")
    return opts


def group_needs(model: ModelConfig) -> tuple[int, int]:
    """(G, K) of the model's point-group tokenizer."""
    if model.tokenizer != "point_groups":
        raise ConfigError(f"model.tokenizer: point clouds need 'point_groups', got {model.tokenizer!r}")
    opts = from_mapping(PointGroupOptions, model.tokenizer_options, "model.tokenizer_options.")
    return opts.groups, opts.group_size


def input_points(model: ModelConfig) -> int:
    """N, the points per cloud (``model.input_size`` is ``[N, 3]``)."""
    if len(model.input_size) != 2 or model.input_size[1] != 3:
        raise ConfigError(f"model.input_size: point clouds are [N, 3] (points per cloud, xyz); got {model.input_size}")
    return model.input_size[0]
