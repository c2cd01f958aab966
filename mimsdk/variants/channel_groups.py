"""Channel-group tokens: each group of channels is its own set of patch tokens (SatMAE's group-channel model).

A sample of C channels, B×C×H×W (or a stack of dates B×C×T×H×W), is split into
channel groups, e.g. for Sentinel-2 visible+NIR, red edge and SWIR. Each group
is patchified and embedded by its own linear map, so the encoder sees
G·(T)·H'·W' tokens and can relate a SWIR patch to the visible patch beside it
(Cong et al. 2022, "SatMAE", group-channel ViT).

Token grid: (G, H', W') or (G, T, H', W'), group axis first, so the ``tube``
masker hides the same places in every group ("consistent" masking) while
``random`` masks groups independently.

Positions are concatenated, as in SatMAE: [spatial sin-cos | group encoding |
date encoding]. The spatial part follows Scale-MAE's ground-sample-distance
encoding (Reed et al. 2023): grid coordinates are multiplied by
``spacing / reference_spacing`` so a tile at 20 m per pixel is told that its
tokens lie twice as far apart as the same tile at 10 m. ``spacing`` is the
physical size of a pixel, modality-free: metres on the ground, millimetres in
a microscope. A call may pass its own (``model(x, spacing=20.0)``); otherwise
the configured one is used and positions are one fixed table.

Groups differ in channel count, so token vectors differ in length. Every token
carries P = p·p·(pt)·C_max values, its group's values first and zeros after;
those padding values get weight 0, which keeps them out of the target's
per-patch statistics and out of the loss (the core's nodata rule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mimsdk.position import check_kind, sincos_1d, sincos_nd
from mimsdk.registry import TOKENIZERS
from mimsdk.tokenizer import PatchTokenizer, Tokens


@dataclass
class ChannelGroupOptions:
    """``model.tokenizer_options`` of the ``channel_groups`` tokenizer.

    groups: channel indices of each group; together they must use every channel once. [] = one group of all.
    spacing: physical size of a pixel of the data trained on (e.g. 10.0 for Sentinel-2's 10 m bands).
    reference_spacing: the spacing at which positions are the plain token grid; None = ``spacing``.
    group_dim: width of the group (and date) encodings; None = a quarter of the width (SatMAE: 256 of 1024).
    """

    groups: list[list[int]] = field(default_factory=list)
    spacing: float = 1.0
    reference_spacing: float | None = None
    group_dim: int | None = None


def check_groups(groups: Sequence[Sequence[int]], in_chans: int) -> list[list[int]]:
    """Groups as lists of ints, checked to use each of ``in_chans`` channels exactly once."""
    if not groups:
        return [list(range(in_chans))]
    groups = [[int(c) for c in g] for g in groups]
    used = sorted(c for g in groups for c in g)
    if any(not g for g in groups) or used != list(range(in_chans)):
        raise ValueError(
            f"model.tokenizer_options.groups {groups} must use each of the {in_chans} channels "
            f"(0..{in_chans - 1}, model.in_chans) exactly once, each group non-empty"
        )
    return groups


def _even(n: int) -> int:
    return 2 * (n // 2)


class GroupPositionEncoding(nn.Module):
    """[spatial | group | date] encodings for a (G, T, H', W') token grid at width ``dim``.

    Args:
        grid: (G, T, H', W'), T = 1 for single dates.
        dim: width D. kind: ``"sincos"`` (fixed) or ``"learned"`` (group and date tables trained,
            initialised to sin-cos; the spatial part stays sin-cos because it must follow the spacing).
        scale: default ``spacing / reference_spacing``.
        group_dim: width of the group part and of the date part (when T > 1).

    ``forward(where)``: where None -> 1×L×D at the default scale; where B×L×4 (group, date, row, col
    with row and col already scaled) -> B×L×D.
    """

    def __init__(self, grid: Sequence[int], dim: int, kind: str, scale: float, group_dim: int | None) -> None:
        super().__init__()
        if check_kind(kind) == "sincos_index":
            raise ValueError("pos_embed 'sincos_index' is for patch grids; channel groups take 'sincos' or 'learned'")
        groups, frames = grid[0], grid[1]
        self.group_dim = _even(group_dim if group_dim is not None else dim // 4)
        self.time_dim = self.group_dim if frames > 1 else 0
        self.spatial_dim = dim - self.group_dim - self.time_dim
        if self.group_dim <= 0 or self.spatial_dim < 4:
            raise ValueError(f"width {dim} leaves no room for group ({self.group_dim}) and spatial encodings")
        group_table = sincos_1d(self.group_dim, torch.arange(groups)).float()
        time_table = sincos_1d(self.time_dim, torch.arange(frames)).float() if self.time_dim else torch.zeros(frames, 0)
        if kind == "learned":
            self.group_table, self.time_table = nn.Parameter(group_table), nn.Parameter(time_table)
        else:
            self.register_buffer("group_table", group_table, persistent=False)
            self.register_buffer("time_table", time_table, persistent=False)
        where = grid_where(grid, scale)
        # Fixed parts at the configured spacing, so the usual call builds no sin-cos.
        self.register_buffer("spatial", self._spatial(where[None]), persistent=False)
        self.register_buffer("group_index", where[:, 0].long(), persistent=False)
        self.register_buffer("date_index", where[:, 1].long(), persistent=False)

    def _spatial(self, where: torch.Tensor) -> torch.Tensor:
        """B×L×4 -> B×L×spatial_dim sin-cos of the scaled (row, col), computed in float64 on the CPU."""
        b, n = where.shape[:2]
        table = sincos_nd(self.spatial_dim, where[..., 2:].reshape(-1, 2).detach().cpu())
        return table.reshape(b, n, -1).to(where.device)

    def forward(self, where: torch.Tensor | None = None) -> torch.Tensor:
        if where is None:
            spatial, group, date = self.spatial, self.group_index[None], self.date_index[None]
        else:
            spatial, group, date = self._spatial(where), where[..., 0].long(), where[..., 1].long()
        b = spatial.shape[0]
        parts = [spatial, self.group_table[group].expand(b, -1, -1), self.time_table[date].expand(b, -1, -1)]
        return torch.cat([p.to(self.group_table.dtype) for p in parts], dim=-1)


def grid_where(grid: Sequence[int], scale: float | torch.Tensor) -> torch.Tensor:
    """Token coordinates (group, date, row·scale, col·scale) in token order: L×4, or B×L×4 for B scales."""
    axes = [torch.arange(g, dtype=torch.float64) for g in grid]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 4)
    if not torch.is_tensor(scale) or scale.ndim == 0:
        return torch.cat([coords[:, :2], coords[:, 2:] * float(scale)], dim=1).float()
    scale = scale.double().reshape(-1, 1, 1)
    coords = coords[None].expand(scale.shape[0], -1, -1)
    return torch.cat([coords[..., :2], coords[..., 2:] * scale], dim=2).float()


class ChannelGroupTokenizer(nn.Module):
    """Tokens per channel group, each group with its own patch embedding.

    Args:
        input_size: (H, W) or (T, H, W) of one sample. patch_size: per dim, or one int.
        in_chans: C. embed_dim: D. groups: channel indices per group (see :func:`check_groups`).
        spacing, reference_spacing, group_dim: see :class:`ChannelGroupOptions`.

    Shapes:
        x B×C×H×W (or B×C×T×H×W) -> patches B×L×P with L = G·(T/pt)·H'·W' (group-major)
        and P = (pt)·p·p·C_max; group g's values fill the first (pt)·p·p·C_g entries.
    """

    def __init__(
        self,
        input_size: Sequence[int],
        patch_size: int | Sequence[int],
        in_chans: int,
        embed_dim: int,
        groups: Sequence[Sequence[int]] = (),
        spacing: float = 1.0,
        reference_spacing: float | None = None,
        group_dim: int | None = None,
    ) -> None:
        super().__init__()
        if len(input_size) not in (2, 3):
            raise ValueError(f"input_size {list(input_size)}: channel groups take (H, W) or (T, H, W)")
        if spacing <= 0 or (reference_spacing is not None and reference_spacing <= 0):
            raise ValueError(f"spacing {spacing} and reference_spacing {reference_spacing} must be positive")
        self.group_channels = check_groups(groups, in_chans)
        self.in_chans = in_chans
        # One PatchTokenizer per group: its patchify and its own Linear(p·p·C_g, D).
        self.embeds = nn.ModuleList(
            PatchTokenizer(input_size, patch_size, len(g), embed_dim) for g in self.group_channels
        )
        first = self.embeds[0]
        self.input_size = first.input_size
        frames = first.grid_size[0] if len(first.grid_size) == 3 else 1
        self.grid4 = (len(self.group_channels), frames, *first.grid_size[-2:])
        self.grid_size = (len(self.group_channels), *first.grid_size)
        self.tokens_per_group = first.num_tokens
        self.num_tokens = len(self.group_channels) * first.num_tokens
        self.patch_dim = max(e.patch_dim for e in self.embeds)
        self.spacing = float(spacing)
        self.reference_spacing = float(reference_spacing or spacing)
        self.group_dim = group_dim
        self.padded = any(e.patch_dim < self.patch_dim for e in self.embeds)

    def scale(self, spacing: float | Sequence[float] | torch.Tensor | None) -> float | torch.Tensor:
        """``spacing / reference_spacing``: a float, or a B tensor for per-sample spacings."""
        if spacing is None:
            return self.spacing / self.reference_spacing
        spacing = torch.as_tensor(spacing, dtype=torch.float64)
        if (spacing <= 0).any():
            raise ValueError(f"spacing must be positive, got {spacing.tolist()}")
        return spacing / self.reference_spacing

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×... -> B×L×P, each group patchified and padded to P."""
        parts = []
        for channels, embed in zip(self.group_channels, self.embeds):
            part = embed.patchify(x[:, channels])  # B×N×P_g
            parts.append(nn.functional.pad(part, (0, self.patch_dim - part.shape[2])))
        return torch.cat(parts, dim=1)

    def tokenize(self, x: torch.Tensor, spacing: float | Sequence[float] | torch.Tensor | None = None) -> Tokens:
        """x B×C×(T)×H×W (NaN = no data) -> patches B×L×P, weights B×L×P (0 at NaN and padding) or None.

        ``where`` is None at the configured spacing; with ``spacing`` (one value or one per sample) it is
        B×L×4 (group, date, row, col) with row and col scaled by ``spacing / reference_spacing``.
        """
        expected = (self.in_chans, *self.input_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"input of shape {tuple(x.shape)} does not fit; expected B×{'×'.join(map(str, expected))}")
        missing = torch.isnan(x)
        any_missing = bool(missing.any())
        patches = self._split(x.masked_fill(missing, 0.0) if any_missing else x)
        weights = self._split((~missing).to(x.dtype)) if any_missing or self.padded else None
        where = None
        if spacing is not None:
            scale = self.scale(spacing)
            where = grid_where(self.grid4, scale).to(x.device)
            where = where.expand(x.shape[0], -1, -1) if where.ndim == 2 else where
            if where.shape[0] != x.shape[0]:
                raise ValueError(f"{where.shape[0]} spacings for a batch of {x.shape[0]}")
        return Tokens(patches, weights, where)

    def embed(self, patches: torch.Tensor) -> torch.Tensor:
        """B×L×P -> B×L×D, each group through its own linear map (on its unpadded values)."""
        n = self.tokens_per_group
        return torch.cat(
            [e.embed(patches[:, g * n : (g + 1) * n, : e.patch_dim]) for g, e in enumerate(self.embeds)], dim=1
        )

    def untokenize(self, patches: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """B×L×P -> B×C×(T)×H×W, each group's channels back in their places."""
        n = self.tokens_per_group
        out = patches.new_zeros(patches.shape[0], self.in_chans, *self.input_size)
        for g, (channels, e) in enumerate(zip(self.group_channels, self.embeds)):
            out[:, channels] = e.unpatchify(patches[:, g * n : (g + 1) * n, : e.patch_dim])
        return out

    def position(self, dim: int, kind: str) -> nn.Module:
        return GroupPositionEncoding(self.grid4, dim, kind, self.scale(None), self.group_dim)


@TOKENIZERS.register("channel_groups", ChannelGroupOptions)
def channel_groups(config: Any, dim: int, **options: Any) -> ChannelGroupTokenizer:
    """SatMAE's group-channel tokens for ``model.in_chans`` channels, with ``model.tokenizer_options``."""
    opts = ChannelGroupOptions(**options)
    return ChannelGroupTokenizer(
        config.input_size,
        config.patch_size,
        config.in_chans,
        dim,
        opts.groups,
        opts.spacing,
        opts.reference_spacing,
        opts.group_dim,
    )
