"""Encoder: a ViT over visible tokens only, with a class token (or without, as UNETR's ViT and VideoMAE).

Blocks are timm's ``Block``, whose attention runs through PyTorch's fused
``scaled_dot_product_attention``.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

LayerNorm = partial(nn.LayerNorm, eps=1e-6)


class Blocks(nn.ModuleList):
    """Blocks run in turn: B×L×D -> B×L×D. With ``checkpointing`` set, each block's activations are
    recomputed in the backward pass instead of kept (``train.activation_checkpointing``)."""

    checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = checkpoint(block, x, use_reentrant=False) if self.checkpointing and x.requires_grad else block(x)
        return x


def transformer_blocks(dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float = 0.0) -> Blocks:
    """``depth`` pre-norm timm blocks with drop-path rising linearly to ``drop_path``."""
    rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
    return Blocks(Block(dim, heads, mlp_ratio, qkv_bias=True, norm_layer=LayerNorm, drop_path=rate) for rate in rates)


class Encoder(nn.Module):
    """Transformer encoder with a class token unless ``class_token`` is False.

    Args:
        dim: width D. depth: number of blocks. heads: attention heads.
        mlp_ratio: MLP hidden width / D. drop_path: stochastic depth at the last block.

    Shapes: tokens B×Lv×D (positions already added) -> B×(prefix+Lv)×D, normalised; prefix is 1 or 0.
    """

    def __init__(
        self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0, class_token: bool = True
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"encoder width {dim} is not divisible by its {heads} heads")
        self.dim = dim
        self.num_prefix = int(class_token)
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_prefix, dim))  # 1×0×D: no class token, no branch
        self.blocks = transformer_blocks(dim, depth, heads, mlp_ratio, drop_path)
        self.norm = LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return self.norm(self.blocks(torch.cat([cls, tokens], dim=1)))  # blocks over B×(prefix+Lv)×D

    def intermediates(self, tokens: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """The outputs of the blocks numbered ``layers`` (from 0), before the final norm: B×(prefix+L)×D each."""
        x, out = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1), {}
        for i, block in enumerate(self.blocks[: max(layers) + 1]):
            x = out[i] = block(x)
        return [out[i] for i in layers]
