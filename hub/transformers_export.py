"""Weights of a 2D ``MaskedAutoencoder`` in transformers' ``ViTMAEForPreTraining`` layout.

Our fused ``qkv`` is split into q/k/v projections, the linear patch embedding is
reshaped into a convolution (patch vectors are (p, q, C), channel last), and the
zero class-token position is prepended to the sin-cos tables. Only full checkpoints of 2D
patch-tokenizer models with square images and patches, predicting pixels, have a ViTMAE twin;
any other is refused in one line (:class:`~mimsdk.hub.errors.ExportError`) before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mimsdk.atomic import atomic_dir
from mimsdk.hub.errors import ExportError, require_patch_tokenizer
from mimsdk.hub.export_card import export_card, write_export_card
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import is_encoder_only

if TYPE_CHECKING:
    from transformers import ViTMAEConfig, ViTMAEForPreTraining


def vitmae_config(model: MaskedAutoencoder) -> ViTMAEConfig:
    """A ``transformers.ViTMAEConfig`` describing ``model``."""
    from transformers import ViTMAEConfig

    require_patch_tokenizer(model, "transformers", "ViTMAEForPreTraining")
    cfg = model.config
    if is_encoder_only(model):
        raise ExportError(
            "transformers' ViTMAEForPreTraining needs the decoder, and this model comes from an encoder-only "
            "checkpoint; export a full checkpoint, or export the encoder to timm"
        )
    square = len(cfg.input_size) == 2 and cfg.input_size[0] == cfg.input_size[1]
    if not square or cfg.patch_size[0] != cfg.patch_size[1]:
        raise ExportError(
            f"transformers' ViTMAE takes square 2D images and patches; this model has input_size "
            f"{cfg.input_size} and patch_size {cfg.patch_size}"
        )
    if cfg.target not in ("norm_pix", "pixels"):
        raise ExportError(f"transformers' ViTMAE predicts pixels; this model's target is {cfg.target!r}")
    dim, depth, heads = cfg.width
    return ViTMAEConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=int(dim * cfg.mlp_ratio),
        image_size=cfg.input_size[0],
        patch_size=cfg.patch_size[0],
        num_channels=cfg.in_chans,
        decoder_hidden_size=cfg.decoder_dim,
        decoder_num_hidden_layers=cfg.decoder_depth,
        decoder_num_attention_heads=cfg.decoder_heads,
        decoder_intermediate_size=int(cfg.decoder_dim * cfg.mlp_ratio),
        mask_ratio=cfg.mask_ratio,
        norm_pix_loss=cfg.target == "norm_pix",
        layer_norm_eps=1e-6,
        qkv_bias=True,
        hidden_act="gelu",
    )


def _blocks(prefix: str, blocks: torch.nn.ModuleList) -> dict[str, torch.Tensor]:
    out = {}
    for i, block in enumerate(blocks):
        p = f"{prefix}.{i}"
        q, k, v = block.attn.qkv.weight.chunk(3)
        qb, kb, vb = block.attn.qkv.bias.chunk(3)
        out |= {
            f"{p}.attention.q_proj.weight": q,
            f"{p}.attention.q_proj.bias": qb,
            f"{p}.attention.k_proj.weight": k,
            f"{p}.attention.k_proj.bias": kb,
            f"{p}.attention.v_proj.weight": v,
            f"{p}.attention.v_proj.bias": vb,
            f"{p}.attention.o_proj.weight": block.attn.proj.weight,
            f"{p}.attention.o_proj.bias": block.attn.proj.bias,
            f"{p}.layernorm_before.weight": block.norm1.weight,
            f"{p}.layernorm_before.bias": block.norm1.bias,
            f"{p}.layernorm_after.weight": block.norm2.weight,
            f"{p}.layernorm_after.bias": block.norm2.bias,
            f"{p}.mlp.fc1.weight": block.mlp.fc1.weight,
            f"{p}.mlp.fc1.bias": block.mlp.fc1.bias,
            f"{p}.mlp.fc2.weight": block.mlp.fc2.weight,
            f"{p}.mlp.fc2.bias": block.mlp.fc2.bias,
        }
    return out


def _with_cls_position(table: torch.Tensor) -> torch.Tensor:
    return torch.cat([table.new_zeros(1, 1, table.shape[2]), table], dim=1)


@torch.no_grad()
def vitmae_state_dict(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """``model``'s weights under ``ViTMAEForPreTraining``'s key names (strict load)."""
    cfg = vitmae_config(model)
    tok = model.tokenizer
    p, c = cfg.patch_size, cfg.num_channels
    conv = tok.proj.weight.reshape(-1, p, p, c).permute(0, 3, 1, 2)  # D×C×p×p
    dec = model.decoder
    out = {
        "vit.embeddings.cls_token": model.encoder.cls_token,
        "vit.embeddings.position_embeddings": _with_cls_position(model.pos()),
        "vit.embeddings.patch_embeddings.projection.weight": conv,
        "vit.embeddings.patch_embeddings.projection.bias": tok.proj.bias,
        "vit.layernorm.weight": model.encoder.norm.weight,
        "vit.layernorm.bias": model.encoder.norm.bias,
        "decoder.mask_token": dec.mask_token,
        "decoder.decoder_pos_embed": _with_cls_position(dec.pos()),
        "decoder.decoder_embed.weight": dec.embed.weight,
        "decoder.decoder_embed.bias": dec.embed.bias,
        "decoder.decoder_norm.weight": dec.norm.weight,
        "decoder.decoder_norm.bias": dec.norm.bias,
        "decoder.decoder_pred.weight": dec.pred.weight,
        "decoder.decoder_pred.bias": dec.pred.bias,
    }
    out |= _blocks("vit.layers", model.encoder.blocks)
    out |= _blocks("decoder.decoder_layers", dec.blocks)
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def to_vitmae(model: MaskedAutoencoder) -> ViTMAEForPreTraining:
    """A ``transformers.ViTMAEForPreTraining`` holding ``model``'s weights (eval mode)."""
    from transformers import ViTMAEForPreTraining

    hf = ViTMAEForPreTraining(vitmae_config(model))
    hf.load_state_dict(vitmae_state_dict(model), strict=True)
    return hf.eval()


