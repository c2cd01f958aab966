"""The Hub's two errors, and the one rule that decides which models the exports take.

Both print as one ``mimsdk: error:`` line from the command line: :class:`HubError` for a Hub that
cannot be used, :class:`ExportError` (a ``ValueError``) for a model that has no export to a format.
"""

from __future__ import annotations

from typing import Any


class HubError(RuntimeError):
    """A Hub repository that cannot be used, or a Hub that cannot be reached; the message says which and why."""


class ExportError(ValueError):
    """A model that cannot be written in an export's format; the message names what is not supported."""


def require_patch_tokenizer(model: Any, export: str, architecture: str, dims: str = "2D") -> None:
    """Refuse, in one line naming the tokenizer, a model whose tokens are not patches (of ``dims`` inputs).

    timm's ViT and transformers' ViTMAE embed a 2D image with one Conv2d over square-on-a-grid patches
    (MONAI's ViT and VideoMAE a 3D one).
    A channel-group tokenizer (one patch embedding per group of bands) or a point-group tokenizer
    (a mini-PointNet over kNN groups, positions from the group centres) has no such layer, so its
    weights have no place there.
    """
    tokenizer = model.config.tokenizer
    if tokenizer != "patch":
        raise ExportError(
            f"{export} export: only patch-tokenizer {dims} models export to {architecture}; this model uses the "
            f"{tokenizer} tokenizer"
        )
