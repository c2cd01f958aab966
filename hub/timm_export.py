"""The encoder of a 2D ``MaskedAutoencoder`` as a timm ``VisionTransformer``, for timm, TorchGeo and TerraTorch.

Key names follow timm. Our tokenizer is a Linear over (p, q, C)-ordered patch vectors; timm's
``patch_embed.proj`` is a Conv2d with weight D×C×p×q, so the weight is reshaped and permuted (as
for transformers); images and patches may be non-square (48×32, patch 8×4) and C any count (13
Sentinel-2 bands, 1-channel X-rays). With a class token, timm's ``pos_embed`` has a row for it, zero
as in MAE (``no_embed_class=False``, the layout of timm's and TorchGeo's ``vit_*_patch16_224``); a
model with ``class_token: false`` exports as timm's ``class_token=False`` with no such row. The blocks
are timm's own, so their keys carry over. Our final norm is timm's ``norm`` with ``global_pool='avg'``
and ``fc_norm=False``: then ``forward_features(x)`` equals ``model.encode(x)`` (all tokens, normed),
``forward(x)`` with ``num_classes=0`` equals ``model.features(x)`` (mean of the patch tokens), and
``forward_intermediates(x, indices, norm=False, output_fmt='NCHW', intermediates_only=True)`` equals
``model.features(x, layers=indices)`` (block outputs as B×D×H'×W' grids).

The export folder is in timm's own Hub layout, plus a README.md (the data facts and how to load it):

- ``config.json``: ``architecture``, ``model_args`` and ``pretrained_cfg`` (timm's; ``mean``, ``std`` and
  ``input_size`` are the normalisation and C×H×W of pre-training). ``pretrained_cfg`` holds only timm's
  ``PretrainedCfg`` fields, because timm builds that dataclass from it (an unknown key is a TypeError);
  recent TorchGeo's ``Weights`` subclass it, so ``Weights(**cfg["pretrained_cfg"], meta=cfg["meta"])``.
  Its ``first_conv`` is unset on purpose: timm then never adapts the patch embedding to another channel
  count (it would repeat or drop bands' weights), so a different ``in_chans`` fails to load instead of
  running on the wrong bands.
- ``config.json`` ``meta`` (top level, which timm ignores): TorchGeo's ``Weights.meta`` keys, ``model``,
  ``in_chans``, ``img_size``, ``ssl_method`` and ``bands`` (band or channel names in input order; TerraTorch
  takes the same list as a backbone's ``pretrained_bands``), plus, when the model's metadata has them,
  ``wavelengths`` (centres in µm, as TorchGeo's and TerraTorch's DOFA take them; the README lists nm),
  ``gsd`` (each band's native ground sample distance, m) and ``resolution`` (the pixel size of the data
  pre-trained on, the metadata's ``spacing``: metres on the ground, or the data's own unit, mm for X-rays).
- ``model.safetensors``: the encoder, no classifier.

Either of these loads it, with strict keys::

    timm.create_model("local-dir:OUT", pretrained=True)
    load_timm("OUT", bands=[...], num_classes=10)   # checks the data's bands; a fresh head, strict keys

(timm's own loader drops the head and loads non-strictly when ``num_classes`` differs from the file's 0;
:func:`load_timm` loads strictly at 0 and then lets timm make a fresh head.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from mimsdk.atomic import atomic_dir
from mimsdk.hub.errors import ExportError, require_patch_tokenizer
from mimsdk.hub.export_card import export_card, write_export_card
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import CONFIG_NAME, WEIGHTS_NAME

# timm entry points by ViT size; model_args set every dimension, so the name only picks the family.
ARCHITECTURES = {
    "tiny": "vit_tiny_patch16_224",
    "small": "vit_small_patch16_224",
    "base": "vit_base_patch16_224",
    "large": "vit_large_patch16_224",
    "huge": "vit_huge_patch14_224",
}
# model_args a caller of load_timm may change: they leave every exported weight's shape and meaning as it was.
FREE_ARGS = {"global_pool", "num_classes"}

HOW_TO_LOAD = """\
import timm

vit = timm.create_model("local-dir:{out}", pretrained=True)  # strict keys; forward_features = mimsdk's encode
# fine-tuning: the encoder with strict keys and a fresh 10-class head{checked}
from mimsdk.hub.timm_export import load_timm
vit = load_timm("{out}"{bands}, num_classes=10)"""


class ExportMismatchError(ValueError):
    """A caller's bands, channel count or model arguments that differ from an export's; the message names both."""


def _check(model: MaskedAutoencoder) -> None:
    """Refuse, before anything is written, a model timm's ViT cannot hold: other tokens than patches, not 2D."""
    cfg = model.config
    architecture = "a plain timm ViT"
    if cfg.tokenizer == "channel_groups":  # the band-group model has a plain-ViT twin recipe
        architecture += " (for a timm ViT over bands, pre-train with the sentinel2-vit recipe: one patch tokenizer)"
    require_patch_tokenizer(model, "timm", architecture)
    if len(cfg.input_size) != 2:
        raise ExportError(
            f"timm's VisionTransformer takes 2D images; this model is {len(cfg.input_size)}D "
            f"(input_size {cfg.input_size}, patch_size {cfg.patch_size}), so it has no timm export"
        )
    bands = _band_names(model)
    if bands is not None and len(bands) != cfg.in_chans:
        raise ExportError(
            f"timm export: the model's metadata names {len(bands)} bands ({', '.join(bands)}) for its "
            f"{cfg.in_chans} input channels (model.in_chans); expected one name per channel"
        )


