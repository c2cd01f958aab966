"""A model's parts in words, from its ``ModelConfig``: the encoder as built, its tokens, masker and target.

What the model card says (and what a run can print at its start). Parts are named by their recipe
names (``block``, ``hog``, ``channel_groups``), with a few words on what each does; the encoder is
called ``ViT-Tiny`` only when it has ViT-Tiny's width, depth and heads.
"""

from __future__ import annotations

from typing import Any

from mimsdk.config import SIZES, ModelConfig

# How each masker and target is described; a name not listed is shown as it is.
MASKERS = {
    "random": "uniformly at random (MAE)",
    "tube": "in tubes: one random pattern over the last two axes, repeated along the first (VideoMAE)",
    "block": "in rectangular blocks (BEiT's blockwise masking)",
    "colored": "by filtered noise (ColorMAE)",
    "hpm": "where a learned predictor expects the loss to be highest (HPM)",
}
TARGETS = {
    "norm_pix": "per-patch normalised pixels (norm_pix)",
    "norm_pix_per_channel": "per-patch, per-channel normalised pixels (norm_pix_per_channel, VideoMAE)",
    "pixels": "raw pixels (pixels)",
    "pixels_l1": "raw pixels under an L1 loss (pixels_l1)",
    "frequency": "Fourier spectrum of each patch (frequency)",
    "hog": "histograms of oriented gradients (hog, MaskFeat)",
    "ema_latent": "features of an EMA teacher encoder (ema_latent, data2vec)",
    "chamfer": "point coordinates, scored by Chamfer distance (chamfer, Point-MAE)",
    "chamfer_l1": "point coordinates, scored by L1 Chamfer distance (chamfer_l1, Point-MAE)",
}


def blocks(n: int) -> str:
    """``1 block``, ``6 blocks``."""
    return f"{n} block" + ("" if n == 1 else "s")


def times(values: list[int]) -> str:
    """``3×32×32``."""
    return "×".join(map(str, values))


def fmt(value: Any) -> str:
    """A value as the card shows it: floats to 4 significant digits, lists in brackets."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def options_text(options: dict[str, Any]) -> str:
    """`` (color: blue, cutoff: 0.2)``, or nothing when there are no options."""
    return f" ({', '.join(f'{k}: {fmt(v)}' for k, v in options.items())})" if options else ""


def encoder_text(cfg: ModelConfig) -> str:
    """The encoder as built: ``ViT-Tiny: 192 wide, 12 blocks, 3 heads`` when it is the named size, else
    ``ViT-Tiny width 192, 6 blocks, 3 heads`` (depth or heads set apart) or ``48 wide, 2 blocks, 3 heads``."""
    width, depth, heads = cfg.width
    shape = f"{blocks(depth)}, {heads} heads"
    size, standard = f"ViT-{cfg.size.capitalize()}", SIZES[cfg.size]
    if (width, depth, heads) == standard:
        return f"{size}: {width} wide, {shape}"
    if width == standard[0]:
        return f"{size} width {width}, {shape}"
    return f"{width} wide, {shape}"


def tokens_text(cfg: ModelConfig, num_tokens: int) -> str:
    """What the tokens are, by tokenizer."""
    size, patch = times(cfg.input_size), times(cfg.patch_size)
    if cfg.tokenizer == "point_groups":
        return f"clouds of {cfg.input_size[0]} points, cut into {num_tokens} local groups of points (point_groups)"
    if cfg.tokenizer == "channel_groups":
        groups = cfg.tokenizer_options.get("groups")
        grouped = f"in {len(groups)} groups" if isinstance(groups, list) else "in groups"
        return (
            f"{cfg.in_chans}-channel {size} inputs, the channels {grouped}, each cut into {patch} patches "
            f"(channel_groups, {num_tokens} tokens)"
        )
    if cfg.tokenizer == "patch":
        return f"{cfg.in_chans}×{size} inputs cut into {patch} patches ({num_tokens} tokens)"
    return f"{cfg.in_chans}×{size} inputs as {num_tokens} {cfg.tokenizer} tokens"


def masking_text(cfg: ModelConfig) -> str:
    """``masked in rectangular blocks (BEiT's blockwise masking)``, with the masker's options if any."""
    return f"masked {MASKERS.get(cfg.masker, f'by the {cfg.masker} masker')}{options_text(cfg.masker_options)}"


def target_text(cfg: ModelConfig) -> str:
    """``histograms of oriented gradients (hog, MaskFeat)``, with the target's options if any."""
    return f"{TARGETS.get(cfg.target, f'{cfg.target} target')}{options_text(cfg.target_options)}"


def input_shape(cfg: ModelConfig) -> str:
    """The shape ``encode`` / ``features`` take, batch first."""
    if cfg.tokenizer == "point_groups":
        return f"B×{cfg.input_size[0]}×3 (xyz)"
    return "B×" + times([cfg.in_chans, *cfg.input_size])
