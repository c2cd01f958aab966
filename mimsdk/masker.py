"""Masker: choose which tokens the encoder sees, and which masked ones the decoder predicts.

Every sample keeps exactly the same number of tokens, so visible tokens of a
batch are one gather. Randomness comes from ``noise`` (B×L, lower = kept first),
the convention of MAE and transformers' ViTMAE, drawn from a ``torch.Generator``
so runs are reproducible and noise can be shared with another implementation.
A structured masker (tube, block) draws structured noise; the cut is the same.

Maskers see the token grid (``grid_size``, e.g. (T, H, W) for video), never the
modality: "tube" shares one mask along the first grid axis (time for video,
band groups for multispectral), "block" masks rectangles on the last two axes.
"""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch


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


def _device_of(generator: torch.Generator | None, device: torch.device | str | None) -> torch.device | str | None:
    return generator.device if generator is not None else device


class RandomMasker:
    """Uniform random masking (MAE).

    Args:
        ratio: fraction of tokens masked, in [0, 1).
        grid_size: the token grid (unused by random masking; structured maskers need it).
    """

    name = "random"

    def __init__(self, ratio: float, grid_size: Sequence[int] | None = None) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio
        self.grid_size = tuple(grid_size) if grid_size is not None else None

    def num_visible(self, num_tokens: int) -> int:
        return max(1, round(num_tokens * (1.0 - self.ratio)))

    def noise(
        self,
        batch: int,
        num_tokens: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """B×L uniform noise; drawn on the generator's device, then moved."""
        noise = torch.rand(batch, num_tokens, generator=generator, device=_device_of(generator, device))
        return noise.to(device) if device is not None else noise

    def __call__(self, noise: torch.Tensor) -> Mask:
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
        plane = torch.rand(batch, 1, self.plane, generator=generator, device=_device_of(generator, device))
        noise = plane.expand(-1, self.depth, -1).reshape(batch, num_tokens)
        return noise.to(device) if device is not None else noise


@dataclass
class Block:
    """A rectangle of tokens on the (H, W) plane: top, left, height, width."""

    top: int
    left: int
    height: int
    width: int


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
        seeds = torch.randint(0, 2**62, (batch,), generator=generator, device=_device_of(generator, device))
        planes = torch.stack([self.blocks(random.Random(int(s)))[0].flatten() for s in seeds.tolist()])
        jitter = torch.rand(batch, num_tokens, generator=generator, device=_device_of(generator, device)).cpu()
        noise = planes[:, None, :].expand(-1, self.depth, -1).reshape(batch, num_tokens) + jitter
        return noise.to(device if device is not None else _device_of(generator, device))


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
        white = torch.randn(batch, *self.grid_size, generator=generator, device=_device_of(generator, device))
        axes = tuple(range(1, 1 + len(self.grid_size)))
        spectrum = torch.fft.fftn(white, dim=axes) * self.response().to(white.device)
        noise = torch.fft.ifftn(spectrum, dim=axes).real.reshape(batch, num_tokens)
        return noise.to(device) if device is not None else noise


class HardPatchMasker(RandomMasker):
    """Masks the tokens a learned predictor expects to be hardest, after HPM (Wang et al. 2023).

    The model's loss predictor scores every token; a share of the masked tokens
    rising linearly from 0 to ``alpha`` over training (easy to hard) is taken
    from the highest scores, the rest at random. ``weight`` scales the
    predictor's ranking loss in the total loss.
    """

    name = "hpm"

    def __init__(self, ratio: float, grid_size: Sequence[int] | None = None, alpha: float = 0.5, weight: float = 1.0):
        super().__init__(ratio, grid_size)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"model.masker_options.alpha must be in [0, 1], got {alpha}")
        self.alpha, self.weight = alpha, weight

    def num_hard(self, num_tokens: int, progress: float) -> int:
        return round(self.alpha * min(1.0, max(0.0, progress)) * (num_tokens - self.num_visible(num_tokens)))

    def harden(self, noise: torch.Tensor, difficulty: torch.Tensor, progress: float) -> torch.Tensor:
        """noise B×L, difficulty B×L -> noise whose top ``num_hard`` difficulties sort last (masked)."""
        hard = self.num_hard(noise.shape[1], progress)
        if hard == 0:
            return noise
        top = torch.topk(difficulty, hard, dim=1).indices
        return noise.scatter(1, top, 2.0 + torch.gather(noise, 1, top))


MASKERS = {
    "random": RandomMasker,
    "tube": TubeMasker,
    "block": BlockMasker,
    "colored": ColoredNoiseMasker,
    "hpm": HardPatchMasker,
}


def build_masker(
    name: str, ratio: float, grid_size: Sequence[int] | None = None, options: dict | None = None
) -> RandomMasker:
    """A masker by its recipe name (``model.masker``), for a token grid of ``grid_size``.

    ``options`` (``model.masker_options``) are the masker's own keyword arguments.
    """
    if name not in MASKERS:
        raise ValueError(f"unknown masker {name!r}; expected one of {sorted(MASKERS)}")
    cls = MASKERS[name]
    allowed = [p for p in inspect.signature(cls).parameters if p not in ("ratio", "grid_size")]
    for key in options or {}:
        if key not in allowed:
            raise ValueError(
                f"unknown key model.masker_options.{key} for the {name} masker; allowed: {', '.join(allowed) or 'none'}"
            )
    return cls(ratio, grid_size, **(options or {}))
