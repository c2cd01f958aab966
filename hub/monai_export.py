"""The encoder of a 2D or 3D ``MaskedAutoencoder`` as MONAI's ``ViT``, the backbone of ``UNETR``.

Key names follow MONAI. Our tokenizer is a Linear over patch vectors flattened (p1, ..., pn, C), channel
last: MONAI's ``perceptron`` patch embedding flattens patches in that same order, so the weight carries over
as it is; its ``conv`` embedding (the default, and UNETR's) takes it reshaped and permuted to D×C×p1×...×pn.
Our blocks are timm's: ``attn.proj`` becomes ``attn.out_proj`` and ``mlp.fc1``/``fc2`` ``mlp.linear1``/``2``;
the fused qkv has MONAI's layout (q, k, v, each head after head). MONAI builds a ``norm_cross_attn`` in
every block even without cross-attention; it is never used and is written as ones and zeros.

Three things differ from mimsdk, and the export says how each is handled:

- positions: MONAI's 3D ``sincos`` table is not ours (its 2D one is MAE's, as ours), so our table (sin-cos,
  learned or VideoMAE's) is written as the ``position_embeddings`` of ``pos_embed_type="learnable"``, the one
  kind UNETR builds. MONAI computes a table only when the ViT is built, never on load, so the loaded one stays;
- the class token: MONAI's ViT (``classification=False``) and UNETR have none. A model with
  ``model.class_token`` exports without it, with a warning, and its MONAI features differ from ``encode``;
  without one (the radiology recipes) ``vit(x)[0]`` equals ``model.encode(x)`` and ``hidden_states_out[i]``
  equals ``model.features(x, layers=[i])`` to 1e-5 (of their size: the residual stream grows with depth);
- LayerNorm eps: MONAI's TransformerBlock and ViT fix nn.LayerNorm's 1e-5, mimsdk uses 1e-6.
  :func:`monai_vit` and :func:`unetr` set 1e-6 on every LayerNorm of the ViT; a ViT built by hand from
  ``monai_args.json`` keeps 1e-5, and its features differ by about 1e-5 (the helpers': 2e-6; measured in the tests).

MONAI's UNETR fixes 16-pixel patches and 12 blocks (it reads blocks 3, 6 and 9 for its skips), so only such
an encoder (the radiology-ct and radiology-mri recipes: 96³, ViT-B/16; chest-xray: 224², ViT-S/16) becomes a
UNETR; any other (the tiny recipes: patch 8, 4 blocks) still exports as a ViT.

The folder: ``model.safetensors`` (the ViT's state dict), ``monai_args.json`` (``vit``: ViT's keyword
arguments; ``unetr``: UNETR's but ``out_channels``, or null; the position kind; the MONAI transforms that
prepare a file as pre-training did) and ``README.md``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mimsdk.atomic import atomic_dir
from mimsdk.hub.errors import ExportError, require_patch_tokenizer
from mimsdk.hub.export_card import export_card, write_export_card
from mimsdk.hub.monai_transforms import ARGS_NAME, call_text, monai_transforms_spec
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import WEIGHTS_NAME

log = logging.getLogger(__name__)

LAYER_NORM_EPS = 1e-6  # mimsdk's (timm's ViT and MAE's); MONAI's blocks and final norm keep nn.LayerNorm's 1e-5
PROJ_TYPES = ("conv", "perceptron")
UNETR_PATCH, UNETR_DEPTH = 16, 12  # fixed inside MONAI's UNETR, which takes blocks 3, 6 and 9 for its skips
# UNETR's arguments that the encoder fixes; the others (feature_size, norm_name, ...) are the caller's
UNETR_FIXED = ("in_channels", "img_size", "hidden_size", "mlp_dim", "num_heads", "proj_type", "spatial_dims",
               "qkv_bias")  # fmt: skip
# timm Block module -> MONAI TransformerBlock module
BLOCK_NAMES = {
    "norm1": "norm1",
    "attn.qkv": "attn.qkv",
    "attn.proj": "attn.out_proj",
    "norm2": "norm2",
    "mlp.fc1": "mlp.linear1",
    "mlp.fc2": "mlp.linear2",
}


def _check(model: MaskedAutoencoder, proj_type: str = "conv") -> None:
    """Refuse, before anything is written, what MONAI's ViT cannot hold: other tokens than patches, not 2D or 3D."""
    require_patch_tokenizer(model, "MONAI", "MONAI's ViT", dims="2D and 3D")
    cfg = model.config
    if len(cfg.input_size) not in (2, 3):
        raise ExportError(
            f"MONAI's ViT takes 2D or 3D inputs; this model is {len(cfg.input_size)}D (input_size {cfg.input_size})"
        )
    if proj_type not in PROJ_TYPES:
        raise ExportError(f"proj_type {proj_type!r}; expected one of {', '.join(PROJ_TYPES)}")


