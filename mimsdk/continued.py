"""Continued pre-training: a run that starts from a trained model's configuration and weights.

From a mimsdk model (:func:`adopt`): the model's config replaces the recipe's model section (explicit
model overrides apply on top), its metadata travels on, and the data are normalised as the model was
unless the recipe says otherwise. An encoder-only model gets a freshly initialised decoder.

From public MAE weights (:func:`adopt_public`; transformers' ViTMAE and VideoMAE, timm's ViT, read by
``mimsdk.hub.public_weights``): the recipe's model section stays, for what the data decide (input size,
channels, tokenizer, masker, mask ratio), while the architecture is the checkpoint's and must be the
recipe's too (a mismatch is refused, naming both). Where the data differ from the checkpoint's, the
weights adapt and a log line says how: other channel counts through timm's ``adapt_input_conv``, another
input size by recomputing fixed position tables or resampling learned ones (timm's ``resample_abs_pos_embed``).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv

from mimsdk.config import ModelConfig, Recipe, from_mapping, merge
from mimsdk.errors import ConfigError
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import is_encoder_only

log = logging.getLogger(__name__)


@dataclass
class StartingPoint:
    """The weights a run starts from (on the CPU), and whether they lack a decoder."""

    state: dict[str, torch.Tensor]
    encoder_only: bool
    rebuilt: tuple[str, ...] = ()  # key prefixes the run's model computes itself (fixed position tables)


def adopt(
    recipe: Recipe, source: MaskedAutoencoder, overrides: dict[str, Any], base_model: str | None = None
) -> StartingPoint:
    """Make ``source``'s config (plus ``overrides``, model fields) the recipe's model section, in place.

    ``base_model`` (a Hub repo id) is recorded in the model's metadata, for its card.
    """
    model = from_mapping(ModelConfig, merge(dataclasses.asdict(source.config), overrides), "model.")
    if model.modality != recipe.data.modality:
        raise ConfigError(
            f"the model to continue from is for {model.modality!r} but data.modality is {recipe.data.modality!r}"
        )
    if base_model is not None:
        model.metadata["base_model"] = base_model
    # Data read as the model was trained: its normalisation, unless the recipe sets one.
    if recipe.data.mean is None and model.metadata.get("mean") is not None:
        recipe.data.mean = list(model.metadata["mean"])
    if recipe.data.std is None and model.metadata.get("std") is not None:
        recipe.data.std = list(model.metadata["std"])
    recipe.model = model
    state = {k: v.detach().cpu() for k, v in source.state_dict().items()}
    return StartingPoint(state, is_encoder_only(source))


def load_into(model: MaskedAutoencoder, start: StartingPoint) -> None:
    """Load the starting weights into the run's freshly built ``model``; a mismatch names the tensor."""
    expected = model.state_dict()
    for key, value in start.state.items():
        if key in expected and value.shape != expected[key].shape:
            raise ConfigError(
                f"the model to continue from does not fit the model section: {key} has shape "
                f"{tuple(value.shape)}, the model section makes {tuple(expected[key].shape)}"
            )
    missing, unexpected = model.load_state_dict(start.state, strict=False)
    fresh = [k for k in missing if start.encoder_only and k.startswith("decoder.")]
    rebuilt = [k for k in missing if k.startswith(start.rebuilt) and k not in fresh] if start.rebuilt else []
    if unexpected or len(fresh) + len(rebuilt) != len(missing):
        raise ConfigError(
            f"the model to continue from does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if fresh:
        log.warning("continuing from an encoder-only model: the decoder starts from a fresh initialisation")


# -- public MAE weights ------------------------------------------------------------------------------


@dataclass
class PublicWeights:
    """Public MAE weights in mimsdk's terms, at the checkpoint's own sizes (``mimsdk.hub.public_weights`` reads them).

    Attributes:
        name: what the run's metadata records as ``base_model``: the Hub repo id, or the directory's name.
        architecture: model fields the recipe must share: widths, depths, heads, mlp_ratio, patch_size (the
            decoder's too when the checkpoint has one).
        settings: model fields the run takes from the checkpoint: class_token, pos_embed, decoder_embed_bias,
            and the target its decoder was trained to predict.
        input_size, in_chans: what the checkpoint was trained on; the recipe's may differ (the weights adapt).
        state: the weights under mimsdk's names, float32 on the CPU, without fixed position tables.
        encoder_only: no decoder weights (timm's ViT, VideoMAEModel): the run's decoder starts fresh.
    """

    name: str
    architecture: dict[str, Any]
    settings: dict[str, Any]
    input_size: list[int]
    in_chans: int
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    encoder_only: bool = False


FIXED_TABLES = ("pos.", "decoder.pos.")  # keys of position tables a fixed kind computes from the config
PIXEL_TARGETS = ("norm_pix", "pixels", "norm_pix_per_channel")  # a value per pixel and channel: C rows per pixel


def _architecture(model: ModelConfig) -> dict[str, Any]:
    dim, depth, heads = model.width
    return {
        "embed_dim": dim,
        "depth": depth,
        "num_heads": heads,
        "mlp_ratio": model.mlp_ratio,
        "patch_size": list(model.patch_size),
        "decoder_dim": model.decoder_dim,
        "decoder_depth": model.decoder_depth,
        "decoder_heads": model.decoder_heads,
    }


def check_architecture(model: ModelConfig, public: PublicWeights) -> None:
    """Refuse a recipe whose model section is not ``public``'s architecture, naming the field and both values."""
    if model.tokenizer != "patch":
        raise ConfigError(
            f"model.tokenizer: the recipe has {model.tokenizer!r}, {public.name} has 'patch' (one patch embedding)"
        )
    ours = _architecture(model)
    for key, theirs in public.architecture.items():
        same = math.isclose(ours[key], theirs) if key == "mlp_ratio" else ours[key] == theirs
        if not same:
            raise ConfigError(
                f"model.{key}: the recipe has {ours[key]}, {public.name} has {theirs}; a run from public weights "
                f"keeps their architecture, so set model.{key}={theirs}"
            )


def adopt_public(recipe: Recipe, public: PublicWeights) -> StartingPoint:
    """The recipe's model section with ``public``'s architecture checked and its settings taken, in place; and
    ``public``'s weights adapted to the recipe's channels and input size, each adaptation said in a log line."""
    model = recipe.model
    check_architecture(model, public)
    changed = {k: (getattr(model, k), v) for k, v in public.settings.items() if getattr(model, k) != v}
    if "target" in changed:  # the recipe's options were for its own target
        model.target_options = {}
    for key, value in public.settings.items():
        setattr(model, key, value)
    if changed:
        shown = ", ".join(f"{k} {theirs!r} (the recipe's: {ours!r})" for k, (ours, theirs) in changed.items())
        log.info("model fields as %s needs them: %s", public.name, shown)
    model.metadata["base_model"] = public.name
    state = dict(public.state)
    if model.in_chans != public.in_chans:
        _adapt_channels(state, public, model)
    fixed = model.pos_embed != "learned"
    if model.input_size != public.input_size:
        _adapt_positions(state, public, model, fixed)
    return StartingPoint(state, public.encoder_only, FIXED_TABLES if fixed else ())


def _adapt_channels(state: dict[str, torch.Tensor], public: PublicWeights, model: ModelConfig) -> None:
    """The patch embedding, D×(S·C) with C last, through timm's ``adapt_input_conv`` (a sum for 1 channel, else
    the channels repeated and scaled by C/C'); a pixel prediction head's rows averaged over C (1) or repeated."""
    base, chans = public.in_chans, model.in_chans
    weight = state["tokenizer.proj.weight"]
    conv = weight.reshape(weight.shape[0], -1, base).permute(0, 2, 1)[..., None]  # D×C×S×1, a conv's layout
    conv = adapt_input_conv(chans, conv, base)
    state["tokenizer.proj.weight"] = conv[..., 0].permute(0, 2, 1).reshape(weight.shape[0], -1)
    how = "summed over its channels" if chans == 1 else f"repeated over the {chans} and scaled by {base}/{chans}"
    head = ""
    if not public.encoder_only and model.target in PIXEL_TARGETS:
        for key in ("decoder.pred.weight", "decoder.pred.bias"):
            state[key] = _spread_rows(state[key], base, chans)
        head = "; its pixel prediction head " + ("averaged" if chans == 1 else "repeated") + " likewise"
    log.info(
        "model.in_chans: %s takes %d channels, the recipe %d: its patch embedding is %s (timm's adapt_input_conv)%s",
        public.name, base, chans, how, head,
    )  # fmt: skip


def _spread_rows(tensor: torch.Tensor, base: int, chans: int) -> torch.Tensor:
    """(S·C)×... rows, C last -> (S·C')×...: the mean over C for C' = 1, else C repeated and cut to C'."""
    rows = tensor.reshape(-1, base, *tensor.shape[1:])  # S×C×...
    if chans == 1:
        rows = rows.mean(dim=1, keepdim=True)
    else:
        rows = rows.repeat(1, math.ceil(chans / base), *[1] * (tensor.dim() - 1))[:, :chans]
    return rows.reshape(-1, *tensor.shape[1:])


def _adapt_positions(state: dict[str, torch.Tensor], public: PublicWeights, model: ModelConfig, fixed: bool) -> None:
    """Another input size: fixed tables are recomputed by the run's model; a learned 2-D table is resampled."""
    old = [s // p for s, p in zip(public.input_size, model.patch_size)]
    new = [s // p for s, p in zip(model.input_size, model.patch_size)]
    trained = f"{public.name} was trained on {public.input_size} ({'×'.join(map(str, old))} tokens)"
    takes = f"the recipe takes {model.input_size} ({'×'.join(map(str, new))})"
    if fixed:
        log.info("model.input_size: %s, %s: its fixed %s positions are recomputed", trained, takes, model.pos_embed)
        return
    if len(old) != 2 or len(new) != 2:
        raise ConfigError(f"model.input_size: {trained}, {takes}; learned positions are resampled in 2-D only")
    state["pos.table"] = resample_abs_pos_embed(state["pos.table"], new, old, num_prefix_tokens=0)
    how = "its learned positions are resampled (timm's resample_abs_pos_embed)"
    log.info("model.input_size: %s, %s: %s", trained, takes, how)
