"""Tokenizer: turn a sample into tokens, and say where each token sits.

The model asks a tokenizer for the four things of the ``Tokenizer`` protocol, and nothing else.
``PatchTokenizer`` serves 2D images (C×H×W), 3D volumes (C×D×H×W) and video
(C×T×H×W): a patch is flattened as (p1, ..., pn, C), channel last, which is the
order MAE and transformers' ViTMAE use, so predictions compare one to one.
Other tokenizers (channel groups, point groups: ``mimsdk.variants``) register in
``mimsdk.registry.TOKENIZERS`` under the name ``model.tokenizer`` selects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from mimsdk.position import GridPositionEncoding
from mimsdk.registry import TOKENIZERS


@dataclass
class Tokens:
    """One batch, tokenized.

    Attributes:
        patches: B×L×P values per token (NaN replaced by 0).
        weights: B×L×P, 1 where a value is real data, 0 where it was NaN; None when all are real.
        where: per-sample token positions (e.g. B×L×3 centres), or None when fixed by the token index.
    """

    patches: torch.Tensor
    weights: torch.Tensor | None = None
    where: torch.Tensor | None = None


class Tokenizer(Protocol):
    """What the model asks of a tokenizer, plus ``num_tokens``, ``patch_dim`` and ``grid_size`` (the token
    grid the maskers see; a set of tokens with no grid is ``(L,)``)."""

    num_tokens: int
    patch_dim: int
    grid_size: tuple[int, ...]

    def tokenize(self, x: torch.Tensor) -> Tokens:
        """Values per token B×L×P (also what the target is made from), which are real data (NaN in ``x``
        means none), and ``where`` the tokens are when that differs per sample (None: fixed by index)."""

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """B×L×P -> B×L×D."""

    def position(self, dim: int, kind: str) -> nn.Module:
        """A module mapping ``where`` to positions 1×L×dim or B×L×dim, made for the encoder's and decoder's widths."""

    def untokenize(self, patches: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """The way back to the input's layout, for pictures."""


def as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """Broadcast an int to ``n`` dims, or check a sequence has ``n`` entries."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries {value}, expected {n}")
    return value


class PatchTokenizer(nn.Module):
    """Patchify, unpatchify and embed a grid of patches.

    Args:
        input_size: spatial size (S1, ..., Sn) of one sample, e.g. (224, 224) or (96, 96, 96).
        patch_size: patch size per spatial dim, or one int for all.
        in_chans: channels C.
        embed_dim: token width D.

    Shapes:
        x: B×C×S1×...×Sn  ->  patches: B×L×P, with L = prod(Si / pi), P = prod(pi)·C.
    """

    def __init__(self, input_size: Sequence[int], patch_size: int | Sequence[int], in_chans: int, embed_dim: int):
        super().__init__()
        self.input_size = tuple(int(s) for s in input_size)
        self.ndim = len(self.input_size)
        self.patch_size = as_tuple(patch_size, self.ndim, "patch_size")
        for size, patch in zip(self.input_size, self.patch_size):
            if size % patch:
                raise ValueError(f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}")
        self.in_chans = in_chans
        self.grid_size = tuple(s // p for s, p in zip(self.input_size, self.patch_size))
        self.num_tokens = math.prod(self.grid_size)
        self.patch_dim = math.prod(self.patch_size) * in_chans
        # A linear map over flattened patches equals a strided convolution, works
        # for any number of dims, and lets patches feed both embedding and target.
        self.proj = nn.Linear(self.patch_dim, embed_dim)

    def coords(self) -> torch.Tensor:
        """Grid index of every token, L×n (row-major, the order of ``patchify``)."""
        axes = [torch.arange(g) for g in self.grid_size]
        return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, self.ndim)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×S1×...×Sn -> B×L×P."""
        expected = (self.in_chans, *self.input_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit; expected B×{'×'.join(map(str, expected))}")
        b, n = x.shape[0], self.ndim
        # B, C, g1, p1, ..., gn, pn
        split = [b, self.in_chans]
        for g, p in zip(self.grid_size, self.patch_size):
            split += [g, p]
        x = x.reshape(split)
        grid_axes = [2 + 2 * i for i in range(n)]
        patch_axes = [3 + 2 * i for i in range(n)]
        x = x.permute(0, *grid_axes, *patch_axes, 1)  # B, g1..gn, p1..pn, C
        return x.reshape(b, self.num_tokens, self.patch_dim)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """B×L×P -> B×C×S1×...×Sn."""
        b, n = patches.shape[0], self.ndim
        x = patches.reshape(b, *self.grid_size, *self.patch_size, self.in_chans)
        # B, C, g1, p1, ..., gn, pn
        order = [0, 2 * n + 1]
        for i in range(n):
            order += [1 + i, 1 + n + i]
        return x.permute(order).reshape(b, self.in_chans, *self.input_size)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """B×L×P -> B×L×D."""
        return self.proj(patches)

    def tokenize(self, x: torch.Tensor) -> Tokens:
        """B×C×S1..Sn (NaN = no data) -> patches B×L×P with NaN as 0, and weights when any was NaN."""
        missing = torch.isnan(x)
        if not missing.any():
            return Tokens(self.patchify(x))
        return Tokens(self.patchify(x.masked_fill(missing, 0.0)), self.patchify((~missing).to(x.dtype)))

    def untokenize(self, patches: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        return self.unpatchify(patches)

    def position(self, dim: int, kind: str) -> nn.Module:
        """The grid's position table at width ``dim`` (sin-cos, or learned from sin-cos)."""
        return GridPositionEncoding(self.coords(), dim, kind)



@TOKENIZERS.register("patch")
def patch(config: Any, dim: int) -> PatchTokenizer:
    """Patches of ``model.patch_size`` over an input of ``model.input_size`` with ``model.in_chans`` channels."""
    return PatchTokenizer(config.input_size, config.patch_size, config.in_chans, dim)
