"""Tube masking (VideoMAE, Tong et al. 2022): one random mask shared along the first grid axis."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mimsdk.masker import RandomMasker, noise_device
from mimsdk.registry import MASKERS


@MASKERS.register("tube")
class TubeMasker(RandomMasker):
    """One random mask over the trailing grid axes, shared along the first (VideoMAE's tube masking).

    With grid (T, H, W) every time step hides the same H×W positions, so a masked
    patch cannot be copied from its neighbour in time. Keeps T·round(H·W·(1−ratio)) tokens.
    """

    name = "tube"

    def __init__(self, ratio: float, grid_size: Sequence[int] | None = None) -> None:
        super().__init__(ratio, grid_size)
        if self.grid_size is None or len(self.grid_size) < 2:
            raise ValueError(f"tube masking needs a token grid of 2 or more axes, got {grid_size}")
        self.depth = self.grid_size[0]
        self.plane = math.prod(self.grid_size[1:])

    def num_visible(self, num_tokens: int) -> int:
        return self.depth * max(1, round(self.plane * (1.0 - self.ratio)))

    def noise(self, batch, num_tokens, generator=None, device=None) -> torch.Tensor:
        """Noise of one plane B×(H·W), repeated along the first axis: B×L."""
        plane = torch.rand(batch, 1, self.plane, generator=generator, device=noise_device(generator, device))
        noise = plane.expand(-1, self.depth, -1).reshape(batch, num_tokens)
        return noise.to(device) if device is not None else noise