def _band_names(model: MaskedAutoencoder) -> list[str] | None:
    """The input's channels by name, in order: the metadata's bands, else its channel names, else None."""
    meta = model.config.metadata
    names = meta.get("bands") or meta.get("channel_names")
    return [str(b) for b in names] if names else None


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
        "class_token": cfg.class_token,
        "no_embed_class": False,  # with a class token, pos_embed has its (zero) row, as MAE's
        "global_pool": "avg",
        "fc_norm": False,
        "num_classes": 0,
    }


def timm_pretrained_cfg(model: MaskedAutoencoder) -> dict[str, Any]:
    """timm's pretrained_cfg: input size, normalisation (from the adapter's metadata), no classifier.

    Only ``timm.models.PretrainedCfg`` fields: timm builds the dataclass from this dict.
    """
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
        "first_conv": None,  # timm adapts no patch embedding to another in_chans: a mismatch fails to load
        "classifier": "head",
    }


def timm_meta(model: MaskedAutoencoder) -> dict[str, Any]:
    """TorchGeo's ``Weights.meta`` for this export: the model, its input, and its bands' facts when known."""
    cfg, facts = model.config, model.config.metadata
    meta: dict[str, Any] = {
        "model": timm_architecture(model),
        "in_chans": cfg.in_chans,
        "img_size": list(cfg.input_size),
        "ssl_method": "mae",
        "modality": cfg.modality,
    }
    bands = _band_names(model)
    if bands:
        meta["bands"] = bands
    if facts.get("wavelengths"):
        meta["wavelengths"] = [round(w / 1000, 6) for w in facts["wavelengths"]]  # nm -> µm, DOFA's unit
    if facts.get("gsd"):
        meta["gsd"] = list(facts["gsd"])
    if facts.get("spacing") is not None:
        meta["resolution"] = facts["spacing"]
    return meta


def timm_config(model: MaskedAutoencoder) -> dict[str, Any]:
    """The export's config.json: timm's Hub layout plus TorchGeo's ``meta``."""
    return {
        "architecture": timm_architecture(model),
        "num_classes": 0,
        "num_features": model.config.width[0],
        "global_pool": "avg",
        "model_args": timm_model_args(model),
        "pretrained_cfg": timm_pretrained_cfg(model),
        "meta": timm_meta(model),
    }


