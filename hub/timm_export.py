"""The encoder of a 2D ``MaskedAutoencoder`` as a timm ``VisionTransformer``.

Key names follow timm. Our tokenizer is a Linear over (p, q, C)-ordered patch vectors; timm's
``patch_embed.proj`` is a Conv2d with weight D×C×p×q, so the weight is reshaped and permuted (as
for transformers). timm's ``pos_embed`` has a row for the class token, zero in MAE. The blocks are
timm's own, so their keys carry over. Our final norm is timm's ``norm`` with ``global_pool='avg'``
and ``fc_norm=False``: then ``forward_features(x)`` equals ``model.encode(x)`` (all tokens, normed)
and ``forward(x)`` with ``num_classes=0`` equals ``model.features(x)`` (mean of the patch tokens).

The export folder is in timm's own Hub layout (``config.json`` with ``architecture``,
``model_args`` and ``pretrained_cfg``, plus ``model.safetensors``), so either of these loads it,
with strict keys::

    timm.create_model("local-dir:OUT", pretrained=True)
    cfg = json.load(open("OUT/config.json"))
    timm.create_model(cfg["architecture"], pretrained=True,
                      pretrained_cfg_overlay=dict(cfg["pretrained_cfg"], file="OUT/model.safetensors"),
                      **cfg["model_args"])

(``pretrained_cfg`` is passed whole: it sets ``num_classes=0``, which keeps timm's load strict,
and ``custom_load=False`` and the input size, which override the architecture's defaults.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mimsdk.atomic import atomic_dir
from mimsdk.hub.errors import ExportError, require_patch_tokenizer
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import WEIGHTS_NAME

# timm entry points by ViT size; model_args set every dimension, so the name only picks the family.
ARCHITECTURES = {
    "tiny": "vit_tiny_patch16_224",
    "small": "vit_small_patch16_224",
    "base": "vit_base_patch16_224",
    "large": "vit_large_patch16_224",
    "huge": "vit_huge_patch14_224",
}


def _check(model: MaskedAutoencoder) -> None:
    """Refuse, before anything is written, a model timm's ViT cannot hold: other tokens than patches, not 2D."""
    require_patch_tokenizer(model, "timm", "a timm ViT")
    cfg = model.config
    if len(cfg.input_size) != 2:
        raise ExportError(
            f"timm's VisionTransformer takes 2D images; this model is {len(cfg.input_size)}D "
            f"(input_size {cfg.input_size}, patch_size {cfg.patch_size}), so it has no timm export"
        )


def timm_architecture(model: MaskedAutoencoder) -> str:
    """A timm model name for ``model``: the exact one when it exists (vit_base_patch16_224), else its family's."""
    import timm

    cfg = model.config
    (h, w), (p, q) = cfg.input_size, cfg.patch_size
    exact = f"vit_{cfg.size}_patch{p}_{h}"
    if h == w and p == q and timm.is_model(exact):
        return exact
    return ARCHITECTURES[cfg.size]


def timm_model_args(model: MaskedAutoencoder) -> dict[str, Any]:
    """Keyword arguments of ``timm.create_model`` that rebuild the encoder exactly."""
    _check(model)
    cfg = model.config
    dim, depth, heads = cfg.width
    return {
        "img_size": list(cfg.input_size),
        "patch_size": list(cfg.patch_size),
        "in_chans": cfg.in_chans,
        "embed_dim": dim,
        "depth": depth,
        "num_heads": heads,
        "mlp_ratio": cfg.mlp_ratio,
        "qkv_bias": True,
        "class_token": True,
        "global_pool": "avg",
        "fc_norm": False,
        "num_classes": 0,
    }


def timm_pretrained_cfg(model: MaskedAutoencoder) -> dict[str, Any]:
    """timm's pretrained_cfg: input size, normalisation (from the adapter's metadata), no classifier."""
    cfg = model.config
    meta = cfg.metadata
    return {
        "architecture": timm_architecture(model),
        "tag": "mimsdk",
        "custom_load": False,
        "input_size": [cfg.in_chans, *cfg.input_size],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": list(meta.get("mean", [0.0] * cfg.in_chans)),
        "std": list(meta.get("std", [1.0] * cfg.in_chans)),
        "num_classes": 0,
        "pool_size": None,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    }


@torch.no_grad()
def timm_state_dict(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """The encoder's weights under timm VisionTransformer's key names."""
    _check(model)
    cfg = model.config
    (p, q), c = cfg.patch_size, cfg.in_chans
    tok, enc = model.tokenizer, model.encoder
    pos = model.pos()
    out = {
        "cls_token": enc.cls_token,
        "pos_embed": torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1),  # class-token row is zero
        "patch_embed.proj.weight": tok.proj.weight.reshape(-1, p, q, c).permute(0, 3, 1, 2),  # D×C×p×q
        "patch_embed.proj.bias": tok.proj.bias,
        "norm.weight": enc.norm.weight,
        "norm.bias": enc.norm.bias,
    }
    out |= {f"blocks.{k}": v for k, v in enc.blocks.state_dict().items()}
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def export_timm(model: MaskedAutoencoder, out_dir: str | Path) -> Path:
    """Write config.json + model.safetensors for timm to ``out_dir`` (a new or empty folder), atomically.

    Raises :class:`~mimsdk.hub.errors.ExportError` (one line) for a model with no timm export.
    """
    _check(model)
    out_dir = Path(out_dir)
    config = {
        "architecture": timm_architecture(model),
        "num_classes": 0,
        "num_features": model.config.width[0],
        "global_pool": "avg",
        "model_args": timm_model_args(model),
        "pretrained_cfg": timm_pretrained_cfg(model),
    }
    state = timm_state_dict(model)
    with atomic_dir(out_dir) as staging:
        save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2))
    return out_dir


def load_timm(out_dir: str | Path) -> torch.nn.Module:
    """The exported encoder as a timm model (eval mode), loaded by timm with strict keys."""
    import timm

    out_dir = Path(out_dir)
    cfg = json.loads((out_dir / "config.json").read_text())
    overlay = dict(cfg["pretrained_cfg"], file=str(out_dir / WEIGHTS_NAME))
    model = timm.create_model(cfg["architecture"], pretrained=True, pretrained_cfg_overlay=overlay, **cfg["model_args"])
    return model.eval()
