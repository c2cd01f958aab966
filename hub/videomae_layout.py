"""VideoMAE's layout for a video ``MaskedAutoencoder``: its config, what it cannot hold, and the key map both ways.

Used by :mod:`mimsdk.hub.videomae_export` (our weights into VideoMAE) and :mod:`mimsdk.hub.public_weights`
(a VideoMAE checkpoint into mimsdk, for continued pre-training); see the former for the mapping in words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from mimsdk.hub.errors import ExportError
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import is_encoder_only

if TYPE_CHECKING:
    from transformers import VideoMAEConfig

TARGET = "norm_pix_per_channel"  # VideoMAE's loss target (mimsdk.variants.videomae_target)


def _refuse(field: str, got: Any, expected: str, hint: str = "") -> ExportError:
    """One line naming the field, its value and what VideoMAE expects."""
    return ExportError(f"VideoMAE export: model.{field} is {got!r}, expected {expected}{hint}")


def check_encoder(model: MaskedAutoencoder) -> None:
    """Refuse a model whose encoder VideoMAE's cannot hold, naming the field."""
    cfg = model.config
    if cfg.tokenizer != "patch":
        raise _refuse("tokenizer", cfg.tokenizer, "'patch' (VideoMAE embeds tubelets with one Conv3d)")
    if len(cfg.input_size) != 3:
        raise _refuse("input_size", cfg.input_size, "frames × height × width (VideoMAE takes clips)")
    if cfg.patch_size[1] != cfg.patch_size[2]:
        raise _refuse("patch_size", cfg.patch_size, "t×p×p (VideoMAE's spatial patch_size is one side)")
    if cfg.class_token:
        raise _refuse("class_token", cfg.class_token, "false (VideoMAE has no class token)")
    if cfg.pos_embed != "sincos_index":
        raise _refuse("pos_embed", cfg.pos_embed, "'sincos_index' (VideoMAE recomputes its 1-D table, never loads one)")


def check_decoder(model: MaskedAutoencoder) -> None:
    """Refuse a model whose decoder or loss VideoMAEForPreTraining's cannot hold, naming the field."""
    cfg = model.config
    hint = "; or export the encoder alone with encoder_only=True (VideoMAEModel)"
    if is_encoder_only(model):
        raise ExportError(f"VideoMAE export: the model comes from an encoder-only checkpoint, with no decoder{hint}")
    if cfg.decoder_embed_bias:
        raise _refuse("decoder_embed_bias", True, "false (VideoMAE's encoder_to_decoder has no bias)", hint)
    if cfg.target != TARGET:
        raise _refuse("target", cfg.target, f"{TARGET!r} (VideoMAE's loss target)", hint)


def videomae_config(model: MaskedAutoencoder, *, encoder_only: bool = False) -> VideoMAEConfig:
    """A ``transformers.VideoMAEConfig`` describing ``model`` (its decoder too unless ``encoder_only``)."""
    from transformers import VideoMAEConfig

    check_encoder(model)
    if not encoder_only:
        check_decoder(model)
    cfg = model.config
    (frames, height, width), (tubelet, patch, _) = cfg.input_size, cfg.patch_size
    dim, depth, heads = cfg.width
    return VideoMAEConfig(
        num_frames=frames,
        tubelet_size=tubelet,
        image_size=height if height == width else [height, width],
        patch_size=patch,
        num_channels=cfg.in_chans,
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=int(dim * cfg.mlp_ratio),  # timm's Block rounds the same way
        decoder_hidden_size=cfg.decoder_dim,
        decoder_num_hidden_layers=cfg.decoder_depth,
        decoder_num_attention_heads=cfg.decoder_heads,
        decoder_intermediate_size=int(cfg.decoder_dim * cfg.mlp_ratio),
        qkv_bias=True,  # query and value biases: transformers 4 calls it so, and 5 reads it as qv_bias
        use_mean_pooling=False,  # keeps VideoMAEModel's final layernorm: last_hidden_state equals encode
        norm_pix_loss=True,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )


# -- the key mapping ---------------------------------------------------------


@dataclass(frozen=True)
class Renamed:
    """One of our tensors and the VideoMAE tensors that hold its values.

    ``to_theirs(ours)`` gives one tensor per key of ``theirs``; ``to_ours(*theirs)`` gives ours back.
    ``how`` says it in words.
    """

    ours: str
    theirs: tuple[str, ...]
    how: str
    to_theirs: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
    to_ours: Callable[..., torch.Tensor]


