"""MaskedAutoencoder: tokenizer, masker, encoder, decoder and target composed.

x ──tokenize──▶ patches B×L×P ──embed + pos──▶ tokens B×L×D
noise B×L ──masker──▶ keep B×Lv, restore B×L, mask B×L
tokens[keep] ──encoder──▶ latent B×(1+Lv)×D ──decoder──▶ pred B×L×P' (or B×Ld×P', the decoded tokens)
loss = target.loss(pred, target(patches), mask)        (masked tokens only) + the masker's own term

Variants plug in through the parts, not through branches here: a masker may guide its
noise and add a loss term (HPM), a target may keep a teacher (EMA latents), and the
decoding choice may predict only some masked tokens (partial decoding). NaN in the
input means "no data" (satellite nodata, page padding): it enters the encoder as 0 and
is left out of the target's statistics and of the loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import mimsdk.variants  # noqa: F401  (registers the variant tokenizers, maskers and targets)
from mimsdk.config import ModelConfig, build_part, check_model, from_mapping
from mimsdk.decoder import AllTokens, Decoder
from mimsdk.encoder import Encoder
from mimsdk.masker import Mask, build_masker
from mimsdk.registry import TOKENIZERS
from mimsdk.target import build_target
from mimsdk.tokenizer import Tokens
from mimsdk.variants.partial_decoding import choose_decoding


@dataclass
class MAEOutput:
    """One forward pass: ``loss`` (scalar), ``pred`` B×L×P' (zero where not decoded), ``mask`` B×L (1 = masked)."""

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    decoded: torch.Tensor | None = None  # B×L, 1 where the loss counted a prediction; None: every masked token
    ranking_loss: torch.Tensor | None = None  # HPM's loss-predictor term, already inside ``loss``
    difficulty: torch.Tensor | None = None  # HPM: predicted difficulty of the scored tokens (B×L, or B×Ld)
    token_loss: torch.Tensor | None = None  # HPM: their true reconstruction loss, same shape


