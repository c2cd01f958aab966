"""Chamfer distance between point sets as the loss (Point-MAE, Pang et al. 2022)."""

from __future__ import annotations

from typing import Any

import torch

from mimsdk.registry import TARGETS
from mimsdk.target import Target


class ChamferTarget(Target):
    """Each token's points, scored by Chamfer distance between predicted and true point sets (Point-MAE).

    A token's values are K points (K·3, e.g. a point group relative to its centre); the
    loss compares the K predicted with the K true points as sets, so it ignores their order.
    ``squared`` (L2, Point-MAE's default ``cdl2``): mean squared distance to the nearest
    point, both ways, summed. Otherwise (L1, Point-MAE's ``cdl1``): the mean of the two
    mean Euclidean distances. Batched over the masked tokens with ``torch.cdist``.

    Shapes: pred, target B×L×(K·3); mask B×L -> scalar over tokens where mask is 1.
    """

    pixels = True
    per_value = False

    def __init__(self, squared: bool = True) -> None:
        super().__init__()
        self.squared = squared
        self.name = "chamfer" if squared else "chamfer_l1"

    def dim(self, patch_dim: int) -> int:
        return patch_dim

    def forward(
        self, patches: torch.Tensor, weights: torch.Tensor | None = None, where: torch.Tensor | None = None
    ) -> torch.Tensor:
        return patches

    def loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        chosen = mask.bool()
        if not chosen.any():
            return pred.sum() * 0.0
        a = pred[chosen].float().unflatten(1, (-1, 3))  # M×K×3
        b = target[chosen].float().unflatten(1, (-1, 3))
        # Exact differences, not the matmul expansion, which loses precision near zero.
        dist = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")  # M×K×K
        to_target, to_pred = dist.min(dim=2).values, dist.min(dim=1).values
        if self.squared:
            return (to_target**2).mean() + (to_pred**2).mean()
        return (to_target.mean() + to_pred.mean()) / 2

    def to_pixels(self, pred: torch.Tensor, patches: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        return pred


@TARGETS.register("chamfer")
def chamfer(tokenizer: Any = None, width: int = 0) -> ChamferTarget:
    """Point-MAE's default ``cdl2``."""
    return ChamferTarget(squared=True)


@TARGETS.register("chamfer_l1")
def chamfer_l1(tokenizer: Any = None, width: int = 0) -> ChamferTarget:
    return ChamferTarget(squared=False)
