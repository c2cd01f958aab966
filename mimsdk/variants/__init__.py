"""Research variants of the core's parts, each registered under its recipe name.

Importing this package registers them all (``mimsdk.model`` does), as importing ``timm.models``
registers timm's architectures:

- tokenizers: ``channel_groups`` (SatMAE), ``point_groups`` (Point-MAE);
- maskers: ``tube`` (VideoMAE), ``block`` (BEiT), ``colored`` (ColorMAE), ``hpm`` (hard patches mining);
- targets: ``frequency`` (MFM), ``hog`` (MaskFeat), ``ema_latent`` (data2vec), ``chamfer``/``chamfer_l1`` (Point-MAE),
  ``norm_pix_per_channel`` (VideoMAE);
- partial decoding (CrossMAE, VideoMAE V2), chosen by ``model.decoder_fraction``.
"""

from mimsdk.variants import (  # noqa: F401  (imported to register)
    block_masking,
    chamfer_target,
    channel_groups,
    colored_masking,
    ema_latent,
    frequency_target,
    hard_patches,
    hog_target,
    point_groups,
    tube_masking,
    videomae_target,
)
