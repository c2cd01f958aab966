"""Video: clips read with decord, VideoMAE's sampling and cropping, frame-strip pictures.

A clip is ``model.input_size[0]`` frames taken every ``data.options.stride`` frames
(VideoMAE's 16×4 on Kinetics), cropped and resized the same way for all its frames,
as a tensor C×T×H×W. Tokens are tubelets (``model.patch_size``, e.g. 2×16×16) and the
core's ``tube`` masker hides the same places in every time step; nothing here is
specific to the model beyond the shape it expects.

Every file is opened once before training (frame count, fps, size, first and last
frame decoded): an empty, corrupt or audio-only file is named in one warning and
skipped, or in ``strict`` mode stops the run. A clip shorter than the span a sample
needs follows ``data.options.short_clip``: ``loop`` (play again from the start),
``pad`` (repeat the last frame) or ``error`` (the file counts as unusable); each
short file is named once with the frames it has and the frames it needs.

Recipe keys of this adapter live under ``data.options`` (:class:`VideoOptions`).
Labels come from class sub-folders or ``data.labels``, a CSV with columns
``path`` and ``label``, paths relative to the CSV's folder (:mod:`mimsdk.labels`).
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from decord import DECORDError, VideoReader, cpu
from PIL import Image, ImageDraw
from torchvision import tv_tensors
from torchvision.transforms import v2

from mimsdk.config import ConfigError, DataConfig, ModelConfig, adapter_options, choice
from mimsdk.data import DataError, normalisation
from mimsdk.labels import label_files
from mimsdk.picture import grid

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PICTURE_SAMPLES = 4  # clips in a reconstruction picture: each takes three rows
PICTURE_FRAMES = 8  # frames per row at most
MIN_CELL = 96  # frames are enlarged to at least this many pixels so tubelets stay visible


@dataclass
class VideoOptions:
    """``data.options`` of the video adapter. Frames per clip is ``model.input_size[0]``."""

    stride: int = 4  # frames between two sampled frames (VideoMAE's sampling rate: 4 on Kinetics, 2 on SSv2)
    short_clip: str = choice("loop", "loop", "pad", "error")  # a file with fewer frames than a clip spans
    threads: int = 1  # decord decoding threads per open file (per DataLoader worker)
    clips_per_video: int = 1  # items per file and epoch: random windows in training, evenly spaced in evaluation
    short_side: int | None = None  # decode straight to this shorter side (decord resizes); None: native size
    extensions: list[str] = field(default_factory=lambda: [".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"])


def video_options(data: DataConfig) -> VideoOptions:
    """``data.options`` checked: types and names by :func:`adapter_options`, ranges here."""
    options = adapter_options(VideoOptions, data)
    for key in ("stride", "threads", "clips_per_video", "short_side"):
        value = getattr(options, key)
        if value is not None and value < 1:
            raise ConfigError(f"data.options.{key}: must be at least 1, got {value}")
    options.extensions = [e.lower() if e.startswith(".") else f".{e.lower()}" for e in options.extensions]
    return options


@dataclass
class VideoInfo:
    """What the scan learnt of one file."""

    path: Path
    frames: int
    fps: float
    height: int
    width: int


def probe_video(path: Path) -> VideoInfo | str:
    """Open ``path`` once with decord: its facts, or the reason it cannot be used.

    The first and the last frame are decoded, so a header that opens over a
    truncated stream is caught here rather than in the middle of training.
    """
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=1)
    except (DECORDError, RuntimeError) as err:
        text = str(err)
        if "cannot find video stream" in text:
            return "no video stream (audio only, or not a video)"
        return f"cannot be opened as a video: corrupt or unsupported header ({text.splitlines()[0][:120]})"
    try:
        count = len(reader)
        if count == 0:
            return "the video stream has no frames"
        height, width, _ = reader[0].shape
        reader[count - 1].asnumpy()
        fps = float(reader.get_avg_fps())
    except (DECORDError, RuntimeError) as err:
        return f"frames cannot be decoded: truncated or corrupt stream ({str(err).splitlines()[0][:120]})"
    return VideoInfo(path, count, fps, height, width)


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


def read_frames(path: Path, indices: list[int], threads: int = 1, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Frames ``indices`` of ``path`` as uint8 T×H×W×3, decoding only those frames.

    ``size`` (height, width) makes decord scale while it decodes. Repeated
    indices (loop, pad) are decoded once; decord is given them in order.
    """
    unique = sorted(set(indices))
    height, width = size if size is not None else (-1, -1)
    try:
        reader = VideoReader(str(path), ctx=cpu(0), num_threads=threads, width=width, height=height)
        batch = reader.get_batch(unique).asnumpy()  # U×H×W×3
    except (DECORDError, RuntimeError) as err:
        raise DataError(f"{path}: frames {unique[0]}..{unique[-1]} cannot be decoded ({err})") from err
    order = np.searchsorted(np.asarray(unique), np.asarray(indices))
    return torch.from_numpy(batch[order])


