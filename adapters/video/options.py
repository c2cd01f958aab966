"""The video adapter's ``data.options``: sampling stride, short clips, decoding threads and size, extensions."""

from __future__ import annotations

from dataclasses import dataclass, field

from mimsdk.config import choice
from mimsdk.errors import ConfigError


@dataclass
class VideoOptions:
    """``data.options`` of the video adapter. Frames per clip is ``model.input_size[0]``."""

    stride: int = 4  # frames between two sampled frames (VideoMAE's sampling rate: 4 on Kinetics, 2 on SSv2)
    short_clip: str = choice("loop", "loop", "pad", "error")  # a file with fewer frames than a clip spans
    threads: int = 1  # decord decoding threads per open file (per DataLoader worker)
    clips_per_video: int = 1  # items per file and epoch: random windows in training, evenly spaced in evaluation
    short_side: int | None = None  # decode straight to this shorter side (decord resizes); None: native size
    extensions: list[str] = field(default_factory=lambda: [".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"])


def check_video_options(options: VideoOptions) -> VideoOptions:
    """Ranges :func:`~mimsdk.config.adapter_options` does not check; extensions made lower-case ``.ext``."""
    for key in ("stride", "threads", "clips_per_video", "short_side"):
        value = getattr(options, key)
        if value is not None and value < 1:
            raise ConfigError(f"data.options.{key}: must be at least 1, got {value}")
    options.extensions = [e.lower() if e.startswith(".") else f".{e.lower()}" for e in options.extensions]
    return options
