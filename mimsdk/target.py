"""Target: what the decoder predicts for each token, and how it is scored."""

from __future__ import annotations

import torch


class PixelTarget:
    """Pixels of each patch, optionally normalised per patch (MAE's ``norm_pix``).

    Args:
        norm_pix: subtract each patch's mean and divide by its standard deviation.
        eps: added to the variance before the square root.

    Shapes: patches B×L×P -> target B×L×P; loss over masked tokens only.
    ``weights`` B×L×P (1 where a value is real data, 0 where it is nodata or padding)
    keep missing values out of the statistics and out of the loss.
    """

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6) -> None:
        self.norm_pix = norm_pix
        self.eps = eps
        self.name = "norm_pix" if norm_pix else "pixels"

    def _stats(self, patches: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch mean and unbiased variance (as MAE) over the real values only: B×L×1 each."""
        if weights is None:
            return patches.mean(dim=-1, keepdim=True), patches.var(dim=-1, keepdim=True)
        count = weights.sum(dim=-1, keepdim=True)
        mean = (patches * weights).sum(dim=-1, keepdim=True) / count.clamp_min(1.0)
        var = (weights * (patches - mean) ** 2).sum(dim=-1, keepdim=True) / (count - 1.0).clamp_min(1.0)
        return mean, var

    def __call__(self, patches: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if not self.norm_pix:
            return patches
        mean, var = self._stats(patches, weights)
        return (patches - mean) / (var + self.eps) ** 0.5

    def loss(
        self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean squared error over the values of tokens where ``mask`` (B×L) is 1, real values only."""
        error = (pred.float() - target.float()) ** 2  # B×L×P
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


TARGETS = {"norm_pix": lambda: PixelTarget(True), "pixels": lambda: PixelTarget(False)}


def build_target(name: str) -> PixelTarget:
    """A target by its recipe name."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; expected one of {sorted(TARGETS)}")
    return TARGETS[name]()
