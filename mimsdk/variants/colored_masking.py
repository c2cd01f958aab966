"""Filtered-noise masks (ColorMAE, Hinojosa et al. 2024): white noise on the token grid, filtered, then cut."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mimsdk.config import choice
from mimsdk.masker import RandomMasker, noise_device
from mimsdk.registry import MASKERS


@dataclass
class ColoredOptions:
    """``model.masker_options`` of the ``colored`` masker: the noise colour and the filters' scale
    (cycles per token, 0 to 0.5)."""

    color: str = choice("red", "white", "red", "blue", "green")
    cutoff: float = 0.1


@MASKERS.register("colored", ColoredOptions)
class ColoredNoiseMasker(RandomMasker):
    """Data-independent filtered-noise masks after ColorMAE (Hinojosa et al. 2024).

    White noise on the token grid is filtered in the frequency domain, then cut at
    the ratio like any noise, so the masked count is exact:

    - ``white``: unfiltered (random masking);
    - ``red``: low-pass, masks in large blobs;
    - ``blue``: high-pass, masks finely scattered, few neighbours masked together;
    - ``green``: band-pass, blobs of a middle size.

    Args:
        ratio: fraction masked. grid_size: the token grid (any number of axes).
        color: one of the above. cutoff: the filters' scale, in cycles per token (0 to 0.5).
    """

    name = "colored"
    COLORS = ("white", "red", "blue", "green")

    def __init__(
        self, ratio: float, grid_size: Sequence[int] | None = None, color: str = "red", cutoff: float = 0.1
    ) -> None:
        super().__init__(ratio, grid_size)
        if color not in self.COLORS:
            raise ValueError(f"model.masker_options.color: {color!r}; expected one of {', '.join(self.COLORS)}")
        if self.grid_size is None:
            raise ValueError("colored-noise masking needs the token grid")
        self.color, self.cutoff = color, cutoff

    def response(self) -> torch.Tensor:
        """The filter's gain at each frequency of the grid: S1×...×Sn."""
        freqs = torch.meshgrid(*[torch.fft.fftfreq(n) for n in self.grid_size], indexing="ij")
        radius = torch.sqrt(sum(f**2 for f in freqs))
        low = torch.exp(-0.5 * (radius / self.cutoff) ** 2)
        if self.color == "red":
            return low
        if self.color == "blue":
            return 1.0 - low
        if self.color == "green":
            return torch.exp(-0.5 * ((radius - 2.0 * self.cutoff) / self.cutoff) ** 2)
        return torch.ones_like(radius)

    def noise(self, batch, num_tokens, generator=None, device=None) -> torch.Tensor:
        white = torch.randn(batch, *self.grid_size, generator=generator, device=noise_device(generator, device))
        axes = tuple(range(1, 1 + len(self.grid_size)))
        spectrum = torch.fft.fftn(white, dim=axes) * self.response().to(white.device)
        noise = torch.fft.ifftn(spectrum, dim=axes).real.reshape(batch, num_tokens)
        return noise.to(device) if device is not None else noise
