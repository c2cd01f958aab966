"""Point groups as tokens: a set of coordinates is a token source like a grid (Point-MAE).

A cloud of N points is cut into G local groups: G centres by farthest point
sampling (FPS), and around each its K nearest points, written relative to the
centre. A group is one token: its K·3 relative coordinates are the patch (and
the reconstruction target), a mini-PointNet embeds it, and its centre, which
differs per sample, is its position (``Tokens.where``), encoded by a small MLP.

FPS and kNN are batched pure PyTorch (no compiled extensions): FPS is G
sequential steps of O(B·N) work, kNN one B×G×N distance matrix and a top-k.

Reference: Pang et al., "Masked Autoencoders for Point Cloud Self-supervised
Learning" (Point-MAE), ECCV 2022.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mimsdk.errors import ConfigError
from mimsdk.registry import TOKENIZERS
from mimsdk.tokenizer import Tokens


def farthest_point_sample(xyz: torch.Tensor, count: int, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Indices of ``count`` points chosen greedily, each the farthest from those already chosen.

    Args:
        xyz: B×N×3 points.
        count: G points to choose, at most N.
        start: first index per sample (B, or one int for all); 0 by default, as PointNet++'s
            CUDA kernel, so the choice is a function of the point order alone.

    Returns: B×G indices, distinct within each sample (chosen points are never chosen again,
    even when duplicate coordinates leave every remaining distance at zero).
    """
    b, n, _ = xyz.shape
    if not 0 < count <= n:
        raise ValueError(f"cannot choose {count} points by FPS from clouds of {n}")
    batch = torch.arange(b, device=xyz.device)
    far = torch.as_tensor(start, dtype=torch.long, device=xyz.device).expand(b).clone()
    chosen = torch.empty(b, count, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, n), float("inf"), dtype=xyz.dtype, device=xyz.device)
    for i in range(count):
        chosen[:, i] = far
        centre = xyz[batch, far][:, None]  # B×1×3
        dist = torch.minimum(dist, ((xyz - centre) ** 2).sum(-1))
        dist[batch, far] = -1.0  # below every real distance: never chosen twice
        far = dist.argmax(dim=1)
    return chosen


