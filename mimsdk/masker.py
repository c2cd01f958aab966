"""Masker: choose which tokens the encoder sees.

Every sample keeps exactly the same number of tokens, so visible tokens of a
batch are one gather. Randomness comes from ``noise`` (B×L, lower = kept first),
the convention of MAE and transformers' ViTMAE, drawn from a ``torch.Generator``
so runs are reproducible and noise can be shared with another implementation.
"""

from __future__ import annotations

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


class RandomMasker:
    """Uniform random masking (MAE).

    Args:
        ratio: fraction of tokens masked, in [0, 1).
    """

    name = "random"

    def __init__(self, ratio: float) -> None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
        self.ratio = ratio

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
        gen_device = generator.device if generator is not None else device
        noise = torch.rand(batch, num_tokens, generator=generator, device=gen_device)
        return noise.to(device) if device is not None else noise

    def __call__(self, noise: torch.Tensor) -> Mask:
        """noise B×L -> Mask keeping the round(L·(1−ratio)) lowest-noise tokens."""
        b, num_tokens = noise.shape
        num_keep = self.num_visible(num_tokens)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        keep = shuffle[:, :num_keep]
        mask = torch.ones(b, num_tokens, device=noise.device)
        mask[:, :num_keep] = 0
        mask = torch.gather(mask, 1, restore)
        return Mask(keep=keep, restore=restore, mask=mask)


MASKERS = {"random": RandomMasker}


def build_masker(name: str, ratio: float) -> RandomMasker:
    """A masker by its recipe name."""
    if name not in MASKERS:
        raise ValueError(f"unknown masker {name!r}; expected one of {sorted(MASKERS)}")
    return MASKERS[name](ratio)
