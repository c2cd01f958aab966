"""Masked frequency modelling (Xie et al. 2023): each patch's spectrum as the target."""

from __future__ import annotations

from typing import Any

import torch

from mimsdk.registry import TARGETS
from mimsdk.target import Target


class FrequencyTarget(Target):
    """Each patch's spectrum: the orthonormal FFT over the patch's axes, per channel (real and imaginary parts).

    After masked frequency modelling (Xie et al. 2023, "Masked Frequency Modeling for
    Self-Supervised Visual Pre-Training"), here per patch so it fits any token grid.
    Shapes: patches B×L×(p1..pn·C) -> B×L×(2·p1..pn·C).
    """

    pixels = False
    per_value = False
    name = "frequency"

    def __init__(self, patch_size: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.patch_size, self.channels = tuple(patch_size), channels

    def dim(self, patch_dim: int) -> int:
        return 2 * patch_dim

    def forward(
        self, patches: torch.Tensor, weights: torch.Tensor | None = None, where: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, num_tokens, _ = patches.shape
        cube = patches.float().reshape(b, num_tokens, *self.patch_size, self.channels)
        axes = tuple(range(2, 2 + len(self.patch_size)))
        spectrum = torch.fft.fftn(cube, dim=axes, norm="ortho")
        return torch.cat([spectrum.real, spectrum.imag], dim=-1).reshape(b, num_tokens, -1)



@TARGETS.register("frequency")
def frequency(tokenizer: Any, width: int = 0) -> FrequencyTarget:
    return FrequencyTarget(tokenizer.patch_size, tokenizer.in_chans)
