"""Public MAE weights as the start of a run: transformers' ViTMAE and VideoMAE, and timm's ViT.

:func:`read_public` takes a local directory or a Hub repo id and tells from its config.json what it holds:

- ``"model_type": "vit_mae"``: ``ViTMAEForPreTraining``, encoder and decoder;
- ``"model_type": "videomae"``: ``VideoMAEForPreTraining`` (encoder and decoder) or ``VideoMAEModel`` (encoder);
- ``"architecture"``: a ViT in timm's Hub layout, an encoder (a classifier head is dropped).

Anything else (a mimsdk model, a run directory) gives None, for :func:`~mimsdk.hub.load_model`. As for
mimsdk's own models, only config.json and model.safetensors are read; nothing is unpickled.

The architecture in config.json is checked against the recipe's before any weights are downloaded or any
model is built. The weights then come to mimsdk's names through the exports run backwards, so reading and
writing cannot drift apart: VideoMAE's own inverse (``state_dict_from_videomae``) and, for ViTMAE and timm,
whose exports only rename, split and reshape, :func:`invert_export`, which traces where each exported value
comes from. transformers checkpoints are read by transformers itself (``from_pretrained``, safetensors only),
because it renames the older key names that most published checkpoints still carry.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD  # VideoMAE un-normalises with these

from mimsdk.config import ModelConfig
from mimsdk.continued import PublicWeights, check_architecture
from mimsdk.errors import ConfigError
from mimsdk.hub.client import looks_local
from mimsdk.hub.errors import HubError
from mimsdk.hub.pretrained import download
from mimsdk.hub.timm_export import timm_state_dict
from mimsdk.hub.transformers_export import vitmae_state_dict
from mimsdk.hub.videomae_layout import state_dict_from_videomae
from mimsdk.model import MaskedAutoencoder, create_model
from mimsdk.serialization import CONFIG_NAME, WEIGHTS_NAME, check_size

log = logging.getLogger(__name__)

Export = Callable[[MaskedAutoencoder], dict[str, torch.Tensor]]
POSITIONS = ("pos.", "decoder.pos.")  # our position tables' keys
EXACT = 2**24  # float32 holds every integer up to here exactly: the labels invert_export traces


def read_public(
    source: str | Path, revision: str | None = None, recipe_model: ModelConfig | None = None
) -> PublicWeights | None:
    """The public MAE weights in ``source`` (a directory, or a Hub repo id at ``revision``), in mimsdk's terms.

    None when ``source`` holds no config.json of a public MAE (a mimsdk model, a run directory: for
    ``load_model``). With ``recipe_model``, its architecture must be the checkpoint's: a mismatch is refused,
    naming both, before any weights are downloaded.
    """
    local = looks_local(source)
    name = Path(source).expanduser().resolve().name if local else str(source)
    folder = Path(source).expanduser() if local else _fetch(str(source), revision, [CONFIG_NAME])
    if not (folder / CONFIG_NAME).is_file():
        return None
    config = _read_config(folder / CONFIG_NAME, name)
    kind = public_kind(config, name)
    if kind is None:
        return None
    try:
        public = DESCRIBE[kind](config, name)
    except KeyError as err:
        raise ConfigError(f"{name}: config.json has no {err} (a {kind} config names every dimension)") from None
    if recipe_model is not None:
        check_architecture(recipe_model, public)
    if not local:
        folder = _fetch(str(source), revision, [CONFIG_NAME, WEIGHTS_NAME])
    if not (folder / WEIGHTS_NAME).is_file():
        raise ConfigError(
            f"{name} has no {WEIGHTS_NAME}: mimsdk reads safetensors only, never a pickle (.bin, .pth); "
            "save it with safe_serialization=True"
        )
    public.state = CONVERT[kind](public, folder)
    log.info("read %s weights from %s", kind, name)
    return public


def public_kind(config: dict[str, Any], name: str) -> str | None:
    """``"vit_mae"``, ``"videomae"`` or ``"timm"`` from config.json's content; None for mimsdk's own."""
    model_type = config.get("model_type")
    if model_type in ("vit_mae", "videomae"):
        return model_type
    if model_type is not None:
        raise ConfigError(
            f"{name}: config.json's model_type {model_type!r} is not one a run starts from; expected "
            "'vit_mae' (ViTMAEForPreTraining), 'videomae', a timm ViT or a mimsdk model"
        )
    return "timm" if isinstance(config.get("architecture"), str) else None


def _fetch(repo_id: str, revision: str | None, files: list[str]) -> Path:
    try:
        return download(repo_id, revision=revision, files=files)
    except HubError as err:
        raise HubError(f"{repo_id} is not a local directory, and {err}") from None


def _read_config(path: Path, name: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{name}: {CONFIG_NAME} is not readable JSON: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{name}: {CONFIG_NAME} holds {type(config).__name__}, expected a mapping")
    return config


def _pair(value: int | list[int]) -> list[int]:
    return [int(value), int(value)] if isinstance(value, int) else [int(v) for v in value]


def _require(config: dict[str, Any], key: str, expected: Any, name: str, why: str) -> None:
    if config.get(key, expected) != expected:
        raise ConfigError(f"{name}: config.json's {key} is {config[key]!r}, expected {expected!r} ({why})")


def _mlp_ratios(config: dict[str, Any], name: str, decoder: bool) -> float:
    """The MLP width over the model width; mimsdk's decoder has the encoder's ratio, so a decoder must match it."""
    ratio = config["intermediate_size"] / config["hidden_size"]
    if decoder:
        theirs = config["decoder_intermediate_size"] / config["decoder_hidden_size"]
        if not math.isclose(theirs, ratio):
            raise ConfigError(
                f"{name}: decoder_intermediate_size/decoder_hidden_size is {theirs:g}, intermediate_size/"
                f"hidden_size {ratio:g}; mimsdk's decoder has the encoder's mlp_ratio"
            )
    return ratio


def _transformers_dims(config: dict[str, Any], name: str, decoder: bool) -> dict[str, Any]:
    """The architecture fields of a ViTMAE or VideoMAE config.json."""
    _require(config, "hidden_act", "gelu", name, "mimsdk's blocks use exact GELU")
    dims = {
        "embed_dim": config["hidden_size"],
        "depth": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "mlp_ratio": _mlp_ratios(config, name, decoder),
    }
    if decoder:
        dims |= {
            "decoder_dim": config["decoder_hidden_size"],
            "decoder_depth": config["decoder_num_hidden_layers"],
            "decoder_heads": config["decoder_num_attention_heads"],
        }
    return dims


# -- ViTMAE --------------------------------------------------------------------------------------


def _describe_vitmae(config: dict[str, Any], name: str) -> PublicWeights:
    if "ViTMAEModel" in (config.get("architectures") or []):
        raise ConfigError(f"{name} is a ViTMAEModel, with no decoder; a run starts from ViTMAEForPreTraining")
    _require(config, "qkv_bias", True, name, "mimsdk's attention has biases")
    architecture = _transformers_dims(config, name, decoder=True) | {"patch_size": _pair(config["patch_size"])}
    target = "norm_pix" if config.get("norm_pix_loss") else "pixels"
    settings = {"class_token": True, "pos_embed": "sincos", "decoder_embed_bias": True, "target": target}
    return PublicWeights(name, architecture, settings, _pair(config["image_size"]), config.get("num_channels", 3))


def _convert_vitmae(public: PublicWeights, folder: Path) -> dict[str, torch.Tensor]:
    from transformers import ViTMAEForPreTraining

    proxy = _proxy(public)
    fixed = {k: v.clone() for k, v in proxy.state_dict().items() if k.startswith(POSITIONS)}
    weights = _from_pretrained(ViTMAEForPreTraining, folder, public.name)
    state = invert_export(proxy, vitmae_state_dict, weights, public.name)
    # ViTMAE's tables are fixed sin-cos, zero in the class token's row; mimsdk recomputes them, so they must agree.
    rows = [weights["vit.embeddings.position_embeddings"][0, 0], weights["decoder.decoder_pos_embed"][0, 0]]
    tables = all(torch.allclose(state[k], v, atol=1e-5) for k, v in fixed.items())
    if not tables or any(bool(row.any()) for row in rows):
        raise ConfigError(f"{public.name}: its position tables are not the fixed 2-D sin-cos ones ViTMAE builds")
    return {k: v for k, v in state.items() if not k.startswith(POSITIONS)}  # the run recomputes them


def _from_pretrained(cls: Any, folder: Path, name: str) -> dict[str, torch.Tensor]:
    """A transformers model's weights under its current key names, read from safetensors by transformers itself."""
    model, info = cls.from_pretrained(folder, use_safetensors=True, output_loading_info=True)
    wrong = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
    if wrong or info["unexpected_keys"]:
        raise ConfigError(
            f"{name}: {WEIGHTS_NAME} does not fit its config.json: missing or misshapen {wrong[:3]}, "
            f"unexpected {sorted(info['unexpected_keys'])[:3]}"
        )
    return {k: v.detach().float() for k, v in model.state_dict().items()}


