"""Reading videos: one look at each file before training (:func:`probe_video` decodes its first and last frame,
:func:`probe_header` reads headers only), and frames decoded by decord (:func:`open_reader`, :func:`decode`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from decord import DECORDError, VideoReader, cpu

from mimsdk.adapter import readable_path
from mimsdk.adapters.video.containers import container_problem
from mimsdk.data import first_line
from mimsdk.errors import DataError

MAX_FRAME_PIXELS = 1 << 26  # 67 million pixels a frame (8K UHD is 33 million): a larger header is refused


@dataclass
class VideoInfo:
    """What the scan learnt of one file."""

    path: Path
    frames: int
    fps: float
    height: int
    width: int


def header_frame_size(name: str) -> tuple[int, int] | None:
    """(width, height) of the first video stream as the container's header states it (PyAV reads headers
    only, nothing is decoded), or None when PyAV cannot tell (decord then has its say)."""
    import av

    try:
        with av.open(name) as container:
            streams = container.streams.video
            if not streams:
                return None
            context = streams[0].codec_context
            return int(context.width), int(context.height)
    except Exception:  # noqa: BLE001 - PyAV's view is only a first look; decord's verdict follows
        return None


def probe_video(path: Path) -> VideoInfo:
    """Open ``path`` once with decord: its facts, or a DataError naming it and why it cannot be used.

    The container's sizes are checked first (a truncated file decodes with its missing frames concealed),
    then the frame size in the header (at most :data:`MAX_FRAME_PIXELS`), then the first and the last frame
    are decoded as training decodes them (``get_batch``), so a truncated stream or frames decord cannot
    convert are caught here rather than in the middle of training.
    """
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    problem = container_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    with readable_path(path) as name:
        size = header_frame_size(name)
        if size is not None and size[0] * size[1] > MAX_FRAME_PIXELS:
            raise DataError(
                f"{path}: its header claims frames of {size[0]}×{size[1]} pixels, more than the "
                f"{MAX_FRAME_PIXELS:,} a frame may have; not decoded"
            )
        try:
            reader = VideoReader(name, ctx=cpu(0), num_threads=1)
        except (DECORDError, RuntimeError) as err:
            text = str(err)
            if "cannot find video stream" in text:
                raise DataError(f"{path}: no video stream (audio only, or not a video)") from err
            raise DataError(
                f"{path}: cannot be opened as a video: corrupt or unsupported header ({first_line(text, 120)})"
            ) from err
        try:
            count = len(reader)
            if count == 0:
                raise DataError(f"{path}: the video stream has no frames")
            height, width, channels = reader[0].shape
            if height * width > MAX_FRAME_PIXELS:
                raise DataError(
                    f"{path}: frames of {width}×{height} pixels, more than the {MAX_FRAME_PIXELS:,} a frame may have"
                )
            if channels != 3:
                raise DataError(
                    f"{path}: decord decodes its {width}×{height} frames as {channels} values per pixel, not RGB "
                    "(a frame size it cannot convert); re-encode the video at another size"
                )
            reader.get_batch([0, count - 1]).asnumpy()
            fps = float(reader.get_avg_fps())
        except (DECORDError, RuntimeError) as err:
            first = first_line(str(err), 120)
            raise DataError(f"{path}: frames cannot be decoded: truncated or corrupt stream ({first})") from err
    return VideoInfo(path, count, fps, height, width)


def open_reader(path: Path, threads: int = 1, size: tuple[int, int] | None = None) -> VideoReader:
    """decord's reader of ``path``, scaling frames to ``size`` (height, width) as it decodes; None: native size.

    Opening reads the container's packet index (no frame is decoded), which gives decord its frame count.
    """
    height, width = size if size is not None else (-1, -1)
    try:
        with readable_path(path) as name:  # decord holds the file open: the plain-name link may go afterwards
            return VideoReader(name, ctx=cpu(0), num_threads=threads, width=width, height=height)
    except (DECORDError, RuntimeError) as err:
        raise DataError(f"{path}: cannot be opened as a video ({first_line(str(err), 160)})") from err


def decode(reader: VideoReader, path: Path, indices: Sequence[int]) -> np.ndarray:
    """Frames ``indices`` of an open reader as uint8 T×H×W×3, decoding only those frames.

    Repeated indices (loop, pad) are decoded once; decord is given them in order, and decodes each from the
    key frame before it, so a frame is the same pixels whichever others are asked for with it.
    """
    unique = sorted(set(indices))
    try:
        batch = reader.get_batch(unique).asnumpy()  # U×H×W×3
    except (DECORDError, RuntimeError, IndexError) as err:
        first = first_line(str(err), 160)
        raise DataError(f"{path}: frames {unique[0]}..{unique[-1]} cannot be decoded ({first})") from err
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise DataError(f"{path}: frames decode to shape {tuple(batch.shape)}, not T×H×W×3")
    return batch[np.searchsorted(np.asarray(unique), np.asarray(indices))]


def read_frames(path: Path, indices: list[int], threads: int = 1, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Frames ``indices`` of ``path`` as uint8 T×H×W×3 (``size``: height, width to scale to while decoding)."""
    return torch.from_numpy(decode(open_reader(path, threads, size), path, indices))


def probe_header(path: Path) -> VideoInfo:
    """What the container's header says, nothing decoded: frame count, frame size and fps, or a DataError.

    The check of big folders (:data:`~mimsdk.adapters.video.scan.FULL_CHECK_UP_TO`): the container's own
    sizes (a truncated file), the video stream, the frame size limit and the frame count are read from
    headers (PyAV) in milliseconds, where :func:`probe_video` decodes frames. A header without a frame count
    (Matroska, WebM) gives duration × fps. What only decoding shows (a corrupt stream, frames decord cannot
    convert) is found when training reads the clip, which is then named once and replaced.
    """
    import av

    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    problem = container_problem(path)
    if problem:
        raise DataError(f"{path}: {problem}")
    with readable_path(path) as name:
        try:
            container = av.open(name)
        except (av.FFmpegError, OSError) as err:
            first = first_line(str(err), 120)
            raise DataError(f"{path}: cannot be opened as a video: corrupt or unsupported header ({first})") from err
        with container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream (audio only, or not a video)")
            stream = container.streams.video[0]
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 0.0
            frames = int(stream.frames)
            if not frames and fps and stream.duration is not None:
                frames = round(float(stream.duration * stream.time_base) * fps)
            elif not frames and fps and container.duration is not None:
                frames = round(container.duration / av.time_base * fps)
    if width * height > MAX_FRAME_PIXELS:
        raise DataError(
            f"{path}: its header claims frames of {width}×{height} pixels, more than the {MAX_FRAME_PIXELS:,} a "
            "frame may have; not decoded"
        )
    if frames <= 0 or width * height == 0:
        raise DataError(f"{path}: its header declares no frames (0 frames of {width}×{height})")
    return VideoInfo(path, frames, fps, height, width)


def decode_size(info: VideoInfo, short_side: int | None) -> tuple[int, int] | None:
    """(height, width) to decode at so the shorter side is ``short_side``; None keeps the native size."""
    short = min(info.height, info.width)
    if short_side is None or short <= short_side:
        return None
    scale = short_side / short
    return max(1, round(info.height * scale)), max(1, round(info.width * scale))