def monai_vit_args(model: MaskedAutoencoder, proj_type: str = "conv") -> dict[str, Any]:
    """Keyword arguments of ``monai.networks.nets.ViT`` that rebuild the encoder (no class token, no head)."""
    _check(model, proj_type)
    cfg = model.config
    dim, depth, heads = cfg.width
    return {
        "in_channels": cfg.in_chans,
        "img_size": list(cfg.input_size),
        "patch_size": list(cfg.patch_size),
        "hidden_size": dim,
        "mlp_dim": int(dim * cfg.mlp_ratio),  # timm's Mlp width
        "num_layers": depth,
        "num_heads": heads,
        "proj_type": proj_type,
        "pos_embed_type": "learnable",  # holds our table; MONAI's 3D sincos table is another one
        "spatial_dims": len(cfg.input_size),
        "qkv_bias": True,
        "classification": False,
    }


def unetr_refusal(vit_args: dict[str, Any]) -> str | None:
    """Why MONAI's UNETR cannot hold the encoder of ``vit_args`` (one line), or None when it can."""
    if any(p != UNETR_PATCH for p in vit_args["patch_size"]) or vit_args["num_layers"] != UNETR_DEPTH:
        return (
            f"MONAI's UNETR fixes patch_size {UNETR_PATCH} and {UNETR_DEPTH} blocks; this encoder has patch_size "
            f"{vit_args['patch_size']} and {vit_args['num_layers']} blocks, so only its ViT exports (monai_vit)"
        )
    return None


def unetr_args(vit_args: dict[str, Any]) -> dict[str, Any] | None:
    """Keyword arguments of ``monai.networks.nets.UNETR`` but ``out_channels``; None where UNETR cannot hold it.

    ``feature_size`` is UNETR's default (16), a hint the caller may change.
    """
    if unetr_refusal(vit_args):
        return None
    fixed = {key: vit_args[key] for key in UNETR_FIXED}
    return {**fixed, "feature_size": 16}


def monai_args(model: MaskedAutoencoder, proj_type: str = "conv") -> dict[str, Any]:
    """The content of ``monai_args.json``: ViT's and UNETR's arguments, positions, class token, preparation."""
    vit = monai_vit_args(model, proj_type)
    return {
        "vit": vit,
        "unetr": unetr_args(vit),
        "pos_embed": model.config.pos_embed,  # ours, written as MONAI's learnable table
        "class_token_dropped": bool(model.encoder.num_prefix),
        "layer_norm_eps": LAYER_NORM_EPS,
        "transforms": monai_transforms_spec(model),
    }


@torch.no_grad()
def monai_state_dict(model: MaskedAutoencoder, proj_type: str = "conv") -> dict[str, torch.Tensor]:
    """The encoder's weights under MONAI ViT's key names (``classification=False``: no class token).

    A model with a class token loses it, with a warning: MONAI's features then differ from ``encode``.
    """
    _check(model, proj_type)
    cfg = model.config
    tok, enc = model.tokenizer, model.encoder
    if enc.num_prefix:
        log.warning(
            "model.class_token is True but MONAI's ViT has no class token: it is left out, so MONAI's features "
            "will differ from model.encode (pre-train with model.class_token: false for an exact export)"
        )
    weight, n = tok.proj.weight, len(cfg.patch_size)  # D×P, P = (p1..pn, C)
    if proj_type == "conv":
        weight = weight.reshape(-1, *cfg.patch_size, cfg.in_chans).permute(0, n + 1, *range(1, n + 1))  # D×C×p1..pn
        embed = "patch_embedding.patch_embeddings"
    else:  # Rearrange then Linear: the same patch vectors as ours
        embed = "patch_embedding.patch_embeddings.1"
    out = {
        f"{embed}.weight": weight,
        f"{embed}.bias": tok.proj.bias,
        "patch_embedding.position_embeddings": model.pos(),  # 1×L×D
        "norm.weight": enc.norm.weight,
        "norm.bias": enc.norm.bias,
    }
    dim = enc.dim
    for i, block in enumerate(enc.blocks):
        for key, value in block.state_dict().items():
            module, leaf = key.rsplit(".", 1)
            out[f"blocks.{i}.{BLOCK_NAMES[module]}.{leaf}"] = value
        # built by MONAI whether or not cross-attention is used, and unused without it
        out[f"blocks.{i}.norm_cross_attn.weight"] = torch.ones(dim)
        out[f"blocks.{i}.norm_cross_attn.bias"] = torch.zeros(dim)
    return {k: v.detach().float().cpu().contiguous().clone() for k, v in out.items()}


