"""The scan: every video under a folder looked at once before training, the unusable ones named, labels attached.

A small folder's videos are each decoded in part (:func:`~mimsdk.adapters.video.reading.probe_video`: first and
last frame); a big folder's only have their headers read (:func:`~mimsdk.adapters.video.reading.probe_header`),
so training starts in seconds, and a clip that fails to decode later is named once and replaced when read. What
either learnt of a usable file is kept by path, size and mtime (:class:`~mimsdk.scan.ScanCache`): a folder
scanned before is looked at again only where files changed.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from mimsdk.adapter import ScanPolicy
from mimsdk.adapters.video.clips import clip_span
from mimsdk.adapters.video.options import VideoOptions
from mimsdk.adapters.video.reading import MAX_FRAME_PIXELS, VideoInfo, probe_header, probe_video
from mimsdk.errors import DataError
from mimsdk.labels import label_files
from mimsdk.scan import ScanCache

log = logging.getLogger(__name__)

POLICY = ScanPolicy(unit="videos")
# Folders of more videos than this have their headers read only. Decoding a first and last frame costs
# 25-75 ms for a 340×256 clip and up to 0.8 s for 1080p on one core (headers: 1-10 ms), so 100 videos are
# checked whole within a minute on 2 cores, while 10^5 would take hours before step one.
FULL_CHECK_UP_TO = 100


@dataclass
class Scan:
    """Usable videos, their labels (-1 when unlabelled), class names, and the files that are short."""

    videos: list[VideoInfo]
    labels: list[int]
    classes: list[str]
    short: list[Path]


def scan_videos(
    root: str | Path,
    frames: int,
    options: VideoOptions,
    labels_csv: str | Path | None = None,
    strict: bool = False,
) -> Scan:
    """Look at every video under ``root`` once (decoding a little of each, or up from
    :data:`FULL_CHECK_UP_TO` files reading headers only); warn about (or, ``strict``, stop at) the unusable ones.

    Files without a video extension (``options.extensions``) are left out, with
    one log line. Raises DataError for a missing path, no video files, no usable
    video, or in strict mode the first unusable one (:class:`~mimsdk.adapter.ScanPolicy`).
    """
    root = Path(root)
    wanted = f"video files ({', '.join(options.extensions)})"
    files = POLICY.walk(root, wanted, lambda p: p.suffix.lower() in options.extensions)
    span = clip_span(frames, options.stride)
    whole = len(files) <= FULL_CHECK_UP_TO
    if not whole:
        log.info("%s: %d videos, reading their headers only; a clip that fails to decode is skipped when read",
                 root, len(files))  # fmt: skip
    cache = ScanCache(
        root, f"video-{'full' if whole else 'header'}-{MAX_FRAME_PIXELS}",
        save=lambda info: [info.frames, info.fps, info.height, info.width],
        load=lambda path, saved: VideoInfo(path, int(saved[0]), float(saved[1]), int(saved[2]), int(saved[3])),
    )  # fmt: skip
    look = cache.remembering(probe_video if whole else probe_header)

    def probe(path: Path) -> VideoInfo:
        info = look(path)
        if info.frames < span and options.short_clip == "error":
            raise DataError(f"{path}: {info.frames} frames, fewer than the {span} a clip of {frames} frames at "
                            f"stride {options.stride} needs (data.options.short_clip=error)")  # fmt: skip
        return info

    checked = POLICY.check(root, files, probe, strict)
    cache.write()
    videos = [info for _, info in checked]
    short = [info.path for info in videos if info.frames < span]
    action = {"loop": "looping from the start", "pad": "repeating the last frame"}.get(options.short_clip)
    for info in videos:
        if info.path in short:
            warnings.warn(
                f"{info.path}: {info.frames} frames available, {span} needed for {frames} frames at stride "
                f"{options.stride}; {action} (data.options.short_clip={options.short_clip})",
                stacklevel=2,
            )

    labels, classes = label_files([v.path for v in videos], root, labels_csv)
    return Scan(videos, labels, classes, short)
