"""Partial decoding (CrossMAE, Fu et al. 2024; VideoMAE V2's dual masking, Wang et al. 2023).

The decoder predicts only Ld of the masked tokens, chosen at random or by VideoMAE V2's
running cell; attention then costs less with the square of the tokens left out. Evaluation
and pictures still decode every token (``AllTokens``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mimsdk.config import ModelConfig
from mimsdk.decoder import AllTokens, Decoded
from mimsdk.masker import noise_device


def decoder_selection(mask: torch.Tensor, num_decode: int, priority: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which masked tokens the decoder predicts (partial decoding, CrossMAE / VideoMAE V2).

    Args:
        mask: B×L, 1 where masked. num_decode: Ld, how many masked tokens to predict per sample.
        priority: B×L in [0, 8), lower = decoded first (random noise, or a running-cell pattern plus noise).

    Returns:
        decode: B×Ld indices of the masked tokens to predict.
        selected: B×L, 1 where a token is masked and decoded (the tokens the loss counts).
    """
    order = torch.argsort(priority + 8.0 * (1.0 - mask), dim=1)  # visible tokens sort last
    decode = order[:, :num_decode]
    selected = torch.zeros_like(mask).scatter_(1, decode, 1.0)
    return decode, selected


def running_cell_priority(grid_size: Sequence[int], noise: torch.Tensor) -> torch.Tensor:
    """VideoMAE V2's running cell: a 2×2 cell pattern on the last two axes that shifts one step per
    leading-axis index (time), plus ``noise`` B×L in [0, 1) to break ties. Returns B×L priorities."""
    axes = [torch.arange(g, device=noise.device) for g in grid_size]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid_size))
    cell = (coords[:, -2] % 2) * 2 + (coords[:, -1] % 2)
    shift = coords[:, 0] if len(grid_size) > 2 else torch.zeros_like(cell)
    return ((cell + shift) % 4).float()[None] + noise


class PartialDecoding:
    """Choose ``num_decode`` masked tokens per sample for the decoder to predict.

    Args:
        num_decode: Ld. pattern: ``"random"`` or ``"running_cell"`` (``model.decoder_masking``).
        grid_size: the token grid, for the running cell.
    """

    def __init__(self, num_decode: int, pattern: str, grid_size: Sequence[int]) -> None:
        self.num_decode, self.pattern, self.grid_size = num_decode, pattern, tuple(grid_size)

    def noise(self, batch: int, num_tokens: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The noise that picks the decoded tokens, B×L, drawn after the mask's own."""
        return {"decoder_noise": torch.rand(batch, num_tokens, generator=generator)}

    def priority(self, noise: torch.Tensor) -> torch.Tensor:
        """B×L priorities from uniform ``noise`` B×L (lower = decoded first)."""
        if self.pattern == "running_cell":
            return running_cell_priority(self.grid_size, noise)
        return noise

    def select(
        self, mask: torch.Tensor, decoder_noise: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> Decoded:
        """mask B×L (1 = masked) -> the Ld masked tokens to predict."""
        if decoder_noise is None:
            # drawn where the generator lives (a CPU generator for a CUDA model), as the masker's noise is
            decoder_noise = torch.rand(mask.shape, generator=generator, device=noise_device(generator, mask.device))
            decoder_noise = decoder_noise.to(mask.device)
        index, decoded = decoder_selection(mask, self.num_decode, self.priority(decoder_noise))
        return Decoded(index, decoded)


def choose_decoding(
    config: ModelConfig, grid_size: Sequence[int], num_visible: int, all_tokens: AllTokens
) -> AllTokens | PartialDecoding:
    """``all_tokens``, or partial decoding when ``model.decoder_fraction`` leaves some masked tokens out."""
    if not 0.0 < config.decoder_fraction <= 1.0:
        raise ValueError(f"model.decoder_fraction must be in (0, 1], got {config.decoder_fraction}")
    num_masked = math.prod(grid_size) - num_visible
    num_decode = max(1, round(num_masked * config.decoder_fraction))
    if num_decode < num_masked:
        return PartialDecoding(num_decode, config.decoder_masking, grid_size)
    return all_tokens