def knn_group(xyz: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` points of ``xyz`` (B×N×3) nearest each centre (B×G×3): B×G×K, nearest first.

    Exact Euclidean distances (not the matmul expansion) so a centre that is one of
    the points comes first in its own group, at distance 0.
    """
    dist = torch.cdist(centres.float(), xyz.float(), compute_mode="donot_use_mm_for_euclid_dist")  # B×G×N
    return dist.topk(k, dim=2, largest=False, sorted=True).indices


def gather_points(xyz: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """xyz B×N×C, index B×... -> B×...×C."""
    b, c = xyz.shape[0], xyz.shape[-1]
    flat = index.reshape(b, -1)
    out = torch.gather(xyz, 1, flat[..., None].expand(-1, -1, c))
    return out.reshape(*index.shape, c)


class MiniPointNet(nn.Module):
    """Point-MAE's group encoder: shared MLP → max-pool → concat with each point → shared MLP → max-pool.

    Args:
        width: w, the first stage's output (Point-MAE: 256, hidden 128; second stage 512).
        dim: token width D.

    Shapes: B×G×K×3 -> B×G×D. Per-point layers with a max over points make it
    invariant to the order of points in a group.
    """

    def __init__(self, width: int, dim: int) -> None:
        super().__init__()
        self.first = nn.Sequential(
            nn.Linear(3, width // 2), nn.BatchNorm1d(width // 2), nn.ReLU(inplace=True), nn.Linear(width // 2, width)
        )
        self.second = nn.Sequential(
            nn.Linear(2 * width, 2 * width), nn.BatchNorm1d(2 * width), nn.ReLU(inplace=True), nn.Linear(2 * width, dim)
        )

    @staticmethod
    def _pointwise(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm1d wants (points, channels): flatten every point of the batch.
        return layers(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        feature = self._pointwise(self.first, groups)  # B×G×K×w
        pooled = feature.amax(dim=2, keepdim=True).expand_as(feature)
        feature = self._pointwise(self.second, torch.cat([pooled, feature], dim=-1))  # B×G×K×D
        return feature.amax(dim=2)


class CentrePosition(nn.Module):
    """Point-MAE's position encoding: an MLP 3→128→GELU→dim over each token's centre (B×G×3 -> B×G×dim)."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, where: torch.Tensor | None) -> torch.Tensor:
        if where is None:
            raise ValueError("point-group positions need the group centres (Tokens.where); got None")
        return self.mlp(where)


@dataclass
class PointGroupOptions:
    """``model.tokenizer_options`` of the ``point_groups`` tokenizer (Point-MAE: 64 groups of 32 points)."""

    groups: int = 64
    group_size: int = 32
    pointnet_width: int = 256


class PointGroupTokenizer(nn.Module):
    """Point clouds B×N×3 -> G group tokens (Point-MAE).

    Args:
        num_points: N the model is configured for (``model.input_size[0]``); any N ≥ max(G, K) is accepted.
        groups: G centres (FPS). group_size: K points per group (kNN, the centre included).
        embed_dim: token width D. pointnet_width: the mini-PointNet's first-stage width.

    Shapes: x B×N×3 -> patches B×G×(K·3) (coordinates relative to the centre, nearest
    first), where B×G×3 (the centres); ``untokenize`` -> B×(G·K)×3 absolute points.
    Groups overlap or miss points, as in Point-MAE: untokenize gives back the grouped
    points, not the input cloud.
    """

    def __init__(
        self, num_points: int, groups: int, group_size: int, embed_dim: int, pointnet_width: int = 256
    ) -> None:
        super().__init__()
        self.num_points, self.groups, self.group_size = num_points, groups, group_size
        self.num_tokens = groups
        self.patch_dim = group_size * 3
        self.grid_size = (groups,)
        self.embedding = MiniPointNet(pointnet_width, embed_dim)

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x B×N×3 -> (relative points B×G×K×3, centres B×G×3)."""
        if x.ndim != 3 or x.shape[2] != 3:
            raise ValueError(f"point clouds must be B×N×3; got a tensor of shape {tuple(x.shape)}")
        if x.shape[1] < max(self.groups, self.group_size):
            raise ValueError(
                f"clouds of {x.shape[1]} points are too small for {self.groups} groups of {self.group_size} points"
            )
        if torch.isnan(x).any():
            raise ValueError("point clouds hold NaN coordinates; a point group has no notion of missing data")
        centres = gather_points(x, farthest_point_sample(x, self.groups))  # B×G×3
        members = gather_points(x, knn_group(x, centres, self.group_size))  # B×G×K×3
        return members - centres[:, :, None], centres

    def tokenize(self, x: torch.Tensor) -> Tokens:
        """x B×N×3 -> patches B×G×(K·3), no weights, where = centres B×G×3."""
        relative, centres = self.group(x)
        return Tokens(relative.flatten(2), None, centres)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """B×G×(K·3) -> B×G×D."""
        return self.embedding(patches.unflatten(2, (self.group_size, 3)))

    def position(self, dim: int, kind: str) -> nn.Module:
        """An MLP over centres at width ``dim``; learned whatever ``kind`` says, since centres are on no grid."""
        return CentrePosition(dim)

    def untokenize(self, patches: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """patches B×G×(K·3), where B×G×3 -> absolute points B×(G·K)×3 (group after group)."""
        if where is None:
            raise ValueError("untokenize needs the group centres (where) to place the groups")
        points = patches.unflatten(2, (self.group_size, 3)) + where[:, :, None]
        return points.flatten(1, 2)


@TOKENIZERS.register("point_groups", PointGroupOptions)
def point_groups(config: Any, dim: int, **options: Any) -> PointGroupTokenizer:
    """Point-MAE's group tokens for clouds of ``model.input_size`` [N, 3], with ``model.tokenizer_options``."""
    opts = PointGroupOptions(**options)
    if len(config.input_size) != 2 or config.input_size[1] != 3:
        raise ConfigError(f"model.input_size: point clouds are [N, 3] (points, xyz); got {config.input_size}")
    n = config.input_size[0]
    for key in ("groups", "group_size", "pointnet_width"):
        if getattr(opts, key) < 1:
            raise ConfigError(f"model.tokenizer_options.{key}: must be at least 1, got {getattr(opts, key)}")
    if opts.groups > n or opts.group_size > n:
        raise ConfigError(
            f"model.tokenizer_options: {opts.groups} groups of {opts.group_size} points need clouds of at least "
            f"{max(opts.groups, opts.group_size)} points; model.input_size is {config.input_size}"
        )
    if opts.pointnet_width % 2:
        raise ConfigError(f"model.tokenizer_options.pointnet_width: must be even, got {opts.pointnet_width}")
    return PointGroupTokenizer(n, opts.groups, opts.group_size, dim, opts.pointnet_width)
