"""Target: what the decoder predicts for each token, and how it is scored.

Every target offers ``dim(patch_dim)`` (values predicted per token),
``__call__(patches, weights)`` (the target B×L×dim), ``loss(pred, target, mask, weights)``
over masked tokens, and ``pixels`` with ``to_pixels`` when predictions can be drawn.
``weights`` (B×L×P, 0 for nodata) reach only targets with ``per_value`` set; for the
others a token with no real value at all is dropped from the loss by the model.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


class PixelTarget:
    """Pixels of each patch, optionally normalised per patch (MAE's ``norm_pix``).

    Args:
        norm_pix: subtract each patch's mean and divide by its standard deviation.
        eps: added to the variance before the square root.

    Shapes: patches B×L×P -> target B×L×P; loss over masked tokens only.
    ``weights`` B×L×P (1 where a value is real data, 0 where it is nodata or padding)
    keep missing values out of the statistics and out of the loss.
    """

    pixels = True
    per_value = True

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6, l1: bool = False) -> None:
        self.norm_pix = norm_pix
        self.eps = eps
        self.l1 = l1
        self.name = ("norm_pix" if norm_pix else "pixels") + ("_l1" if l1 else "")

    def dim(self, patch_dim: int) -> int:
        return patch_dim

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


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    per_token = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # B×L
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


class FrequencyTarget:
    """Each patch's spectrum: the orthonormal FFT over the patch's axes, per channel (real and imaginary parts).

    After masked frequency modelling (Xie et al. 2023, "Masked Frequency Modeling for
    Self-Supervised Visual Pre-Training"), here per patch so it fits any token grid.
    Shapes: patches B×L×(p1..pn·C) -> B×L×(2·p1..pn·C).
    """

    pixels = False
    per_value = False
    name = "frequency"

    def __init__(self, patch_size: tuple[int, ...], channels: int) -> None:
        self.patch_size, self.channels = tuple(patch_size), channels

    def dim(self, patch_dim: int) -> int:
        return 2 * patch_dim

    def __call__(self, patches: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        b, num_tokens, _ = patches.shape
        cube = patches.float().reshape(b, num_tokens, *self.patch_size, self.channels)
        axes = tuple(range(2, 2 + len(self.patch_size)))
        spectrum = torch.fft.fftn(cube, dim=axes, norm="ortho")
        return torch.cat([spectrum.real, spectrum.imag], dim=-1).reshape(b, num_tokens, -1)

    def loss(self, pred, target, mask, weights=None) -> torch.Tensor:
        return _masked_mse(pred, target, mask)


class HOGTarget:
    """Histograms of oriented gradients per patch, after MaskFeat (Wei et al. 2022).

    Gradients are central differences over the whole image (zero on its border),
    orientations unsigned in [0, 180) cast into ``bins`` equal bins, magnitudes
    averaged per ``cell``×``cell`` cell (8 pixels, or the patch's side when that
    is not a multiple of 8) and each cell's histogram L2-normalised;
    per channel. This is scikit-image's ``hog(..., cells_per_block=(1, 1),
    block_norm="L2")`` with MaskFeat's defaults (9 bins, 8-pixel cells).

    Shapes: patches B×L×(p·p·C) of a 2D grid -> B×L×((p/cell)²·C·bins).
    """

    pixels = False
    per_value = False
    name = "hog"

    def __init__(self, tokenizer: Any, bins: int = 9, cell: int = 8, eps: float = 1e-5) -> None:
        if getattr(tokenizer, "ndim", None) != 2 or len(set(tokenizer.patch_size)) != 1:
            raise ValueError(
                f"the hog target needs square 2D patches; got patch size {getattr(tokenizer, 'patch_size', None)}"
            )
        # MaskFeat's 8-pixel cells where the patch holds whole cells; smaller patches are one cell each.
        cell = math.gcd(cell, tokenizer.patch_size[0])
        self.tokenizer, self.bins, self.cell, self.eps = tokenizer, bins, cell, eps
        self.cells = tuple(p // cell for p in tokenizer.patch_size)

    def dim(self, patch_dim: int) -> int:
        return math.prod(self.cells) * self.tokenizer.in_chans * self.bins

    def histograms(self, image: torch.Tensor) -> torch.Tensor:
        """B×C×H×W -> B×C×bins×(H/cell)×(W/cell), each cell's histogram L2-normalised."""
        image = image.float()
        g_row = torch.zeros_like(image)
        g_col = torch.zeros_like(image)
        g_row[..., 1:-1, :] = image[..., 2:, :] - image[..., :-2, :]
        g_col[..., :, 1:-1] = image[..., :, 2:] - image[..., :, :-2]
        magnitude = torch.hypot(g_row, g_col)
        orientation = torch.rad2deg(torch.atan2(g_row, g_col)) % 180.0
        index = (orientation / (180.0 / self.bins)).floor().long().clamp_(0, self.bins - 1)
        b, c, h, w = image.shape
        votes = torch.zeros(b, c, self.bins, h, w, device=image.device)
        votes.scatter_(2, index[:, :, None], magnitude[:, :, None])
        hist = F.avg_pool2d(votes.reshape(b, c * self.bins, h, w), self.cell).reshape(b, c, self.bins, -1)
        hist = hist / (hist.pow(2).sum(dim=2, keepdim=True) + self.eps**2).sqrt()
        return hist.reshape(b, c, self.bins, h // self.cell, w // self.cell)

    def __call__(self, patches: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        hist = self.histograms(self.tokenizer.unpatchify(patches))  # B×C×K×(H/c)×(W/c)
        b, c, k = hist.shape[:3]
        (gh, gw), (ch, cw) = self.tokenizer.grid_size, self.cells
        hist = hist.reshape(b, c, k, gh, ch, gw, cw).permute(0, 3, 5, 4, 6, 1, 2)  # B, gh, gw, ch, cw, C, K
        return hist.reshape(b, gh * gw, -1)

    def loss(self, pred, target, mask, weights=None) -> torch.Tensor:
        return _masked_mse(pred, target, mask)


class LatentTarget:
    """Features of an EMA teacher (data2vec); computed by the model's teacher, scored by MSE."""

    pixels = False
    per_value = False
    name = "ema_latent"

    def __init__(self, width: int) -> None:
        self.width = width

    def dim(self, patch_dim: int) -> int:
        return self.width

    def loss(self, pred, target, mask, weights=None) -> torch.Tensor:
        return _masked_mse(pred, target, mask)


class ChamferTarget:
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
        self.squared = squared
        self.name = "chamfer" if squared else "chamfer_l1"

    def dim(self, patch_dim: int) -> int:
        return patch_dim

    def __call__(self, patches: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
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


TARGETS: dict[str, Any] = {
    "norm_pix": lambda tokenizer, width: PixelTarget(True),
    "pixels": lambda tokenizer, width: PixelTarget(False),
    "pixels_l1": lambda tokenizer, width: PixelTarget(False, l1=True),
    "frequency": lambda tokenizer, width: FrequencyTarget(tokenizer.patch_size, tokenizer.in_chans),
    "hog": lambda tokenizer, width: HOGTarget(tokenizer),
    "ema_latent": lambda tokenizer, width: LatentTarget(width),
    "chamfer": lambda tokenizer, width: ChamferTarget(squared=True),
    "chamfer_l1": lambda tokenizer, width: ChamferTarget(squared=False),
}


def build_target(name: str, tokenizer: Any = None, width: int = 0) -> Any:
    """A target by its recipe name (``model.target``), for ``tokenizer``'s tokens and an encoder of ``width``."""
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}; expected one of {sorted(TARGETS)}")
    return TARGETS[name](tokenizer, width)
