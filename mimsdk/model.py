"""MaskedAutoencoder: tokenizer, masker, encoder, decoder and target composed.

x ──tokenize──▶ patches B×L×P ──embed + pos──▶ tokens B×L×D
noise B×L ──masker──▶ keep B×Lv, restore B×L, mask B×L
tokens[keep] ──encoder──▶ latent B×(1+Lv)×D ──decoder──▶ pred B×L×P'
loss = target.loss(pred, target(patches), mask)        (masked tokens only)

Partial decoding (``decoder_fraction`` < 1) feeds the decoder the visible tokens
and only Ld of the masked ones; pred and loss cover those Ld. NaN in the input
means "no data" (satellite nodata, page padding): it enters the encoder as 0
and is left out of the target's statistics and of the loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from mimsdk.config import ModelConfig
from mimsdk.decoder import Decoder
from mimsdk.encoder import Encoder
from mimsdk.hard_patches import LossPredictor, ranking_loss
from mimsdk.hub.mixin import HubMixin
from mimsdk.masker import HardPatchMasker, Mask, build_masker, decoder_selection, running_cell_priority
from mimsdk.target import build_target
from mimsdk.teacher import EMATeacher
from mimsdk.tokenizer import Tokens, build_tokenizer


@dataclass
class MAEOutput:
    """Result of one forward pass: ``loss`` (scalar), ``pred`` B×L×P', ``mask`` B×L (1 = masked).

    Under partial decoding ``pred`` is zero where no prediction was made.
    """

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor
    decoded: torch.Tensor | None = None  # B×L, 1 where the loss counted a prediction; None: every masked token
    ranking_loss: torch.Tensor | None = None  # HPM's loss-predictor term, already inside ``loss``
    difficulty: torch.Tensor | None = None  # HPM: predicted difficulty of the scored tokens (B×L, or B×Ld)
    token_loss: torch.Tensor | None = None  # HPM: their true reconstruction loss, same shape


class MaskedAutoencoder(
    nn.Module, HubMixin, library_name="mimsdk", tags=["masked-autoencoder", "mimsdk"], license="apache-2.0"
):
    """A masked autoencoder that knows nothing of the modality it trains on.

    Build one with :func:`create_model` from a :class:`ModelConfig`; the config
    travels with the weights (``model.config``).

    ``save_pretrained(dir)``, ``push_to_hub(repo_id)`` and ``from_pretrained(repo_id_or_dir)``
    come from ``huggingface_hub``'s ModelHubMixin, see :mod:`mimsdk.hub.mixin`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim, depth, heads = config.width
        self.tokenizer = build_tokenizer(config, dim)
        self.pos = self.tokenizer.position(dim, config.pos_embed)
        self.masker = build_masker(config.masker, config.mask_ratio, self.tokenizer.grid_size, config.masker_options)
        if not 0.0 < config.decoder_fraction <= 1.0:
            raise ValueError(f"model.decoder_fraction must be in (0, 1], got {config.decoder_fraction}")
        num_masked = self.num_tokens - self.masker.num_visible(self.num_tokens)
        self.num_decode = max(1, round(num_masked * config.decoder_fraction))
        self.partial = self.num_decode < num_masked
        self.encoder = Encoder(dim, depth, heads, config.mlp_ratio, config.drop_path)
        self.target = build_target(config.target, self.tokenizer, dim)
        self.decoder = Decoder(
            dim,
            config.decoder_dim,
            config.decoder_depth,
            config.decoder_heads,
            self.target.dim(self.tokenizer.patch_dim),
            self.tokenizer.position(config.decoder_dim, config.pos_embed),
            config.mlp_ratio,
        )
        self.loss_predictor = LossPredictor(config.decoder_dim) if isinstance(self.masker, HardPatchMasker) else None
        self.progress = 0.0  # share of training done, set by the trainer: HPM's schedule, the teacher's momentum
        self.reset_parameters()
        self.teacher = EMATeacher(self.tokenizer, self.pos, self.encoder) if config.target == "ema_latent" else None

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
        """Called by the trainer after each optimiser step: the EMA teacher follows the student."""
        if self.teacher is not None:
            self.teacher.update([self.tokenizer, self.pos, self.encoder], self.progress)

    # -- the steps -----------------------------------------------------------

    def embed(self, patches: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """B×L×P -> B×L×D with positions."""
        return self.tokenizer.embed(patches) + self.pos(where)

    def make_mask(self, batch: int, noise: torch.Tensor | None, generator: torch.Generator | None) -> Mask:
        if noise is None:
            noise = self.masker.noise(batch, self.num_tokens, generator, self.encoder.cls_token.device)
        if noise.shape != (batch, self.num_tokens):
            raise ValueError(f"noise of shape {tuple(noise.shape)}; expected {(batch, self.num_tokens)}")
        return self.masker(noise)

    def decoder_priority(self, noise: torch.Tensor) -> torch.Tensor:
        """B×L priorities for partial decoding from uniform ``noise`` B×L (lower = decoded first)."""
        if self.config.decoder_masking == "running_cell":
            return running_cell_priority(self.tokenizer.grid_size, noise)
        return noise

    def tokenize(self, x: torch.Tensor, spacing: float | torch.Tensor | None = None) -> Tokens:
        """A batch -> patches B×L×P (NaN as 0), their weights (None if no NaN) and per-sample positions.

        ``spacing`` (physical pixel size, one value or one per sample) reaches tokenizers that take it.
        """
        if spacing is None:
            return self.tokenizer.tokenize(x)
        return self.tokenizer.tokenize(x, spacing=spacing)

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
        tok = self.tokenize(x, spacing)
        patches, weights = tok.patches, tok.weights  # B×L×P
        tokens = self.embed(patches, tok.where)  # B×L×D
        b = x.shape[0]
        if self.loss_predictor is not None:
            if noise is None:
                noise = self.masker.noise(b, self.num_tokens, generator, tokens.device)
            noise = self.masker.harden(noise, self.predicted_difficulty(tokens, tok.where), self.progress)
        mask = self.make_mask(b, noise, generator)
        visible = torch.gather(tokens, 1, mask.keep[..., None].expand(-1, -1, tokens.shape[2]))  # B×Lv×D
        latent = self.encoder(visible)  # B×(1+Lv)×D
        target = self.teacher(patches, tok.where) if self.teacher is not None else self.target(patches, weights)
        if weights is not None and not self.target.per_value:
            # A target that is not per value (HOG, latents) cannot skip single values: skip tokens with none.
            mask = Mask(mask.keep, mask.restore, mask.mask * (weights.sum(-1) > 0))
            weights = None
        if not self.partial or decode_all:
            pred, hidden = self.decoder(latent, mask.restore, where=tok.where, with_hidden=True)  # B×L×P'
            loss = self.target.loss(pred, target, mask.mask, weights)
            out = MAEOutput(loss=loss, pred=pred, mask=mask.mask)
            scored, scored_target, scored_mask = pred, target, mask.mask
        else:
            if decoder_noise is None:
                decoder_noise = torch.rand(b, self.num_tokens, generator=generator, device=tokens.device)
            decode, decoded = decoder_selection(mask.mask, self.num_decode, self.decoder_priority(decoder_noise))
            part, hidden = self.decoder(latent, mask.restore, mask.keep, decode, tok.where, with_hidden=True)
            index = decode[..., None].expand(-1, -1, part.shape[2])
            scored, scored_target = part, torch.gather(target, 1, index)
            scored_mask = torch.ones_like(decode, dtype=part.dtype)
            if weights is not None:
                weights = torch.gather(weights, 1, decode[..., None].expand(-1, -1, weights.shape[2]))
            loss = self.target.loss(part, scored_target, scored_mask, weights)
            pred = torch.zeros(b, self.num_tokens, part.shape[2], dtype=part.dtype, device=part.device)
            out = MAEOutput(loss=loss, pred=pred.scatter(1, index, part), mask=mask.mask, decoded=decoded)
        if self.loss_predictor is not None:
            out.token_loss = ((scored.detach().float() - scored_target.float()) ** 2).mean(-1)  # B×L or B×Ld
            score = self.loss_predictor(hidden)
            out.ranking_loss = ranking_loss(score, out.token_loss, scored_mask)
            out.loss = out.loss + self.masker.weight * out.ranking_loss
            out.difficulty = score.detach()
        return out

    @torch.no_grad()
    def predicted_difficulty(self, tokens: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """HPM: the loss predictor's score for every token, all tokens visible: B×L×D -> B×L."""
        latent = self.encoder(tokens)
        identity = torch.arange(self.num_tokens, device=tokens.device).expand(tokens.shape[0], -1)
        _, hidden = self.decoder(latent, identity, where=where, with_hidden=True)
        return self.loss_predictor(hidden)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, spacing: float | torch.Tensor | None = None) -> torch.Tensor:
        """Features with every token visible: B×(1+L)×D (class token first)."""
        tok = self.tokenize(x, spacing)
        return self.encoder(self.embed(tok.patches, tok.where))

    @torch.no_grad()
    def features(
        self, x: torch.Tensor, pool: str = "mean", spacing: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pooled features B×D: ``"mean"`` over patch tokens (MAE's global pool) or ``"cls"``."""
        latent = self.encode(x, spacing)
        if pool == "cls":
            return latent[:, 0]
        if pool == "mean":
            return latent[:, 1:].mean(dim=1)
        raise ValueError(f"pool {pool!r}; expected 'mean' or 'cls'")

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


def create_model(config: ModelConfig | dict | None = None, **overrides) -> MaskedAutoencoder:
    """The one way to build a model: from a ModelConfig, a dict of its fields, or keywords.

    >>> model = create_model(size="tiny", input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_heads=2)
    >>> model.num_tokens
    64
    """
    from mimsdk.config import from_mapping

    if config is None:
        config = ModelConfig()
    if isinstance(config, ModelConfig):
        config = dataclasses.asdict(config)
    config = from_mapping(ModelConfig, {**config, **overrides}, "model.")
    return MaskedAutoencoder(config)
