"""Which source frames a clip takes: VideoMAE's sampling, with the short-clip policies ``loop`` and ``pad``."""

from __future__ import annotations

import torch


def stored_count(available: int, stride: int) -> int:
    """Frames kept of a source of ``available`` frames when every ``stride``-th is stored (0, stride, ...)."""
    return -(-available // stride)


def clip_span(frames: int, stride: int) -> int:
    """Frames of the source a clip of ``frames`` frames, ``stride`` apart, covers."""
    return (frames - 1) * stride + 1


def clip_indices(
    available: int, frames: int, stride: int, policy: str, train: bool, clip: int = 0, clips: int = 1
) -> list[int]:
    """Source frame indices of one clip.

    Training draws a random start (temporal jitter) from torch's global generator,
    so a seeded item is reproducible; evaluation takes the centre, or ``clips``
    evenly spaced windows. A source shorter than the span wraps around
    (``loop``) or repeats its last frame (``pad``).
    """
    span = clip_span(frames, stride)
    if available >= span:
        room = available - span
        if train:
            start = int(torch.randint(0, room + 1, ()).item())
        elif clips == 1:
            start = room // 2
        else:
            start = round(clip * room / (clips - 1))
    elif policy == "loop":
        start = int(torch.randint(0, available, ()).item()) if train else (clip * available) // clips
    else:
        start = 0
    steps = start + torch.arange(frames) * stride
    steps = steps % available if policy == "loop" else steps.clamp(max=available - 1)
    return steps.tolist()