# -- VideoMAE ------------------------------------------------------------------------------------


def _describe_videomae(config: dict[str, Any], name: str) -> PublicWeights:
    decoder = "VideoMAEForPreTraining" in (config.get("architectures") or ["VideoMAEForPreTraining"])
    _require(config, "use_mean_pooling", False, name, "with mean pooling VideoMAE's encoder has no final norm")
    _require(config, "norm_pix_loss", True, name, "without it VideoMAE predicts un-normalised pixels")
    tubelet, patch = config.get("tubelet_size", 2), config["patch_size"]
    architecture = _transformers_dims(config, name, decoder) | {"patch_size": [tubelet, patch, patch]}
    settings: dict[str, Any] = {"class_token": False, "pos_embed": "sincos_index"}
    if decoder:
        settings |= {"decoder_embed_bias": False, "target": "norm_pix_per_channel"}
        if config.get("num_channels", 3) == 3:
            # VideoMAE adds its eps to the std of pixels it first un-normalises with ImageNet's std: in our units
            # (normalised input) that is 1e-6 / std per channel, so the loss stays its own to 1e-6.
            settings["target_options"] = {"eps": [1e-6 / s for s in IMAGENET_STD]}
    size = [config.get("num_frames", 16), *_pair(config["image_size"])]
    return PublicWeights(name, architecture, settings, size, config.get("num_channels", 3), encoder_only=not decoder)


