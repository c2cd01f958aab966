"""Target: what the decoder predicts for each token, and how it is scored."""

from __future__ import annotations

import torch


class PixelTarget:
    """Pixels of each patch, optionally normalised per patch (MAE's ``norm_pix``).

    Args:
        norm_pix: subtract each patch's mean and divide by its standard deviation.
        eps: added to the variance before the square root.

    Shapes: patches B×L×P -> target B×L×P; loss over masked tokens only.
    """

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6) -> None:
        self.norm_pix = norm_pix
        self.eps = eps
        self.name = "norm_pix" if norm_pix else "pixels"

    def __call__(self, patches: torch.Tensor) -> torch.Tensor:
        if not self.norm_pix:
            return patches
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)  # unbiased, as MAE
        return (patches - mean) / (var + self.eps) ** 0.5

    def loss(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per token, averaged over tokens where ``mask`` is 1."""
        per_token = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # B×L
        return (per_token * mask).sum() / mask.sum().clamp_min(1.0)

    def to_pixels(self, pred: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Undo the per-patch normalisation with the true patches' statistics (for pictures)."""
        if not self.norm_pix:
            return pred
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        return pred * (var + self.eps) ** 0.5 + mean


TARGETS = {"norm_pix": lambda: PixelTarget(True), "pixels": lambda: PixelTarget(False)}


def build_target(name: str) -> PixelTarget:
    """A target by its recipe name."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; expected one of {sorted(TARGETS)}")
    return TARGETS[name]()