class MaskedAutoencoder(nn.Module):
    """A masked autoencoder that knows nothing of the modality it trains on, nor of the Hub.

    Build one with :func:`create_model`; the config travels with the weights (``model.config``).
    Saving, loading and sharing are :mod:`mimsdk.serialization` and :mod:`mimsdk.hub`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = check_model(config)
        dim, depth, heads = config.width
        self.tokenizer = build_part(TOKENIZERS, config.tokenizer, config.tokenizer_options, config, dim)
        self.pos = self.tokenizer.position(dim, config.pos_embed)
        masker = build_masker(config.masker, config.mask_ratio, self.tokenizer.grid_size, config.masker_options)
        self.all_tokens = AllTokens()  # evaluation and pictures decode every token
        grid, num_visible = self.tokenizer.grid_size, masker.num_visible(self.num_tokens)
        self.decoding = choose_decoding(config, grid, num_visible, self.all_tokens)  # all, or partial decoding
        self.encoder = Encoder(dim, depth, heads, config.mlp_ratio, config.drop_path, config.class_token)
        self.target = build_target(config.target, self.tokenizer, dim, config.target_options)
        out_dim = self.target.dim(self.tokenizer.patch_dim)
        dec_pos = self.tokenizer.position(config.decoder_dim, config.pos_embed)  # the decoder's own, at its width
        self.decoder = Decoder(
            dim, config.decoder_dim, config.decoder_depth, config.decoder_heads, out_dim, dec_pos, config.mlp_ratio,
            self.encoder.num_prefix, config.decoder_embed_bias,
        )  # fmt: skip
        # Registered after the decoder, so the modules a masker makes at ``bind`` (HPM's predictor) come last.
        self.masker = masker
        self.masker.bind(self)
        self.progress = 0.0  # share of training done, set by the trainer: HPM's schedule, the teacher's momentum
        self.reset_parameters()
        self.target.bind(self)  # after initialisation: a teacher starts as a copy of the student

    @property
    def num_tokens(self) -> int:
        return self.tokenizer.num_tokens

    def reset_parameters(self) -> None:
        """MAE's initialisation: xavier for linear maps, N(0, 0.02) for tokens."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameter names exempt from weight decay besides norms and biases."""
        return {name for name, _ in self.named_parameters() if name.endswith(("cls_token", "mask_token", "pos.table"))}

    def after_step(self) -> None:
        """Called by the trainer after each optimiser step (an EMA teacher follows the student)."""
        self.target.after_step(self)

    def draw_noise(self, batch: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The random keyword arguments of ``forward`` for a batch, drawn from ``generator``: the mask's
        noise B×L, and under partial decoding the noise that picks the decoded tokens."""
        noise = {"noise": self.masker.noise(batch, self.num_tokens, generator)}
        return noise | self.decoding.noise(batch, self.num_tokens, generator)

    # -- the steps -----------------------------------------------------------

    def tokenize(self, x: torch.Tensor, spacing: float | torch.Tensor | None = None) -> Tokens:
        """A batch -> patches B×L×P (NaN as 0), their weights (None if no NaN) and per-sample positions.

        ``spacing`` (physical pixel size, one value or one per sample) reaches tokenizers that take it.
        """
        if spacing is None:
            return self.tokenizer.tokenize(x)
        return self.tokenizer.tokenize(x, spacing=spacing)

    def embed(self, patches: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """B×L×P -> B×L×D with positions."""
        return self.tokenizer.embed(patches) + self.pos(where)

    def make_mask(
        self,
        tokens: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        where: torch.Tensor | None = None,
    ) -> Mask:
        """tokens B×L×D -> the batch's mask, from ``noise`` B×L (lowest kept) or drawn from ``generator``."""
        b = tokens.shape[0]
        if noise is None:
            noise = self.masker.noise(b, self.num_tokens, generator, tokens.device)
        if noise.shape != (b, self.num_tokens):
            raise ValueError(f"noise of shape {tuple(noise.shape)}; expected {(b, self.num_tokens)}")
        noise = self.masker.guide(noise, lambda: self.hidden_all_visible(tokens, where), self.progress)
        return self.masker(noise)

    def forward(
        self,
        x: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        decoder_noise: torch.Tensor | None = None,
        decode_all: bool = False,
        spacing: float | torch.Tensor | None = None,
    ) -> MAEOutput:
        """x B×C×S1..Sn -> loss over masked tokens, prediction B×L×P', mask B×L.

        ``noise`` (B×L) fixes the mask (lowest noise kept); otherwise it is drawn
        from ``generator``. Under partial decoding ``decoder_noise`` (B×L uniform)
        fixes which masked tokens are predicted; ``decode_all`` predicts them all
        (evaluation, pictures). ``spacing`` reaches tokenizers that take it.
        """
        tok = self.tokenize(x, spacing)  # patches B×L×P
        tokens = self.embed(tok.patches, tok.where)  # B×L×D
        mask = self.make_mask(tokens, noise, generator, tok.where)  # keep B×Lv, restore B×L, mask B×L
        visible = torch.gather(tokens, 1, mask.keep[..., None].expand(-1, -1, tokens.shape[2]))  # B×Lv×D
        latent = self.encoder(visible)  # B×(1+Lv)×D
        target = self.target(tok.patches, tok.weights, tok.where)  # B×L×P'
        scored_mask, weights = self.target.scored(mask.mask, tok.weights)  # B×L, B×L×P or None
        chosen = (self.all_tokens if decode_all else self.decoding).select(mask.mask, decoder_noise, generator)
        pred, hidden = self.decoder(latent, mask.restore, mask.keep, chosen.index, tok.where, with_hidden=True)
        target, scored_mask, weights = chosen.gather(target), chosen.scored(scored_mask), chosen.gather(weights)
        loss = self.target.loss(pred, target, scored_mask, weights)
        extra, measured = self.masker.auxiliary_loss(hidden, pred, target, scored_mask)
        full = chosen.scatter(pred, self.num_tokens)  # B×L×P'
        return MAEOutput(loss=loss + extra, pred=full, mask=mask.mask, decoded=chosen.decoded, **measured)

    @torch.no_grad()
    def hidden_all_visible(self, tokens: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's last hidden state with every token visible: tokens B×L×D -> B×L×Dd."""
        latent = self.encoder(tokens)
        identity = torch.arange(self.num_tokens, device=tokens.device).expand(tokens.shape[0], -1)
        return self.decoder(latent, identity, where=where, with_hidden=True)[1]

    @torch.no_grad()
    def encode(self, x: torch.Tensor, spacing: float | torch.Tensor | None = None) -> torch.Tensor:
        """Features with every token visible: B×(prefix+L)×D (the class token first, when there is one)."""
        tok = self.tokenize(x, spacing)
        return self.encoder(self.embed(tok.patches, tok.where))

    @torch.no_grad()
    def features(
        self,
        x: torch.Tensor,
        pool: str = "mean",
        spacing: float | torch.Tensor | None = None,
        layers: list[int] | None = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Pooled features B×D: ``"mean"`` over patch tokens (MAE's global pool) or ``"cls"``. With ``layers``
        (block numbers from 0, negative from the end), the token grids those blocks output, before the final
        norm, as dense heads (UNETR, UperNet) take them: B×D×G1×..×Gn each, G the tokenizer's grid."""
        p, depth = self.encoder.num_prefix, len(self.encoder.blocks)
        if layers is not None:
            if not layers or any(not -depth <= i < depth for i in layers):
                raise ValueError(f"layers {layers}; expected block numbers in [{-depth}, {depth}) for {depth} blocks")
            tok = self.tokenize(x, spacing)
            found = self.encoder.intermediates(self.embed(tok.patches, tok.where), [i % depth for i in layers])
            return [h[:, p:].transpose(1, 2).reshape(*h.shape[::2], *self.tokenizer.grid_size) for h in found]
        latent = self.encode(x, spacing)
        if pool == "cls" and p:
            return latent[:, 0]
        if pool == "mean":
            return latent[:, p:].mean(dim=1)
        raise ValueError(f"pool {pool!r}; expected 'mean'{' or cls' if p else ' (the model has no class token)'}")

    def reconstruct(
        self,
        x: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        spacing: float | torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Input, masked input and reconstruction in the input's layout (``untokenize``), for pictures.

        Visible patches of the reconstruction are the input's own, as in MAE's demo.
        """
        out = self.forward(x, noise=noise, generator=generator, decode_all=True, spacing=spacing)
        tok = self.tokenize(x, spacing)
        patches, where = tok.patches, tok.where
        if self.target.pixels:
            pred = self.target.to_pixels(out.pred.float(), patches.float(), tok.weights)
        else:  # features (HOG, latents) have no pixels to draw: masked tokens show mid-grey
            pred = torch.full_like(patches, 0.5)
        mask = out.mask[..., None]
        return {
            "input": x,
            "masked": self.tokenizer.untokenize(patches * (1 - mask), where),
            "reconstruction": self.tokenizer.untokenize(patches * (1 - mask) + pred * mask, where),
            "mask": self.tokenizer.untokenize(mask.expand_as(patches), where),
        }


def create_model(config: ModelConfig | dict[str, Any] | None = None, **overrides: Any) -> MaskedAutoencoder:
    """The one way to build a model: from a ModelConfig, a dict of its fields, or keywords.

    >>> model = create_model(size="tiny", input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_heads=2)
    >>> model.num_tokens
    64
    """
    if config is None:
        config = ModelConfig()
    if isinstance(config, ModelConfig):
        config = dataclasses.asdict(config)
    return MaskedAutoencoder(from_mapping(ModelConfig, {**config, **overrides}, "model."))
