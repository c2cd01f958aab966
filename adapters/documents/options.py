"""The documents adapter's ``data.options``: resolution, colour, page selection, fit, limits."""

from __future__ import annotations

import re
from dataclasses import dataclass

from mimsdk.config import ModelConfig, choice
from mimsdk.errors import ConfigError, DataError


@dataclass
class DocumentOptions:
    """``data.options`` keys of the documents adapter.

    Attributes:
        dpi: resolution PDF pages are rendered at (page images are used at their own resolution).
        color: ``gray`` or ``rgb``; ``auto`` follows ``model.in_chans`` (1 or 3).
        pages: which pages of each file: ``all`` or 1-based numbers and ranges, e.g. ``"1"``, ``"1-3,7"``.
        fit: ``crop`` (random crops of the full-resolution page) or ``pad`` (whole page fitted, NaN padding).
        aspect_jitter: training crops' aspect may differ from the target aspect by this factor (0.1: ±10 %).
        max_pixels: cap on a rendered or decoded page's width × height; larger pages are scaled down.
        cache_mb: rendered pages kept in memory per process (least recently used out first); 0 turns it off.
        label_column: the column of ``data.labels`` holding the label.
    """

    dpi: float = 150.0
    color: str = choice("auto", "auto", "gray", "rgb")
    pages: str = "all"
    fit: str = choice("crop", "crop", "pad")
    aspect_jitter: float = 0.1
    max_pixels: int = 25_000_000
    cache_mb: int = 512
    label_column: str = "label"


def parse_pages(spec: str) -> list[tuple[int, int]] | None:
    """``"all"`` -> None; ``"1-3,7"`` -> [(0, 3), (6, 7)], 0-based half-open ranges. Raises ConfigError."""
    if spec.strip().lower() == "all":
        return None
    ranges = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        first, last = (int(m[1]), int(m[2] or m[1])) if m else (0, 0)
        if not m or first < 1 or last < first:
            raise ConfigError(
                f"data.options.pages: {spec!r} is not a page selection; expected 'all' or 1-based pages and "
                "ranges such as '1', '1-3,7'"
            )
        ranges.append((first - 1, last))
    return ranges


def check_document_options(opts: DocumentOptions, model: ModelConfig) -> DocumentOptions:
    """Ranges and agreement with ``model.in_chans``; ``color: auto`` resolved. Errors name ``data.options.<key>``."""
    checks = {
        "dpi": opts.dpi > 0,
        "aspect_jitter": 0.0 <= opts.aspect_jitter < 1.0,
        "max_pixels": opts.max_pixels >= 64 * 64,
        "cache_mb": opts.cache_mb >= 0,
    }
    rules = {"dpi": "> 0", "aspect_jitter": "in [0, 1)", "max_pixels": ">= 4096", "cache_mb": ">= 0"}
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"data.options.{key}: {getattr(opts, key)!r} is not allowed; expected {rules[key]}")
    parse_pages(opts.pages)
    channels = {"gray": 1, "rgb": 3}
    if opts.color == "auto":
        if model.in_chans not in (1, 3):
            raise DataError(f"model.in_chans is {model.in_chans}; document pages have 1 (gray) or 3 (rgb) channels")
        opts.color = "gray" if model.in_chans == 1 else "rgb"
    elif channels[opts.color] != model.in_chans:
        raise ConfigError(
            f"data.options.color: {opts.color!r} gives {channels[opts.color]} channel(s) but model.in_chans is "
            f"{model.in_chans}"
        )
    return opts
