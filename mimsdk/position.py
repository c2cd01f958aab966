"""Position encodings: fixed N-D sin-cos (MAE's choice), learnable tables, or VideoMAE's 1-D table.

Each returns a 1×L×D table added to tokens in ``patchify`` order. The class
token's position is left out; the encoder adds its own zero for it, as MAE does.
"""

from __future__ import annotations

import torch
from torch import nn

# ``model.pos_embed``: fixed N-D, learned from an N-D start, or fixed 1-D over the token index (VideoMAE's,
# which transformers recomputes rather than loads: a model must use it to export to VideoMAE exactly)
KINDS = ("sincos", "learned", "sincos_index")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"position encoding kind {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sin-cos encoding of 1-D positions: positions M -> M×dim (dim even)."""
    if dim % 2:
        raise ValueError(f"sin-cos width must be even, got {dim}")
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_index(dim: int, length: int) -> torch.Tensor:
    """VideoMAE's table, L×dim: token i, width j -> sin (j even) or cos (j odd) of i / 10000^(2⌊j/2⌋/dim)."""
    j = torch.arange(dim, dtype=torch.float64)
    angles = torch.arange(length, dtype=torch.float64)[:, None] / 10000 ** (2 * (j // 2) / dim)
    return torch.where(j % 2 == 0, angles.sin(), angles.cos()).float()


def sincos_nd(dim: int, coords: torch.Tensor) -> torch.Tensor:
    """Sin-cos encoding of N-D grid coords: L×n -> L×dim.

    Each axis gets an equal even share of the width. Axes are encoded last axis
    first, which for 2D reproduces MAE's table (width half from the column
    index, then the row index). Width that does not split evenly (e.g. 1024 over
    three axes) is zero-padded rather than refused.
    """
    n = coords.shape[1]
    share = 2 * (dim // (2 * n))
    if share == 0:
        raise ValueError(f"width {dim} is too small for a {n}-D sin-cos encoding")
    parts = [sincos_1d(share, coords[:, axis]) for axis in reversed(range(n))]
    table = torch.cat(parts, dim=1)
    pad = dim - table.shape[1]
    if pad:
        table = torch.cat([table, table.new_zeros(table.shape[0], pad)], dim=1)
    return table.float()


class GridPositionEncoding(nn.Module):
    """Position table for a token grid.

    Args:
        coords: L×n integer grid coordinates of the tokens.
        dim: width D.
        kind: ``"sincos"`` (fixed, not trained), ``"learned"`` (initialised
            to sin-cos, then trained) or ``"sincos_index"`` (fixed, VideoMAE's).

    Returns ``1×L×D`` from ``forward()``.
    """

    def __init__(self, coords: torch.Tensor, dim: int, kind: str = "sincos") -> None:
        super().__init__()
        self.kind = check_kind(kind)
        table = (sincos_index(dim, len(coords)) if kind == "sincos_index" else sincos_nd(dim, coords))[None]
        if kind == "learned":
            self.table = nn.Parameter(table)
        else:
            # A buffer, so optimisers never see it and it is rebuilt identically
            # from the config; kept in the state dict for exports.
            self.register_buffer("table", table)

    def forward(self, where: torch.Tensor | None = None) -> torch.Tensor:
        """The 1×L×D table; ``where`` is unused, a grid's positions being fixed by the token index."""
        return self.table
