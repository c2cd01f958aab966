"""A video ``MaskedAutoencoder`` in transformers' VideoMAE layout: ``VideoMAEForPreTraining`` and ``VideoMAEModel``.

How our tensors become VideoMAE's (:func:`mimsdk.hub.videomae_layout.videomae_key_map` lists it tensor by
tensor, both ways):

- tubelets: our tokenizer is a Linear over patch vectors ordered (t, p, q, C), channel last; VideoMAE's is
  a Conv3d with weight D×C×t×p×q. VideoMAE's ``pixel_values`` are B×T×C×H×W and it permutes them to
  B×C×T×H×W, our layout, before the convolution, whose output it flattens in our token order (T', H', W');
- attention: our fused ``qkv`` is split into ``query``, ``key`` and ``value``. VideoMAE's key has no bias,
  and dropping ours is exact: a bias b added to every key adds q·b to all of one query's scores alike, and
  softmax ignores a constant added to all its inputs;
- positions: VideoMAE recomputes its fixed 1-D sin-cos tables at init and never loads them, so a model
  exports only with ``model.pos_embed: sincos_index``, the same table (checked when exporting);
- the rest is renamed: pre-norm blocks, final encoder norm (``use_mean_pooling=False`` keeps it),
  ``encoder_to_decoder`` (no bias), mask token, decoder norm and head.

What VideoMAE's code cannot hold is refused in one line naming the field, before anything is written
(:class:`~mimsdk.hub.errors.ExportError`). Always: a tokenizer other than patches, an input that is not
T×H×W, a non-square spatial patch (its decoder head and loss take one patch side), a class token, a
position table other than ``sincos_index``. For ``VideoMAEForPreTraining`` also the decoder facts: an
encoder-only checkpoint, a bias in ``model.decoder_embed_bias``, a target other than
``norm_pix_per_channel`` (VideoMAE's loss target). When only decoder facts fail, ``encoder_only=True``
writes the encoder alone as ``VideoMAEModel``: its features are exact whatever the decoder was.

Allowed, because VideoMAE's code holds them: frames that are not square (``image_size`` [H, W]) and any
number of channels (VideoMAE un-normalises with ImageNet's mean and std only when there are 3, which
per-channel normalisation cancels up to its eps, and refuses other counts only for ``norm_pix_loss=False``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mimsdk.atomic import atomic_dir
from mimsdk.hub.errors import ExportError
from mimsdk.hub.export_card import export_card, write_export_card
from mimsdk.hub.videomae_layout import (
    load_strict,
    videomae_config,
    videomae_key_map,
    videomae_state_dict,
)
from mimsdk.model import MaskedAutoencoder

if TYPE_CHECKING:
    from transformers import VideoMAEForPreTraining, VideoMAEImageProcessor, VideoMAEModel


LIBRARY = "transformers (VideoMAE)"
HOW_TO_LOAD = """\
from transformers import VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEImageProcessor, VideoMAEModel

processor = VideoMAEImageProcessor.from_pretrained("{out}")  # frame size and normalisation of pre-training
encoder = VideoMAEModel.from_pretrained("{out}")  # last_hidden_state B×L×D, every tubelet, no class token
# list_of_frames: the clip's T frames, H×W×C uint8 arrays or PIL images, sampled at the stride of pre-training
pixel_values = processor(list_of_frames, return_tensors="pt").pixel_values  # 1×T×C×H×W (frames before channels)
features = encoder(pixel_values).last_hidden_state.mean(1)
classifier = VideoMAEForVideoClassification.from_pretrained("{out}", num_labels=10, use_mean_pooling=True)
mae = VideoMAEForPreTraining.from_pretrained("{out}")  # continue pre-training: mae(pixel_values, bool_masked_pos)"""


# -- transformers models and the export folder --------------------------------


def _check_positions(model: MaskedAutoencoder, hf: torch.nn.Module, decoder: bool) -> None:
    """VideoMAE never loads its position tables: ours must equal the ones it recomputed."""
    embeddings = hf.videomae.embeddings if decoder else hf.embeddings
    pairs = [(model.pos(), embeddings.position_embeddings)]
    if decoder:
        pairs.append((model.decoder.pos(), hf.position_embeddings))
    for ours, theirs in pairs:
        if not torch.allclose(ours.detach().float().cpu(), theirs.float(), atol=1e-6):
            raise ExportError("VideoMAE export: model.pos_embed: the model's table differs from VideoMAE's")


