"""Blockwise masking (BEiT, Bao et al. 2022): rectangles of tokens on the last two grid axes."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mimsdk.masker import RandomMasker, noise_device
from mimsdk.registry import MASKERS


@dataclass
class BlockOptions:
    """``model.masker_options`` of the ``block`` masker (BEiT's values)."""

    min_tokens: int = 16
    min_aspect: float = 0.3
    attempts: int = 300


@dataclass
class Block:
    """A rectangle of tokens on the (H, W) plane: top, left, height, width."""

    top: int
    left: int
    height: int
    width: int


@MASKERS.register("block", BlockOptions)
class BlockMasker(RandomMasker):
    """BEiT's blockwise masking on the last two grid axes, shared along any leading axes.

    Rectangles of at least ``min_tokens`` tokens with aspect ratio in
    [``min_aspect``, 1/``min_aspect``] are dropped at random positions until
    exactly round(H·W·ratio) tokens are masked. A rectangle may overlap earlier
    ones; the last is placed where it adds no more than the tokens still owed,
    so the count is exact without cutting any rectangle.

    Args:
        ratio: fraction of tokens masked. grid_size: token grid, at least 2 axes.
        min_tokens: the smallest rectangle (BEiT: 16). min_aspect: BEiT's 0.3.
    """

    name = "block"

    def __init__(
        self,
        ratio: float,
        grid_size: Sequence[int] | None = None,
        min_tokens: int = 16,
        min_aspect: float = 0.3,
        attempts: int = 300,
    ) -> None:
        super().__init__(ratio, grid_size)
        if self.grid_size is None or len(self.grid_size) < 2:
            raise ValueError(f"block masking needs a token grid of 2 or more axes, got {grid_size}")
        self.height, self.width = self.grid_size[-2:]
        self.depth = math.prod(self.grid_size[:-2])
        self.num_masked = self.height * self.width - max(1, round(self.height * self.width * (1.0 - ratio)))
        self.min_tokens = min(min_tokens, max(1, self.num_masked))
        self.min_aspect = min_aspect
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
        self.attempts = attempts

    def num_visible(self, num_tokens: int) -> int:
        return self.depth * (self.height * self.width - self.num_masked)

    def aspect_ok(self, height: int, width: int) -> bool:
        """Whether a height×width rectangle's aspect lies within [min_aspect, 1/min_aspect] after rounding."""
        return self.min_aspect <= height / width <= 1.0 / self.min_aspect

    def _rectangle(self, rng: random.Random, most: int) -> tuple[int, int]:
        area = rng.uniform(self.min_tokens, max(self.min_tokens, most))
        aspect = math.exp(rng.uniform(*self.log_aspect))
        return round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))

    def blocks(self, rng: random.Random) -> tuple[torch.Tensor, list[Block]]:
        """One H×W mask (1 = masked) with exactly ``num_masked`` ones, and the rectangles that made it."""
        grid = torch.zeros(self.height, self.width)
        placed: list[Block] = []
        owed = self.num_masked
        while owed > 0:
            for _ in range(self.attempts):
                h, w = self._rectangle(rng, owed)
                fits = h * w >= self.min_tokens and h <= self.height and w <= self.width
                if not (fits and self.aspect_ok(h, w)):
                    continue
                top, left = rng.randint(0, self.height - h), rng.randint(0, self.width - w)
                new = h * w - int(grid[top : top + h, left : left + w].sum())
                if 0 < new <= owed:
                    grid[top : top + h, left : left + w] = 1
                    placed.append(Block(top, left, h, w))
                    owed -= new
                    break
            else:
                # No rectangle fits what is owed (a few tokens, far from the others): the
                # remainder goes to single random tokens, and the rectangles stay whole.
                free = torch.nonzero(grid.flatten() == 0).flatten().tolist()
                for index in rng.sample(free, owed):
                    grid.view(-1)[index] = 1
                owed = 0
        return grid, placed

    def noise(self, batch, num_tokens, generator=None, device=None) -> torch.Tensor:
        """Masked tokens get noise in [1, 2), visible ones [0, 1): the usual cut recovers the blocks."""
        seeds = torch.randint(0, 2**62, (batch,), generator=generator, device=noise_device(generator, device))
        planes = torch.stack([self.blocks(random.Random(int(s)))[0].flatten() for s in seeds.tolist()])
        jitter = torch.rand(batch, num_tokens, generator=generator, device=noise_device(generator, device)).cpu()
        noise = planes[:, None, :].expand(-1, self.depth, -1).reshape(batch, num_tokens) + jitter
        return noise.to(device if device is not None else noise_device(generator, device))
