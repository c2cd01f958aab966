"""Decoder: a light transformer that fills mask tokens in and predicts targets.

Which tokens it predicts is a ``Decoded`` choice: every token (``AllTokens``, MAE), or a
share of the masked ones (``mimsdk.variants.partial_decoding``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mimsdk.encoder import LayerNorm, transformer_blocks


class Decoder(nn.Module):
    """MAE decoder.

    Args:
        encoder_dim: width of the encoder's latent D.
        dim: decoder width Dd. depth, heads, mlp_ratio: its transformer.
        out_dim: values predicted per token P'.
        pos: the decoder's own position encoding at width Dd (from ``tokenizer.position``).
        prefix: class tokens in the latent (1, or 0). embed_bias: a bias in the input projection (VideoMAE has none).

    Shapes: latent B×(prefix+Lv)×D, restore B×L -> prediction B×L×P' (class token dropped).
    With ``keep`` B×Lv and ``decode`` B×Ld (partial decoding) only the visible tokens and
    the Ld chosen mask tokens enter the decoder, and the prediction is B×Ld×P'.
    """

    def __init__(
        self,
        encoder_dim: int,
        dim: int,
        depth: int,
        heads: int,
        out_dim: int,
        pos: nn.Module,
        mlp_ratio: float = 4.0,
        prefix: int = 1,
        embed_bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder width {dim} is not divisible by its {heads} heads")
        self.prefix = prefix
        self.embed = nn.Linear(encoder_dim, dim, bias=embed_bias)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = pos
        self.blocks = transformer_blocks(dim, depth, heads, mlp_ratio)
        self.norm = LayerNorm(dim)
        self.pred = nn.Linear(dim, out_dim)

    def forward(
        self,
        latent: torch.Tensor,
        restore: torch.Tensor,
        keep: torch.Tensor | None = None,
        decode: torch.Tensor | None = None,
        where: torch.Tensor | None = None,
        with_hidden: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Predictions B×L×P' (B×Ld×P' when ``decode`` is given); with ``with_hidden``, also the
        normalised last hidden state of the same tokens (for HPM's loss predictor)."""
        x, p = self.embed(latent), self.prefix  # B×(p+Lv)×Dd
        if decode is not None:
            hidden = self._forward_partial(x, keep, decode, where)
            return (self.pred(hidden), hidden) if with_hidden else self.pred(hidden)
        b, num_tokens = restore.shape
        num_masked = num_tokens + p - x.shape[1]
        mask_tokens = self.mask_token.expand(b, num_masked, -1)
        x_ = torch.cat([x[:, p:], mask_tokens], dim=1)  # B×L×Dd, visible first
        x_ = torch.gather(x_, 1, restore[..., None].expand(-1, -1, x.shape[2]))  # token order
        x_ = x_ + self.pos(where)
        hidden = self.norm(self.blocks(torch.cat([x[:, :p], x_], dim=1)))[:, p:]  # blocks over B×(p+L)×Dd
        return (self.pred(hidden), hidden) if with_hidden else self.pred(hidden)  # B×L×P'

    def _forward_partial(
        self, x: torch.Tensor, keep: torch.Tensor, decode: torch.Tensor, where: torch.Tensor | None
    ) -> torch.Tensor:
        """x B×(p+Lv)×Dd, keep B×Lv, decode B×Ld -> hidden state B×Ld×Dd of the decoded tokens. Attention
        cost falls with the square of the tokens left out: that is where partial decoding's speed comes from."""
        table = self.pos(where).expand(x.shape[0], -1, -1)  # B×L×Dd
        width = x.shape[2]
        visible = x[:, self.prefix :] + torch.gather(table, 1, keep[..., None].expand(-1, -1, width))
        queries = self.mask_token + torch.gather(table, 1, decode[..., None].expand(-1, -1, width))
        x = self.blocks(torch.cat([x[:, : self.prefix], visible, queries], dim=1))  # B×(p+Lv+Ld)×Dd
        return self.norm(x[:, -decode.shape[1] :])


@dataclass
class Decoded:
    """The tokens the decoder predicts in one pass.

    Attributes:
        index: B×Ld indices of the tokens predicted, or None for every token (predictions B×L).
        decoded: B×L, 1 where a masked token is predicted (the tokens the loss counts); None: every masked token.
    """

    index: torch.Tensor | None = None
    decoded: torch.Tensor | None = None

    def gather(self, values: torch.Tensor | None) -> torch.Tensor | None:
        """B×L×P values -> B×Ld×P for the predicted tokens (all of them when ``index`` is None)."""
        if values is None or self.index is None:
            return values
        return torch.gather(values, 1, self.index[..., None].expand(-1, -1, values.shape[2]))

    def scored(self, mask: torch.Tensor) -> torch.Tensor:
        """Where the loss counts, B×L (the masked tokens) or B×Ld (every predicted token is masked)."""
        return mask if self.index is None else torch.ones_like(self.index, dtype=mask.dtype)

    def scatter(self, pred: torch.Tensor, num_tokens: int) -> torch.Tensor:
        """Predictions B×Ld×P' -> B×L×P', zero where nothing was predicted."""
        if self.index is None:
            return pred
        out = pred.new_zeros(pred.shape[0], num_tokens, pred.shape[2])
        return out.scatter(1, self.index[..., None].expand(-1, -1, pred.shape[2]), pred)


class AllTokens:
    """MAE's decoding: every token is predicted and the loss counts the masked ones."""

    def noise(self, batch: int, num_tokens: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        return {}

    def select(
        self, mask: torch.Tensor, decoder_noise: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> Decoded:
        return Decoded()