@torch.no_grad()
def timm_state_dict(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """The encoder's weights under timm VisionTransformer's key names (no ``cls_token`` without a class token)."""
    _check(model)
    cfg = model.config
    (p, q), c = cfg.patch_size, cfg.in_chans
    tok, enc = model.tokenizer, model.encoder
    pos = model.pos()  # 1×L×D
    out = {
        "pos_embed": pos,
        "patch_embed.proj.weight": tok.proj.weight.reshape(-1, p, q, c).permute(0, 3, 1, 2),  # D×C×p×q
        "patch_embed.proj.bias": tok.proj.bias,
        "norm.weight": enc.norm.weight,
        "norm.bias": enc.norm.bias,
    }
    if cfg.class_token:
        out["cls_token"] = enc.cls_token
        out["pos_embed"] = torch.cat([pos.new_zeros(1, 1, pos.shape[2]), pos], dim=1)  # class-token row is zero
    out |= {f"blocks.{k}": v for k, v in enc.blocks.state_dict().items()}
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def timm_card(model: MaskedAutoencoder, out_dir: str | Path) -> str:
    """The export's README.md: how to load it in timm, TorchGeo and TerraTorch, and the data facts."""
    bands = _band_names(model)
    notes = [
        "`forward_features(x)` equals mimsdk's `model.encode(x)` and `forward_intermediates(x, indices, "
        "norm=False, output_fmt='NCHW', intermediates_only=True)` its `model.features(x, layers=indices)`.",
        "Normalise with `pretrained_cfg` mean and std, then set NaN (no data) to 0: mimsdk does both itself, "
        "timm does neither.",
        "`config.json` `meta` holds TorchGeo's `Weights.meta` keys (`bands`, `in_chans`, `img_size`, `model`, "
        "`ssl_method`) and, when known, `wavelengths` (µm), `gsd` (m) and `resolution` (the pixel size).",
    ]
    if bands:
        notes.append(
            "Feed exactly these channels in this order. timm will not adapt the patch embedding to another "
            "channel count, and `load_timm(..., bands=...)` refuses another list; TerraTorch takes `meta.bands` "
            "as `pretrained_bands` (it would start bands the export lacks from random weights)."
        )
    checked = "; your data's bands checked (never padded)" if bands else ""
    how = HOW_TO_LOAD.format(out=out_dir, checked=checked, bands=f", bands={json.dumps(bands)}" if bands else "")
    return export_card(model, "timm (TorchGeo, TerraTorch)", how, notes)


def _verify(config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` strictly into the timm model ``config`` describes, built on the meta device (no memory)."""
    import timm

    with torch.device("meta"):
        vit = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
    try:
        vit.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:  # a bug of this exporter, said in one line like every export error
        reason = " ".join(str(err).split())
        raise ExportError(f"timm export: the weights do not load strictly into timm's model: {reason}") from err


def export_timm(model: MaskedAutoencoder, out_dir: str | Path) -> Path:
    """Write config.json, model.safetensors and README.md for timm to ``out_dir`` (a new or empty folder), atomically.

    The weights are checked to load into timm's model with strict keys before anything is written. Raises
    :class:`~mimsdk.hub.errors.ExportError` (one line) for a model with no timm export.
    """
    _check(model)
    out_dir = Path(out_dir)
    config, state, card = timm_config(model), timm_state_dict(model), timm_card(model, out_dir)
    _verify(config, state)
    with atomic_dir(out_dir) as staging:
        save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        write_export_card(staging, card)
    return out_dir


def read_config(out_dir: str | Path) -> dict[str, Any]:
    """A timm export's config.json."""
    return json.loads((Path(out_dir) / CONFIG_NAME).read_text())


def check_bands(out_dir: str | Path, bands: Sequence[str]) -> list[str]:
    """The export's bands, once checked equal to ``bands`` (the caller's data, in channel order).

    A different list, order or length raises :class:`ExportMismatchError` naming both lists: a missing band is
    never filled in (a zero band is data the encoder never saw), nor an extra one dropped.
    """
    want, have = read_config(out_dir).get("meta", {}).get("bands"), [str(b) for b in bands]
    if not want:
        raise ExportMismatchError(
            f"{out_dir}: config.json names no bands (meta.bands), so bands {', '.join(have)} cannot be checked; "
            "load it without bands"
        )
    if have == want:
        return want
    missing, extra = [b for b in want if b not in have], [b for b in have if b not in want]
    problem = (
        f"it lacks {', '.join(missing)}, which are never filled in"
        if missing
        else f"extra bands {', '.join(extra)}"
        if extra
        else "the same bands in another order"
    )
    raise ExportMismatchError(
        f"data bands {', '.join(have)} differ from the export's {', '.join(want)} (meta.bands in {out_dir}): "
        f"{problem}; select and order your data's channels as the export's"
    )


def _check_args(config: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """Refuse keyword arguments that would change an exported weight's shape or meaning (in_chans above all)."""
    fixed = config["model_args"]
    for key, value in kwargs.items():
        if key in fixed and key not in FREE_ARGS and value != fixed[key]:
            why = " (timm would repeat or drop bands' weights)" if key == "in_chans" else ""
            raise ExportMismatchError(
                f"load_timm: {key}={value!r} differs from the export's {fixed[key]!r} (model_args.{key}){why}; "
                f"give data that fits the export instead"
            )


def load_timm(
    out_dir: str | Path, bands: Sequence[str] | None = None, num_classes: int = 0, **kwargs: Any
) -> torch.nn.Module:
    """The exported encoder as a timm ``VisionTransformer`` (eval mode), loaded by timm with strict keys.

    ``bands``: the caller's data's band names in channel order, checked against the export's
    (:func:`check_bands`). ``num_classes`` > 0 adds a fresh linear head (timm's ``reset_classifier``) after
    the strict load, for fine-tuning. Other keywords go to ``timm.create_model`` (e.g. ``drop_path_rate``);
    one that changes the exported architecture (``in_chans``, ``img_size``, ...) is refused.
    """
    import timm

    out_dir = Path(out_dir)
    if bands is not None:
        check_bands(out_dir, bands)
    cfg = read_config(out_dir)
    _check_args(cfg, kwargs)
    overlay = dict(cfg["pretrained_cfg"], file=str(out_dir / WEIGHTS_NAME))
    args = {**cfg["model_args"], **kwargs, "num_classes": 0}  # strict at the file's 0 classes
    model = timm.create_model(cfg["architecture"], pretrained=True, pretrained_cfg_overlay=overlay, **args)
    if num_classes:
        model.reset_classifier(num_classes)
    return model.eval()