def decode_size(info: VideoInfo, short_side: int | None) -> tuple[int, int] | None:
    """(height, width) to decode at so the shorter side is ``short_side``; None keeps the native size."""
    short = min(info.height, info.width)
    if short_side is None or short <= short_side:
        return None
    scale = short_side / short
    return max(1, round(info.height * scale)), max(1, round(info.width * scale))


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
    """Open every video under ``root`` once; warn about (or, ``strict``, stop at) the unusable ones.

    Files without a video extension (``options.extensions``) are left out, with
    one log line. Raises DataError for a missing path, no video files, no usable
    video, or in strict mode the first unusable one.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if root.is_file():
        files = [root]
    else:
        found = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        files = [p for p in found if p.suffix.lower() in options.extensions]
        if len(files) < len(found):
            log.info("%s: left out %d files without a video extension", root, len(found) - len(files))
    if not files:
        raise DataError(f"data path {root} holds no video files ({', '.join(options.extensions)})")
    with ThreadPoolExecutor(max_workers=4) as pool:
        probes = list(pool.map(probe_video, files))

    span = clip_span(frames, options.stride)
    bad: list[tuple[Path, str]] = []
    videos, short = [], []
    for path, probe in zip(files, probes):
        if isinstance(probe, str):
            bad.append((path, probe))
        elif probe.frames < span and options.short_clip == "error":
            bad.append((path, f"{probe.frames} frames, fewer than the {span} a clip of {frames} frames at stride "
                               f"{options.stride} needs (data.options.short_clip=error)"))  # fmt: skip
        else:
            videos.append(probe)
            if probe.frames < span:
                short.append(path)
    if bad and strict:
        path, reason = bad[0]
        raise DataError(f"{path}: {reason} (strict mode; {len(bad)} unusable file(s) in {root})")
    for path, reason in bad:
        warnings.warn(f"skipping {path}: {reason}", stacklevel=2)
    if bad:
        warnings.warn(f"skipped {len(bad)} of {len(files)} videos in {root}; training on {len(videos)}", stacklevel=2)
    if not videos:
        raise DataError(f"data path {root} holds no usable videos ({len(bad)} unusable files)")
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


class VideoDataset(torch.utils.data.Dataset):
    """Videos -> (clip C×T×H×W float32 normalised, label); ``clips_per_video`` items per file.

    Item ``i`` is clip ``i // N`` of video ``i % N``: the first N items are N different
    videos (what reconstruction pictures show).

    Random choices (start frame, crop, flip) come from torch's global generator,
    which :class:`~mimsdk.data.SeededDataset` seeds per item: exact resume holds.
    """

    def __init__(self, scan: Scan, frames: int, options: VideoOptions, transform: v2.Compose, train: bool) -> None:
        self.videos, self.labels, self.classes = scan.videos, scan.labels, scan.classes
        self.frames, self.options, self.transform, self.train = frames, options, transform, train

    def __len__(self) -> int:
        return len(self.videos) * self.options.clips_per_video

    def indices(self, index: int) -> list[int]:
        """Source frames of item ``index`` (random in training: call under the item's seed)."""
        clip, video = divmod(index, len(self.videos))
        o = self.options
        return clip_indices(
            self.videos[video].frames, self.frames, o.stride, o.short_clip, self.train, clip, o.clips_per_video
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        video = index % len(self.videos)
        info = self.videos[video]
        size = decode_size(info, self.options.short_side)
        frames = read_frames(info.path, self.indices(index), self.options.threads, size)
        clip = self.transform(tv_tensors.Video(frames.permute(0, 3, 1, 2)))  # T×3×H×W: one crop and flip for all
        return clip.permute(1, 0, 2, 3).contiguous().as_subclass(torch.Tensor), self.labels[video]


class VideoAdapter:
    name = "video"

    def __init__(self) -> None:
        # A run builds the training and the evaluation view of one folder: scan (and warn) once.
        self._scans: dict[tuple, Scan] = {}

    def _check(self, data: DataConfig, model: ModelConfig) -> tuple[VideoOptions, list[float], list[float]]:
        options = video_options(data)
        if len(model.input_size) != 3:
            raise DataError(f"model.input_size {model.input_size} is not 3D (frames, height, width) as video needs")
        if model.in_chans != 3:
            raise DataError(f"model.in_chans is {model.in_chans}; video clips are RGB (3 channels)")
        mean, std = normalisation(data.mean, data.std, 3, IMAGENET_MEAN, IMAGENET_STD)
        return options, mean, std

    def scan(self, path: str | Path, data: DataConfig, model: ModelConfig) -> Scan:
        options = video_options(data)
        frames = model.input_size[0]
        key = (str(Path(path).resolve()), data.labels, data.strict, frames, options.stride, options.short_clip,
               tuple(options.extensions))  # fmt: skip
        if key not in self._scans:
            self._scans[key] = scan_videos(path, frames, options, data.labels, data.strict)
        return self._scans[key]

    def transform(self, data: DataConfig, model: ModelConfig, train: bool) -> v2.Compose:
        _, mean, std = self._check(data, model)
        size = list(model.input_size[1:])
        bilinear = v2.InterpolationMode.BILINEAR  # VideoMAE's; bicubic costs more per frame for no gain here
        if train:
            steps = [v2.RandomResizedCrop(size, scale=tuple(data.crop_scale), interpolation=bilinear, antialias=True)]
            steps += [v2.RandomHorizontalFlip()] if data.hflip else []
        else:
            steps = [v2.Resize(min(size), interpolation=bilinear, antialias=True), v2.CenterCrop(size)]
        return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def dataset(self, path: str | Path, data: DataConfig, model: ModelConfig, train: bool) -> VideoDataset:
        options, _, _ = self._check(data, model)
        scan = self.scan(path, data, model)
        return VideoDataset(scan, model.input_size[0], options, self.transform(data, model, train), train)

    def metadata(self, data: DataConfig, model: ModelConfig) -> dict[str, Any]:
        options, mean, std = self._check(data, model)
        return {
            "channel_names": ["red", "green", "blue"],
            "mean": mean,
            "std": std,
            "frames": model.input_size[0],
            "stride": options.stride,
        }

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        """For each clip (up to 4), three rows: original, masked and reconstruction; columns are frames.

        One frame per tubelet time step is shown (every other frame with 2-frame
        tubelets), at most 8, evenly spread.
        """
        strips = _strips(recon, model)
        rows: list[list[np.ndarray]] = []
        for i, (original, masked, rebuilt) in enumerate(strips["rows"][:PICTURE_SAMPLES]):
            h, w = original[0].shape[:2]
            rows.append([_label(f"clip {i}\noriginal", h, w), *original])
            rows.append([_label("masked", h, w), *masked])
            rows.append([_label("reconstruction", h, w), *rebuilt])
        return grid(rows, ["", *[f"frame {t}" for t in strips["times"]]], min_cell=MIN_CELL)

    def sample_path(self) -> Path | None:
        return None


def _strips(recon: dict[str, torch.Tensor], model: ModelConfig, every_frame: bool = False) -> dict[str, Any]:
    """Denormalised, enlarged H×W×3 frames per clip: original, masked (grey), reconstruction."""
    meta = model.metadata
    mean = torch.tensor(meta.get("mean", [0.0] * model.in_chans)).view(-1, 1, 1, 1)
    std = torch.tensor(meta.get("std", [1.0] * model.in_chans)).view(-1, 1, 1, 1)
    frames = recon["input"].shape[2]
    step = model.patch_size[0]
    times = list(range(frames)) if every_frame else list(range(0, frames, step))
    if not every_frame and len(times) > PICTURE_FRAMES:
        times = [times[round(i * (len(times) - 1) / (PICTURE_FRAMES - 1))] for i in range(PICTURE_FRAMES)]
    height, width = recon["input"].shape[3:]
    scale = max(1, -(-MIN_CELL // max(height, width)))

    def show(clip: torch.Tensor, hidden: torch.Tensor | None = None) -> list[np.ndarray]:
        video = (clip.detach().float().cpu() * std + mean).permute(1, 2, 3, 0).numpy()  # T×H×W×C
        if hidden is not None:
            m = hidden.detach().float().cpu()[0].numpy()[..., None]  # T×H×W×1, same plane in every step
            video = video * (1 - m) + 0.5 * m
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
        return [video[t] for t in times]

    rows = [
        (show(recon["input"][i]), show(recon["input"][i], recon["mask"][i]), show(recon["reconstruction"][i]))
        for i in range(recon["input"].shape[0])
    ]
    return {"rows": rows, "times": times}


def _label(text: str, height: int, width: int) -> np.ndarray:
    """A white height×width×3 cell with ``text`` in black, to name a row of the grid."""
    cell = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(cell).multiline_text((4, height // 2 - 12), text, fill="black")
    return np.asarray(cell, dtype=np.float32) / 255.0


def save_gif(recon: dict[str, torch.Tensor], model: ModelConfig, path: str | Path, duration_ms: int = 160) -> Path:
    """An animated GIF of ``model.reconstruct`` output: one frame per time step, each a grid with
    a row per clip (up to 4) and columns original | masked | reconstruction. Returns ``path``."""
    strips = _strips(recon, model, every_frame=True)
    pictures = []
    for t in range(len(strips["times"])):
        rows = [[original[t], masked[t], rebuilt[t]] for original, masked, rebuilt in strips["rows"][:PICTURE_SAMPLES]]
        pictures.append(grid(rows, ["original", "masked", "reconstruction"], min_cell=MIN_CELL))
    path = Path(path)
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)
    return path


ADAPTER = VideoAdapter()