def to_videomae(model: MaskedAutoencoder) -> VideoMAEForPreTraining:
    """A ``transformers.VideoMAEForPreTraining`` holding ``model``'s weights (eval mode, strict keys)."""
    from transformers import VideoMAEForPreTraining

    hf = VideoMAEForPreTraining(videomae_config(model))
    load_strict(hf, videomae_state_dict(model))
    _check_positions(model, hf, decoder=True)
    return hf.eval()


def to_videomae_model(model: MaskedAutoencoder) -> VideoMAEModel:
    """A ``transformers.VideoMAEModel`` (the encoder) holding ``model``'s weights (eval mode, strict keys)."""
    from transformers import VideoMAEModel

    hf = VideoMAEModel(videomae_config(model, encoder_only=True))
    load_strict(hf, videomae_state_dict(model, encoder_only=True))
    _check_positions(model, hf, decoder=False)
    return hf.eval()


def videomae_processor(model: MaskedAutoencoder) -> VideoMAEImageProcessor:
    """Frames as the video adapter evaluates them: short side resized (bilinear), centre crop, normalised."""
    from transformers import VideoMAEImageProcessor

    cfg = model.config
    _, height, width = cfg.input_size
    return VideoMAEImageProcessor(
        size={"shortest_edge": min(height, width)},
        crop_size={"height": height, "width": width},
        image_mean=cfg.metadata.get("mean", [0.0] * cfg.in_chans),
        image_std=cfg.metadata.get("std", [1.0] * cfg.in_chans),
        resample=2,  # bilinear, as mimsdk's video adapter and VideoMAE
    )


def _notes(model: MaskedAutoencoder, encoder_only: bool) -> list[str]:
    """What a VideoMAE user should know about this export, one line each."""
    cfg = model.config
    notes = [
        "`pixel_values` are B×T×C×H×W (frames before channels); mimsdk's clips are B×C×T×H×W.",
        "VideoMAE has no class token: `VideoMAEForVideoClassification` with this config's `use_mean_pooling=false` "
        "would classify from the first tubelet; pass `use_mean_pooling=True` (mean of all tokens, a new `fc_norm`).",
        f"Pre-trained with the {cfg.masker} masker at mask ratio {cfg.mask_ratio}; VideoMAE takes the mask as "
        "`bool_masked_pos` (True = masked, the same count in every clip).",
    ]
    if encoder_only:
        return notes + ["The encoder only (`VideoMAEModel`): the decoder was left out."]
    notes.append(
        "VideoMAE's loss differs from mimsdk's by about 1e-5: for 3 channels it adds the target's eps 1e-6 to "
        "the std of un-normalised pixels (1e-6 / ImageNet's std in normalised units), and its decoder norm has "
        "eps 1e-5 (fixed in its code) where mimsdk's has 1e-6."
    )
    if cfg.decoder_fraction < 1:
        notes.append(f"Pre-trained decoding {cfg.decoder_fraction} of the masked tubelets ({cfg.decoder_masking}); "
                     "VideoMAEForPreTraining decodes them all.")  # fmt: skip
    mapped = {item.ours for item in videomae_key_map(model)}
    learned = [name for name, p in model.named_parameters() if name not in mapped and p.numel()]
    if learned:
        notes.append(f"Left out, having no place in VideoMAE: {', '.join(learned)}.")
    return notes


def export_videomae(model: MaskedAutoencoder, out_dir: str | Path, *, encoder_only: bool = False) -> Path:
    """A folder that ``VideoMAEForPreTraining.from_pretrained`` and ``VideoMAEModel.from_pretrained`` load.

    Writes config.json, model.safetensors, preprocessor_config.json (``VideoMAEImageProcessor`` with the
    model's mean, std and frame size) and README.md, into ``out_dir`` (new or empty) in one rename. With
    ``encoder_only`` the folder holds ``VideoMAEModel`` (the decoder facts are not checked). Refuses a
    model VideoMAE cannot hold before anything is written, naming the field.
    """
    hf = to_videomae_model(model) if encoder_only else to_videomae(model)
    out_dir = Path(out_dir)
    card = export_card(model, LIBRARY, HOW_TO_LOAD.format(out=out_dir), _notes(model, encoder_only))
    with atomic_dir(out_dir) as staging:
        hf.save_pretrained(staging)
        videomae_processor(model).save_pretrained(staging)
        write_export_card(staging, card)
    return out_dir
