"""Target: what the decoder predicts for each token, and how it is scored.

A target is called on a batch's patches, ``target(patches B×L×P, weights, where) -> B×L×P'``,
and offers ``dim(patch_dim)`` (P', values predicted per token), ``loss(pred, target, mask,
weights)`` over masked tokens, and ``pixels`` with ``to_pixels`` when predictions can be drawn.
``weights`` (B×L×P, 0 for nodata) reach the loss only of targets with ``per_value`` set; for
the others a token with no real value at all is left out of the loss (``scored``).

The core holds MAE's pixel targets; HOG, frequency, Chamfer and EMA-latent targets live in
``mimsdk.variants`` and register themselves in the same registry.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mimsdk.config import build_part
from mimsdk.registry import TARGETS


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per token B×L, averaged over the tokens where ``mask`` is 1."""
    per_token = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # B×L
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


class Target(nn.Module):
    """What every target shares: the hooks a model calls, which do nothing unless a target needs them."""

    name = "target"
    pixels = False  # predictions are pixels (or points) that ``to_pixels`` can draw
    per_value = False  # the loss weighs single values, so nodata values can be skipped inside a token

    def dim(self, patch_dim: int) -> int:
        return patch_dim

    def scored(self, mask: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The tokens the loss counts (B×L) and the value weights it gets. A target that is not per value
        (HOG, latents) cannot skip single values, so it skips tokens that hold none."""
        if weights is None or self.per_value:
            return mask, weights
        return mask * (weights.sum(-1) > 0), None

    def loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        return masked_mse(pred, target, mask)

    def bind(self, model: nn.Module) -> None:
        """Called once the model is built and initialised (a teacher copies the student here)."""

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimiser step (a teacher follows the student here)."""


class PixelTarget(Target):
    """Pixels of each patch, optionally normalised per patch (MAE's ``norm_pix``).

    Args:
        norm_pix: subtract each patch's mean and divide by its standard deviation.
        eps: added to the variance before the square root.
        l1: score by mean absolute error (SimMIM) instead of squared error.

    Shapes: patches B×L×P -> target B×L×P; loss over masked tokens only.
    ``weights`` B×L×P (1 where a value is real data, 0 where it is nodata or padding)
    keep missing values out of the statistics and out of the loss.
    """

    pixels = True
    per_value = True

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6, l1: bool = False) -> None:
        super().__init__()
        self.norm_pix = norm_pix
        self.eps = eps
        self.l1 = l1
        self.name = ("norm_pix" if norm_pix else "pixels") + ("_l1" if l1 else "")

    def _stats(self, patches: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch mean and unbiased variance (as MAE) over the real values only: B×L×1 each."""
        if weights is None:
            return patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
        count = weights.sum(dim=-1, keepdim=True)
        mean = (patches * weights).sum(dim=-1, keepdim=True) / count.clamp_min(1.0)
        var = (weights * (patches - mean) ** 2).sum(dim=-1, keepdim=True) / (count - 1.0).clamp_min(1.0)
        return mean, var

    def forward(
        self, patches: torch.Tensor, weights: torch.Tensor | None = None, where: torch.Tensor | None = None
    ) -> torch.Tensor:
        if not self.norm_pix:
            return patches
        mean, var = self._stats(patches, weights)
        return (patches - mean) / (var + self.eps) ** 0.5

    def loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean squared (or, for SimMIM's ``l1``, absolute) error over the values of masked tokens, real values only."""
        diff = pred.float() - target.float()
        error = diff.abs() if self.l1 else diff**2  # B×L×P
        if weights is None:
            return (error.mean(dim=-1) * mask).sum() / mask.sum().clamp_min(1.0)
        weights = weights * mask[..., None]
        return (error * weights).sum() / weights.sum().clamp_min(1.0)

    def to_pixels(self, pred: torch.Tensor, patches: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Undo the per-patch normalisation with the true patches' statistics (for pictures)."""
        if not self.norm_pix:
            return pred
        mean, var = self._stats(patches, weights)
        return pred * (var + self.eps) ** 0.5 + mean


@TARGETS.register("norm_pix")
def norm_pix(tokenizer: Any = None, width: int = 0) -> PixelTarget:
    """MAE's default: pixels normalised per patch, squared error."""
    return PixelTarget(norm_pix=True)


@TARGETS.register("pixels")
def pixels(tokenizer: Any = None, width: int = 0) -> PixelTarget:
    return PixelTarget(norm_pix=False)


@TARGETS.register("pixels_l1")
def pixels_l1(tokenizer: Any = None, width: int = 0) -> PixelTarget:
    """SimMIM's target: raw pixels, absolute error."""
    return PixelTarget(norm_pix=False, l1=True)


def build_target(name: str, tokenizer: Any = None, width: int = 0, options: dict[str, Any] | None = None) -> Target:
    """A target by its recipe name (``model.target``) and options, for ``tokenizer``'s tokens and an encoder
    of ``width``."""
    return build_part(TARGETS, name, options, tokenizer, width)
