"""VideoMAE's pixel target: each tubelet's pixels normalised per channel (Tong et al. 2022)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mimsdk.registry import TARGETS
from mimsdk.target import PixelTarget


class PerChannelPixelTarget(PixelTarget):
    """Each patch's pixels normalised per channel, as VideoMAE's ``norm_pix_loss``; squared error.

    MAE's ``norm_pix`` takes one mean and variance per patch, over all its values; VideoMAE takes one per
    patch and channel (over t·p·q values), and adds ``eps`` to the standard deviation, not to the variance:
    ``(x - mean) / (std + eps)``, with the unbiased std. VideoMAE first un-normalises its input with
    ImageNet's mean and std (3 channels) and normalises after; per-channel normalisation cancels any
    per-channel affine map, so the two agree up to ``eps``, which VideoMAE in effect divides by
    ImageNet's std (about 4.4e-6 in the units of normalised input, against 1e-6 here: the target
    changes by 3.4e-6 / std, relative).

    Args:
        channels: C, the last (fastest) axis of a patch vector, as :class:`~mimsdk.tokenizer.PatchTokenizer`
            flattens patches (p1, ..., pn, C).
        eps: added to each channel's standard deviation; one value, or one per channel (VideoMAE's own, in
            the units of ImageNet-normalised input, is 1e-6 divided by ImageNet's std of each channel).

    Shapes: patches B×L×P (P = n·C) -> target B×L×P. ``weights`` B×L×P (0 for nodata) keep missing values
    out of each channel's statistics and, through :meth:`PixelTarget.loss`, out of the loss.
    """

    def __init__(self, channels: int, eps: float | Sequence[float] = 1e-6) -> None:
        super().__init__(norm_pix=True)
        self.eps = eps
        self.channels = channels
        self.name = "norm_pix_per_channel"

    def _by_channel(self, values: torch.Tensor) -> torch.Tensor:
        """B×L×(n·C) -> B×L×C×n: one row per channel, so the parent's statistics over the last axis are per channel."""
        return values.unflatten(-1, (-1, self.channels)).transpose(-1, -2)

    def _channel_stats(self, patches: torch.Tensor, weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and unbiased std per patch and channel, B×L×1×C each, over real values only."""
        split = None if weights is None else self._by_channel(weights)
        mean, var = self._stats(self._by_channel(patches), split)  # B×L×C×1
        return mean.transpose(-1, -2), var.sqrt().transpose(-1, -2)

    def _scale(self, std: torch.Tensor) -> torch.Tensor:
        """std + eps, B×L×1×C: eps after the square root, as VideoMAE."""
        return std + torch.as_tensor(self.eps, dtype=std.dtype, device=std.device)

    def forward(
        self, patches: torch.Tensor, weights: torch.Tensor | None = None, where: torch.Tensor | None = None
    ) -> torch.Tensor:
        mean, std = self._channel_stats(patches, weights)
        cube = patches.unflatten(-1, (-1, self.channels))  # B×L×n×C
        return ((cube - mean) / self._scale(std)).flatten(-2)

    def to_pixels(self, pred: torch.Tensor, patches: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Undo the per-channel normalisation with the true patches' statistics (for pictures)."""
        mean, std = self._channel_stats(patches, weights)
        return (pred.unflatten(-1, (-1, self.channels)) * self._scale(std) + mean).flatten(-2)


@dataclass
class PerChannelOptions:
    """``model.target_options`` of ``norm_pix_per_channel``: ``eps``, one value or one per channel. Continued
    pre-training from a VideoMAE checkpoint sets VideoMAE's own, 1e-6 divided by ImageNet's std per channel."""

    eps: float | list[float] = 1e-6


@TARGETS.register("norm_pix_per_channel", PerChannelOptions)
def norm_pix_per_channel(tokenizer: Any, width: int = 0, eps: float | list[float] = 1e-6) -> PerChannelPixelTarget:
    """VideoMAE's target; needs channel-last patch vectors (p1..pn, C) of a patch tokenizer."""
    patch_size, channels = getattr(tokenizer, "patch_size", None), getattr(tokenizer, "in_chans", None)
    if patch_size is None or channels is None or tokenizer.patch_dim != math.prod(patch_size) * channels:
        raise ValueError(
            f"the norm_pix_per_channel target needs patch tokens of p1×..×pn×C values (model.tokenizer: patch); "
            f"got the {type(tokenizer).__name__}"
        )
    if not isinstance(eps, int | float) and len(eps) != channels:
        raise ValueError(f"model.target_options.eps has {len(eps)} values; expected 1 or one per channel ({channels})")
    return PerChannelPixelTarget(channels, eps)