def _convert_videomae(public: PublicWeights, folder: Path) -> dict[str, torch.Tensor]:
    from transformers import VideoMAEForPreTraining, VideoMAEModel

    cls = VideoMAEModel if public.encoder_only else VideoMAEForPreTraining
    weights = _from_pretrained(cls, folder, public.name)
    proxy = _proxy(public)
    try:
        state = state_dict_from_videomae(proxy, weights, decoder=not public.encoder_only)
    except (KeyError, ValueError) as err:
        raise ConfigError(f"{public.name}: {str(err).strip(chr(34))}") from None
    # The checkpoint's only: the run recomputes fixed tables, and an encoder-only start gets a fresh decoder.
    left = POSITIONS + (("decoder.",) if public.encoder_only else ())
    return {k: v for k, v in state.items() if not k.startswith(left)}


# -- timm ----------------------------------------------------------------------------------------


def _describe_timm(config: dict[str, Any], name: str) -> PublicWeights:
    """From the architecture timm builds for config.json (on the meta device: shapes, no memory)."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    architecture = config["architecture"]
    if not timm.is_model(architecture):
        raise ConfigError(f"{name}: config.json's architecture {architecture!r} is not a timm model")
    with torch.device("meta"):
        vit = timm.create_model(architecture, pretrained=False, **(config.get("model_args") or {}))
    if not isinstance(vit, VisionTransformer) or getattr(vit, "num_reg_tokens", 0):
        raise ConfigError(f"{name}: {architecture} is not a plain timm VisionTransformer (one class token at most)")
    block = vit.blocks[0]
    dims = {
        "embed_dim": vit.embed_dim,
        "depth": len(vit.blocks),
        "num_heads": block.attn.num_heads,
        "mlp_ratio": block.mlp.fc1.out_features / vit.embed_dim,
        "patch_size": list(vit.patch_embed.patch_size),
    }
    settings = {"class_token": vit.cls_token is not None, "pos_embed": "learned"}  # sin-cos if the table is
    size = list(vit.patch_embed.img_size)
    return PublicWeights(name, dims, settings, size, vit.patch_embed.proj.in_channels, encoder_only=True)


def _convert_timm(public: PublicWeights, folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    proxy = _proxy(public)
    sincos = proxy.pos.table.detach().clone()  # a learned table starts as the fixed sin-cos one
    weights = {k: v.float() for k, v in load_file(str(folder / WEIGHTS_NAME)).items()}
    state = invert_export(proxy, timm_state_dict, weights, public.name, ignored=("head.",))
    if public.settings["class_token"]:  # timm adds the class-token row to the class token; ours has no row
        state["encoder.cls_token"] = state["encoder.cls_token"] + weights["pos_embed"][:, :1]
    if torch.allclose(state["pos.table"], sincos, atol=1e-5):  # MAE's weights: keep the table fixed, as MAE did
        public.settings["pos_embed"] = "sincos"
        del state["pos.table"]
    return state


# -- the inverse of an export --------------------------------------------------------------------


def _proxy(public: PublicWeights) -> MaskedAutoencoder:
    """A model of the checkpoint's own shape, to invert an export on: bounded by ``check_size`` first."""
    decoder = {"decoder_dim": 16, "decoder_depth": 0, "decoder_heads": 1} if public.encoder_only else {}
    fields = {**public.architecture, **public.settings, **decoder}
    config = ModelConfig(input_size=public.input_size, in_chans=public.in_chans, **fields)
    return create_model(check_size(config))


