"""Masker: choose which tokens the encoder sees.

Every sample keeps exactly the same number of tokens, so visible tokens of a
batch are one gather. Randomness comes from ``noise`` (B×L, lower = kept first),
the convention of MAE and transformers' ViTMAE, drawn from a ``torch.Generator``
so runs are reproducible and noise can be shared with another implementation.
A structured masker (tube, block, colored noise; ``mimsdk.variants``) draws
structured noise; the cut is the same. Maskers see the token grid
(``grid_size``, e.g. (T, H, W) for video), never the modality.

A masker may also take part in training (HPM learns which tokens are hard):
``bind`` makes its modules, ``guide`` may change the noise from what the model
predicts, and ``auxiliary_loss`` may add a term once the decoder has run.
Plain masking does none of these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mimsdk.config import build_part
from mimsdk.registry import MASKERS


@dataclass
class Mask:
    """A batch of masks.

    Attributes:
        keep: B×Lv indices of visible tokens.
        restore: B×L permutation that puts [visible, masked] back in token order.
        mask: B×L, 1.0 where the token is masked (to be predicted), 0.0 where visible.
    """

    keep: torch.Tensor
    restore: torch.Tensor
    mask: torch.Tensor


Device = torch.device | str | None


def noise_device(generator: torch.Generator | None, device: Device) -> Device:
    """Where to draw noise: on the generator's device, so a seed gives the same noise wherever it is used."""
    return generator.device if generator is not None else device


@MASKERS.register("random")
class RandomMasker(nn.Module):
    """Uniform random masking (MAE).

    Args:
        ratio: fraction of tokens masked, in [0, 1).
        grid_size: the token grid (unused by random masking; structured maskers need it).
    """

    name = "random"

    def __init__(self, ratio: float, grid_size: Sequence[int] | None = None) -> None:
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self.grid_size = tuple(grid_size) if grid_size is not None else None

    def num_visible(self, num_tokens: int) -> int:
        return max(1, round(num_tokens * (1.0 - self.ratio)))

    def noise(
        self, batch: int, num_tokens: int, generator: torch.Generator | None = None, device: Device = None
    ) -> torch.Tensor:
        """B×L uniform noise; drawn on the generator's device, then moved."""
        noise = torch.rand(batch, num_tokens, generator=generator, device=noise_device(generator, device))
        return noise.to(device) if device is not None else noise

    def forward(self, noise: torch.Tensor) -> Mask:
        """noise B×L -> Mask keeping the ``num_visible(L)`` lowest-noise tokens."""
        b, num_tokens = noise.shape
        num_keep = self.num_visible(num_tokens)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        keep = shuffle[:, :num_keep]
        mask = torch.ones(b, num_tokens, device=noise.device)
        mask[:, :num_keep] = 0
        mask = torch.gather(mask, 1, restore)
        return Mask(keep=keep, restore=restore, mask=mask)

    # -- hooks for maskers that learn; plain masking leaves everything as it is --------------------

    def bind(self, model: nn.Module) -> None:
        """Called once the model's decoder is built (a masker that learns makes its modules here)."""

    def guide(self, noise: torch.Tensor, hidden: Callable[[], torch.Tensor], progress: float) -> torch.Tensor:
        """noise B×L -> the noise to cut. ``hidden()`` gives the decoder's hidden state B×L×Dd with every
        token visible, on demand; ``progress`` is the share of training done."""
        return noise

    def auxiliary_loss(
        self, hidden: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, scored: torch.Tensor
    ) -> tuple[torch.Tensor | float, dict[str, torch.Tensor]]:
        """A term added to the loss, and what it measured (``MAEOutput`` fields), from the decoder's hidden
        state B×L'×Dd of the scored tokens, their predictions and targets B×L'×P', and ``scored`` B×L'
        (1 where the loss counts)."""
        return 0.0, {}


def build_masker(
    name: str, ratio: float, grid_size: Sequence[int] | None = None, options: dict[str, Any] | None = None
) -> RandomMasker:
    """A masker by its recipe name (``model.masker``) and options, for a token grid of ``grid_size``."""
    return build_part(MASKERS, name, options, ratio, grid_size)