def export_transformers(model: MaskedAutoencoder, out_dir: str | Path) -> Path:
    """A folder ``ViTMAEForPreTraining.from_pretrained`` loads: config.json, model.safetensors, preprocessor config.

    Written to ``out_dir`` (a new or empty folder) in one rename. The image processor carries the
    adapter's normalisation (metadata mean/std) and the model's input size.
    """
    from transformers import ViTImageProcessor

    hf = to_vitmae(model)
    cfg = model.config
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as staging:
        hf.save_pretrained(staging, safe_serialization=True)
        processor = ViTImageProcessor(
            size={"height": cfg.input_size[0], "width": cfg.input_size[1]},
            image_mean=cfg.metadata.get("mean", [0.0] * cfg.in_chans),
            image_std=cfg.metadata.get("std", [1.0] * cfg.in_chans),
            resample=3,  # bicubic, as mimsdk's image adapter
        )
        processor.save_pretrained(staging)
        write_export_card(staging, export_card(model, "transformers (ViTMAE)", HOW_TO_LOAD.format(out=out_dir)))
    return out_dir


HOW_TO_LOAD = """\
from transformers import ViTImageProcessor, ViTMAEForPreTraining, ViTMAEModel

processor = ViTImageProcessor.from_pretrained("{out}")  # the size and normalisation of pre-training
mae = ViTMAEForPreTraining.from_pretrained("{out}")  # encoder and decoder: continue pre-training
encoder = ViTMAEModel.from_pretrained("{out}", mask_ratio=0.0)  # every patch visible, for features
# its patches come out shuffled unless noise=torch.arange(num_patches).expand(batch, -1) keeps their order"""