def set_layer_norm_eps(module: nn.Module, eps: float = LAYER_NORM_EPS) -> nn.Module:
    """Give every LayerNorm in ``module`` mimsdk's eps (MONAI cannot be told it); returns ``module``."""
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = eps
    return module


def _build_vit(vit_args: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """MONAI's ViT from its arguments, mimsdk's eps, ``state`` loaded with strict keys."""
    from monai.networks.nets import ViT

    vit = set_layer_norm_eps(ViT(**vit_args))
    vit.load_state_dict(state, strict=True)
    return vit


def export_monai(model: MaskedAutoencoder, out_dir: str | Path, proj_type: str = "conv") -> Path:
    """Write model.safetensors + monai_args.json + README.md to ``out_dir`` (a new or empty folder), atomically.

    ``proj_type``: MONAI's patch embedding, ``"conv"`` (UNETR's default) or ``"perceptron"``; both hold our
    weights exactly. The weights are loaded into a MONAI ViT, strictly, before anything is written.
    Raises :class:`~mimsdk.hub.errors.ExportError` (one line) for a model with no MONAI export.
    """
    _check(model, proj_type)
    out_dir = Path(out_dir)
    args = monai_args(model, proj_type)
    state = monai_state_dict(model, proj_type)
    _build_vit(args["vit"], state)  # the card says the keys load strictly: they did
    card = export_card(model, "MONAI", how_to_load(args, out_dir), card_notes(model, args))
    with atomic_dir(out_dir) as staging:
        save_file(state, str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        (staging / ARGS_NAME).write_text(json.dumps(args, indent=2))
        write_export_card(staging, card)
    return out_dir


def _args_and_state(source: str | Path | MaskedAutoencoder) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """monai_args.json and the ViT's state dict of a MONAI export folder, or made in memory from a model (or
    anything ``load_model`` takes: a run directory, a model directory, a Hub id)."""
    if isinstance(source, MaskedAutoencoder):
        return monai_args(source), monai_state_dict(source)
    folder = Path(source).expanduser()
    if (folder / ARGS_NAME).is_file():
        return json.loads((folder / ARGS_NAME).read_text()), load_file(str(folder / WEIGHTS_NAME))
    from mimsdk.hub.pretrained import load_model

    model = load_model(source)
    return monai_args(model), monai_state_dict(model)


def monai_vit(source: str | Path | MaskedAutoencoder) -> nn.Module:
    """MONAI's ``ViT`` (eval mode) from a MONAI export folder, a model, or anything ``load_model`` takes.

    Built from ``monai_args.json``'s ``vit`` arguments with LayerNorm eps 1e-6 (mimsdk's; a ViT built by hand
    keeps MONAI's 1e-5 and differs slightly), weights loaded with strict keys. ``vit(x)`` gives
    (B×L×D normalised tokens, [B×L×D per block, before the norm]).
    """
    args, state = _args_and_state(source)
    return _build_vit(args["vit"], state).eval()


def unetr(source: str | Path | MaskedAutoencoder, out_channels: int, **kwargs: Any) -> nn.Module:
    """MONAI's ``UNETR`` whose ``.vit`` is the pre-trained encoder (strict keys, LayerNorm eps 1e-6).

    Args:
        source: a MONAI export folder, a model, or anything ``load_model`` takes (exported in memory).
        out_channels: segmentation classes.
        kwargs: UNETR's own arguments (``feature_size``, ``norm_name``, ``res_block``, ``dropout_rate``...);
            those the encoder fixes (``hidden_size``, ``img_size``...) are refused.

    Shapes: B×C×S1..Sn -> B×out_channels×S1..Sn. Returned in train mode, ready to fine-tune.
    Raises :class:`~mimsdk.hub.errors.ExportError` for an encoder UNETR cannot hold (patch 16, 12 blocks).
    """
    from monai.networks.nets import UNETR

    args, state = _args_and_state(source)
    refusal = unetr_refusal(args["vit"])
    if refusal:
        raise ExportError(refusal)
    fixed = sorted(set(kwargs) & set(UNETR_FIXED))
    if fixed:
        raise ValueError(f"unetr: {', '.join(fixed)} is fixed by the pre-trained encoder; leave it out")
    net = UNETR(out_channels=out_channels, **{**args["unetr"], **kwargs})
    set_layer_norm_eps(net.vit)
    net.vit.load_state_dict(state, strict=True)
    return net


def how_to_load(args: dict[str, Any], out_dir: Path) -> str:
    """The card's snippet, top to bottom: with mimsdk's helpers, then with MONAI alone."""
    out, vit, spec = str(out_dir), args["vit"], args["transforms"]
    lines = ["from mimsdk.hub.monai_export import monai_vit, unetr"]
    lines += ["from mimsdk.hub.monai_transforms import monai_transforms", ""] if spec else [""]
    if spec:
        lines += [
            f'prepare = monai_transforms("{out}")  # the MONAI transforms listed below',
            'x = prepare({"image": "scan.nii.gz"})["image"][None]  # 1×C×S1..Sn, as in pre-training',
        ]
    else:
        shape = ", ".join(map(str, [1, vit["in_channels"], *vit["img_size"]]))
        lines += ["import torch", "", f"x = torch.rand({shape})  # your inputs, prepared as the table below says"]
    lines += [
        f'vit = monai_vit("{out}")  # monai.networks.nets.ViT, strict keys, LayerNorm eps 1e-6 as pre-trained',
        "tokens, hidden_states_out = vit(x)  # B×L×D after the final norm; one B×L×D per block, before it",
    ]
    if args["unetr"] is not None:
        lines.append(f'net = unetr("{out}", out_channels=2)  # UNETR with this encoder as .vit, to fine-tune')
    names = ", ".join(sorted({"Compose", *(name for name, _ in spec)}))
    lines += [
        "",
        "# MONAI alone (LayerNorm eps stays 1e-5: features differ slightly, see Notes)",
        "import json",
        "",
        "from monai.networks.nets import UNETR, ViT",
        *([f"from monai.transforms import {names}"] if spec else []),
        "from safetensors.torch import load_file",
        "",
        f'args = json.load(open("{out}/monai_args.json"))',
        f'weights = load_file("{out}/model.safetensors")',
        'vit = ViT(**args["vit"])',
        "vit.load_state_dict(weights, strict=True)",
    ]
    if args["unetr"] is not None:
        lines += ['net = UNETR(out_channels=2, **args["unetr"])', "net.vit.load_state_dict(weights, strict=True)"]
    if spec:
        steps = "".join(f"    {call_text(name, kwargs)},\n" for name, kwargs in spec)
        lines.append(f"prepare = Compose([\n{steps}])")
    return "\n".join(lines)


def card_notes(model: MaskedAutoencoder, args: dict[str, Any]) -> list[str]:
    """One line each: class token, LayerNorm eps, positions, patch embedding, UNETR."""
    vit = args["vit"]
    if args["class_token_dropped"]:
        token = (
            "The model was pre-trained with a class token (model.class_token), which MONAI's ViT lacks: it was "
            "left out, so MONAI's features differ from mimsdk's encode."
        )
    else:
        token = (
            "No class token, as in MONAI's ViT: vit(x)[0] equals mimsdk's model.encode(x), and "
            "hidden_states_out[i] equals model.features(x, layers=[i]) as B×L×D (to about 1e-5)."
        )
    notes = [
        token,
        "LayerNorm eps: mimsdk uses 1e-6; MONAI's TransformerBlock and ViT fix 1e-5. monai_vit and unetr set 1e-6 "
        "on every LayerNorm of the ViT; a ViT built by hand keeps 1e-5, and its features differ slightly "
        "(by about 1e-5 where the helpers' differ by 2e-6, in mimsdk's tests).",
        f"Positions: the model's own {args['pos_embed']!r} table, held by MONAI's learnable position_embeddings "
        "(pos_embed_type 'learnable'), which fine-tuning trains as MAE's does; MONAI's own 3D 'sincos' table is "
        "another.",
        f"Patch embedding: MONAI's {vit['proj_type']!r} layer (proj_type), holding the linear patch embedding of "
        "pre-training.",
    ]
    if args["transforms"] and vit["spatial_dims"] == 2:
        notes.append(
            "The transforms read PNG or JPEG as pre-training did (PILReader with reverse_indexing=False: rows "
            "first); for a DICOM file use LoadImaged(keys='image', reader='PydicomReader', swap_ij=False), and "
            "average an X-ray saved as RGB to one channel."
        )
    refusal = unetr_refusal(vit)
    notes.append(refusal + "." if refusal else "UNETR: UNETR(out_channels=N, **args['unetr']) takes this encoder.")
    return notes