def _same(tensor: torch.Tensor) -> tuple[torch.Tensor]:
    return (tensor,)


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _split_qkv(weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """3D×D (or 3D) -> query, key, value: D×D (or D) each."""
    return tuple(weight.chunk(3))


def _join_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return torch.cat([query, key, value])


def _split_qv_bias(bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3D -> the query and value biases; the key's is dropped (exact: softmax ignores it, see the module)."""
    query, _, value = bias.chunk(3)
    return query, value


def _join_qv_bias(query: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return torch.cat([query, torch.zeros_like(query), value])


def _linear_to_conv(weight: torch.Tensor, kernel: tuple[int, int, int, int]) -> tuple[torch.Tensor]:
    """D×(t·p·q·C), patch vectors ordered (t, p, q, C) -> Conv3d weight D×C×t×p×q; ``kernel`` is (t, p, q, C)."""
    return (weight.reshape(-1, *kernel).permute(0, 4, 1, 2, 3),)


def _conv_to_linear(weight: torch.Tensor) -> torch.Tensor:
    """Conv3d weight D×C×t×p×q -> D×(t·p·q·C)."""
    return weight.permute(0, 2, 3, 4, 1).reshape(weight.shape[0], -1)


def _plain(ours: str, theirs: str) -> Renamed:
    return Renamed(ours, (theirs,), "as is", _same, _identity)


def _block_map(ours: str, theirs: str) -> list[Renamed]:
    """A timm pre-norm block (ours) -> a VideoMAELayer (theirs): the same computation, renamed and split."""
    attention = f"{theirs}.attention.attention"
    split = "fused qkv split into query, key, value"
    return [
        _plain(f"{ours}.norm1.weight", f"{theirs}.layernorm_before.weight"),
        _plain(f"{ours}.norm1.bias", f"{theirs}.layernorm_before.bias"),
        Renamed(
            f"{ours}.attn.qkv.weight",
            tuple(f"{attention}.{n}.weight" for n in ("query", "key", "value")),
            split,
            _split_qkv,
            _join_qkv,
        ),
        Renamed(
            f"{ours}.attn.qkv.bias",
            (f"{attention}.q_bias", f"{attention}.v_bias"),
            "query and value biases; the key bias is dropped (exact under softmax), zero on the way back",
            _split_qv_bias,
            _join_qv_bias,
        ),
        _plain(f"{ours}.attn.proj.weight", f"{theirs}.attention.output.dense.weight"),
        _plain(f"{ours}.attn.proj.bias", f"{theirs}.attention.output.dense.bias"),
        _plain(f"{ours}.norm2.weight", f"{theirs}.layernorm_after.weight"),
        _plain(f"{ours}.norm2.bias", f"{theirs}.layernorm_after.bias"),
        _plain(f"{ours}.mlp.fc1.weight", f"{theirs}.intermediate.dense.weight"),
        _plain(f"{ours}.mlp.fc1.bias", f"{theirs}.intermediate.dense.bias"),
        _plain(f"{ours}.mlp.fc2.weight", f"{theirs}.output.dense.weight"),
        _plain(f"{ours}.mlp.fc2.bias", f"{theirs}.output.dense.bias"),
    ]


def _key_map(model: MaskedAutoencoder, prefix: str, decoder: bool) -> list[Renamed]:
    """The map, unchecked: the encoder under ``prefix`` and, with ``decoder``, VideoMAEForPreTraining's decoder."""
    cfg = model.config
    out = [
        Renamed(
            "tokenizer.proj.weight",
            (f"{prefix}embeddings.patch_embeddings.projection.weight",),
            "Linear over (t, p, q, C) patch vectors -> Conv3d D×C×t×p×q",
            partial(_linear_to_conv, kernel=(*cfg.patch_size, cfg.in_chans)),
            _conv_to_linear,
        ),
        _plain("tokenizer.proj.bias", f"{prefix}embeddings.patch_embeddings.projection.bias"),
        _plain("encoder.norm.weight", f"{prefix}layernorm.weight"),
        _plain("encoder.norm.bias", f"{prefix}layernorm.bias"),
    ]
    for i in range(len(model.encoder.blocks)):
        out += _block_map(f"encoder.blocks.{i}", f"{prefix}encoder.layer.{i}")
    if not decoder:
        return out
    out += [
        _plain("decoder.embed.weight", "encoder_to_decoder.weight"),
        _plain("decoder.mask_token", "mask_token"),
        _plain("decoder.norm.weight", "decoder.norm.weight"),
        _plain("decoder.norm.bias", "decoder.norm.bias"),
        _plain("decoder.pred.weight", "decoder.head.weight"),
        _plain("decoder.pred.bias", "decoder.head.bias"),
    ]
    for i in range(len(model.decoder.blocks)):
        out += _block_map(f"decoder.blocks.{i}", f"decoder.decoder_layers.{i}")
    return out


def videomae_key_map(model: MaskedAutoencoder, *, encoder_only: bool = False) -> list[Renamed]:
    """Every tensor of ``model`` that VideoMAE holds: our key -> VideoMAE's key(s) and how the values move.

    Keys are ``VideoMAEForPreTraining``'s (``videomae.`` before the encoder's), or with ``encoder_only``
    ``VideoMAEModel``'s (the encoder's, no prefix). Left out, because VideoMAE has no place for them: the fixed
    position tables (VideoMAE recomputes the same), the empty class token (1×0×D) and anything a masker or
    target learns (HPM's loss predictor). Refuses, naming the field, a model VideoMAE cannot hold.
    """
    videomae_config(model, encoder_only=encoder_only)
    return _key_map(model, "" if encoder_only else "videomae.", decoder=not encoder_only)


@torch.no_grad()
def videomae_state_dict(model: MaskedAutoencoder, *, encoder_only: bool = False) -> dict[str, torch.Tensor]:
    """``model``'s weights under the key names of VideoMAE's checkpoints: ``VideoMAEForPreTraining``'s, or
    ``VideoMAEModel``'s with ``encoder_only``. These are the names every transformers version saves and loads
    (``q_bias``, ``v_bias``); transformers 5's modules call those two ``query.bias``, ``value.bias``
    (:func:`module_name`)."""
    ours = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for item in videomae_key_map(model, encoder_only=encoder_only):
        out |= dict(zip(item.theirs, item.to_theirs(ours[item.ours])))
    return {key: value.detach().clone().contiguous() for key, value in out.items()}


# The query and value biases: the names of VideoMAE's checkpoints (MCG-NJU's, and what every transformers
# version saves) -> the module names of transformers 5, which renames them as it loads and back as it saves.
BIAS_NAMES = {".attention.attention.q_bias": ".attention.attention.query.bias",
              ".attention.attention.v_bias": ".attention.attention.value.bias"}  # fmt: skip


def _swap_suffix(key: str, pairs: Iterable[tuple[str, str]]) -> str:
    for old, new in pairs:
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def checkpoint_name(key: str) -> str:
    """A VideoMAE key as its checkpoints name it: ``...attention.attention.query.bias`` -> ``...q_bias``."""
    return _swap_suffix(key, ((module, saved) for saved, module in BIAS_NAMES.items()))


def module_name(key: str) -> str:
    """A VideoMAE key as transformers 5's modules name it: ``...attention.attention.q_bias`` -> ``...query.bias``."""
    return _swap_suffix(key, BIAS_NAMES.items())


def load_strict(hf: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load checkpoint-named ``weights`` into ``hf`` with strict keys, under the names its transformers version uses."""
    names = set(hf.state_dict())
    hf.load_state_dict(
        {key if key in names else module_name(key): value for key, value in weights.items()}, strict=True
    )


@torch.no_grad()
def state_dict_from_videomae(
    model: MaskedAutoencoder, weights: Mapping[str, torch.Tensor], *, decoder: bool | None = None
) -> dict[str, torch.Tensor]:
    """VideoMAE weights -> a state dict that ``model.load_state_dict(..., strict=True)`` takes.

    ``weights`` are ``VideoMAEForPreTraining``'s or ``VideoMAEModel``'s (no ``videomae.`` prefix), with the
    checkpoints' ``q_bias``/``v_bias`` names or transformers 5's ``query.bias``/``value.bias``. ``decoder``:
    take VideoMAE's decoder too (None: when ``weights`` have one). Everything else comes from ``model``
    itself: the fixed position tables (equal to VideoMAE's, which it recomputes), the empty class token, the
    key biases as zeros, and the decoder when it is not taken. ``model`` must be one VideoMAE holds
    (:func:`check_encoder`, and :func:`check_decoder` when the decoder is taken); a missing VideoMAE key or a
    shape that differs is named.
    """
    weights = {checkpoint_name(key): value for key, value in weights.items()}
    if not any(key.startswith("videomae.") for key in weights):  # VideoMAEModel's keys
        weights = {f"videomae.{key}": value for key, value in weights.items()}
    decoder = "encoder_to_decoder.weight" in weights if decoder is None else decoder
    check_encoder(model)
    if decoder:
        check_decoder(model)
    out = dict(model.state_dict())
    for item in _key_map(model, "videomae.", decoder):
        missing = [key for key in item.theirs if key not in weights]
        if missing:
            raise KeyError(f"VideoMAE weights lack {missing[0]} (for {item.ours})")
        value = item.to_ours(*(weights[key] for key in item.theirs))
        if value.shape != out[item.ours].shape:
            raise ValueError(
                f"VideoMAE's {item.theirs[0]} has shape {tuple(value.shape)} where {item.ours} has "
                f"{tuple(out[item.ours].shape)}: the model's config does not match the weights'"
            )
        out[item.ours] = value.to(out[item.ours].dtype)
    return out