def _owners(labels: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """Which of our tensors (by label) each exported element comes from: (label, elements or None for all)."""
    found = [int(v) for v in labels.unique() if v > 0]  # 0: a value the export makes up (ViTMAE's class row)
    if len(found) == 1 and bool((labels == found[0]).all()):
        return [(found[0], None)]
    flat = labels.reshape(-1)
    return [(label, flat == label) for label in found]


@torch.no_grad()
def invert_export(
    proxy: MaskedAutoencoder, export: Export, weights: dict[str, torch.Tensor], name: str, ignored: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """``weights`` in ``export``'s layout -> our key names, for an export that only moves values.

    Our tensors are labelled and exported twice: each with its number, then each element with its index;
    where the labels land says where each of ``weights``' values goes. ``proxy`` (overwritten) has the
    checkpoint's shapes. Values the export makes up are skipped; ours that no value reaches are left out.
    Keys of ``weights`` starting with ``ignored`` are dropped; any other key the export lacks, a key it
    needs that is missing, or a shape that differs is refused, naming it.
    """
    ours = {k: v for k, v in proxy.state_dict().items() if v.is_floating_point() and v.numel()}
    if len(ours) >= EXACT or max(v.numel() for v in ours.values()) >= EXACT:
        raise ConfigError(f"{name}: a tensor of {max(v.numel() for v in ours.values())} values is too big to map")
    names = list(ours)
    for number, tensor in enumerate(ours.values(), start=1):
        tensor.fill_(number)
    owners = {key: (tuple(labels.shape), _owners(labels)) for key, labels in export(proxy).items()}
    _check_keys(owners, weights, name, ignored)
    for tensor in ours.values():
        tensor.copy_(torch.arange(1, tensor.numel() + 1, dtype=tensor.dtype).view_as(tensor))
    places = export(proxy)
    out: dict[str, torch.Tensor] = {}
    for key, (_, found) in owners.items():
        values, where = weights[key].reshape(-1), places[key].reshape(-1)
        for number, chosen in found:
            index = (where if chosen is None else where[chosen]).long() - 1
            target = out.setdefault(names[number - 1], torch.zeros(ours[names[number - 1]].shape))
            target.view(-1)[index] = values if chosen is None else values[chosen]
    return out


def _check_keys(
    owners: dict[str, tuple], weights: dict[str, torch.Tensor], name: str, ignored: tuple[str, ...]
) -> None:
    missing = [key for key in owners if key not in weights]
    if missing:
        raise ConfigError(f"{name}: its weights lack {missing[0]} ({len(missing)} missing), which its config implies")
    extra = sorted(key for key in weights if key not in owners and not key.startswith(ignored))
    if extra:
        raise ConfigError(f"{name}: its weights hold {', '.join(extra[:3])}, which mimsdk's model has no place for")
    for key, (shape, _) in owners.items():
        if tuple(weights[key].shape) != shape:
            raise ConfigError(f"{name}: {key} has shape {tuple(weights[key].shape)}, its config makes {shape}")


DESCRIBE: dict[str, Callable[[dict[str, Any], str], PublicWeights]] = {
    "vit_mae": _describe_vitmae,
    "videomae": _describe_videomae,
    "timm": _describe_timm,
}
CONVERT: dict[str, Callable[[PublicWeights, Path], dict[str, torch.Tensor]]] = {
    "vit_mae": _convert_vitmae,
    "videomae": _convert_videomae,
    "timm": _convert_timm,
}
