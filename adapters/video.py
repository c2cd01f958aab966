"""Video: clips read with decord, VideoMAE's sampling and cropping, frame-strip pictures.

A clip is ``model.input_size[0]`` frames taken every ``data.options.stride`` frames
(VideoMAE's 16×4 on Kinetics), cropped and resized the same way for all its frames,
as a tensor C×T×H×W. Tokens are tubelets (``model.patch_size``, e.g. 2×16×16) and the
core's ``tube`` masker hides the same places in every time step; nothing here is
specific to the model beyond the shape it expects.

Every file is opened once before training: its container is checked against its own
sizes (a truncated AVI, MP4 or MKV), its header read (frame size, at most
:data:`MAX_FRAME_PIXELS`), then frame count, fps and the first and last frame decoded
the way training decodes them. An empty, truncated, corrupt, frameless or audio-only
file, or one whose frames decord cannot convert to RGB (some tiny sizes, 8×8), is named
in one warning and skipped, or in ``strict`` mode stops the run. A file that fails
only later, while training reads it, is named once and replaced
(:class:`~mimsdk.data.SampleDataset`). A clip shorter than the span a sample
needs follows ``data.options.short_clip``: ``loop`` (play again from the start),
``pad`` (repeat the last frame) or ``error`` (the file counts as unusable); each
short file is named once with the frames it has and the frames it needs.

Recipe keys of this adapter live under ``data.options`` (:class:`VideoOptions`); ``stride`` and
``short_clip`` are stored with the model and read back with it, so ``embed`` and ``probe`` sample clips
as pre-training did.
Labels come from class sub-folders or ``data.labels``, a CSV with columns
``path`` and ``label``, paths relative to the CSV's folder (:mod:`mimsdk.labels`).
"""

from __future__ import annotations

import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from decord import DECORDError, VideoReader, cpu
from PIL import Image, ImageDraw
from torchvision import tv_tensors
from torchvision.transforms import v2

from mimsdk.adapter import COLUMNS, Adapter, ScanPolicy, grey_out, readable_path, unnormalise
from mimsdk.config import DataConfig, ModelConfig, choice
from mimsdk.data import SampleDataset, first_line, normalisation
from mimsdk.errors import ConfigError, DataError
from mimsdk.labels import label_files
from mimsdk.picture import grid
from mimsdk.registry import ADAPTERS

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
PICTURE_SAMPLES = 4  # clips in a reconstruction picture: each takes three rows
PICTURE_FRAMES = 8  # frames per row at most
MIN_CELL = 96  # frames are enlarged to at least this many pixels so tubelets stay visible
POLICY = ScanPolicy(unit="videos")
MAX_FRAME_PIXELS = 1 << 26  # 67 million pixels a frame (8K UHD is 33 million): a larger header is refused


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


def video_options(data: DataConfig, model: ModelConfig | None = None) -> VideoOptions:
    """``data.options`` (over those stored with ``model``) checked, as the video adapter reads them."""
    return VideoAdapter().options(data, model)


@dataclass
class VideoInfo:
    """What the scan learnt of one file."""

    path: Path
    frames: int
    fps: float
    height: int
    width: int


def _boxes(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """ISO BMFF boxes (MP4, MOV) between ``start`` and ``end`` of ``data``: (type, payload start, box end)."""
    boxes = []
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start : start + 8])
        header = 8
        if size == 1 and start + 16 <= end:
            size, header = struct.unpack(">Q", data[start + 8 : start + 16])[0], 16
        elif size == 0:
            size = end - start
        if size < header:
            break
        boxes.append((kind, start + header, start + size))
        start += size
    return boxes


def _mp4_problem(path: Path, size: int) -> str | None:
    """A truncated MP4/MOV (a top-level box runs past the end) or one whose video track holds no frames."""
    with path.open("rb") as f:
        top, offset = [], 0
        while offset + 8 <= size:  # walk the top-level boxes by seeking: mdat is never read
            f.seek(offset)
            head = f.read(16)
            length, kind = struct.unpack(">I4s", head[:8])
            if length == 1 and len(head) == 16:
                length = struct.unpack(">Q", head[8:16])[0]
            elif length == 0:
                length = size - offset
            if length < 8:
                return None  # not a box structure we understand: leave the verdict to the decoder
            if offset + length > size:
                return (
                    f"truncated: its '{kind.decode('latin-1')}' box runs to byte {offset + length}, "
                    f"the file ends at {size}"
                )
            top.append((kind, offset, length))
            offset += length
        moov = next(((o, n) for k, o, n in top if k == b"moov"), None)
        if moov is None or moov[1] > 64 << 20:
            return None
        f.seek(moov[0])
        data = f.read(moov[1])
    inside = _boxes(data, 8, len(data))
    if any(k == b"moof" for k, _, _ in top) or any(k == b"mvex" for k, _, _ in inside):
        return None  # a fragmented MP4 keeps its samples in fragments, not in the header's tables
    tracks = [(x, y) for k, x, y in inside if k == b"trak"]
    if not tracks:
        return "its MP4 header holds no track: an empty video (0 frames)"
    for a, b in tracks:
        mdia = next(((x, y) for k, x, y in _boxes(data, a, b) if k == b"mdia"), None)
        if mdia is None:
            continue
        inner = _boxes(data, *mdia)
        hdlr = next(((x, y) for k, x, y in inner if k == b"hdlr"), None)
        if hdlr is None or data[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        minf = next(((x, y) for k, x, y in inner if k == b"minf"), None)
        stbl = next(((x, y) for k, x, y in _boxes(data, *minf) if k == b"stbl"), None) if minf else None
        stsz = next(((x, y) for k, x, y in _boxes(data, *stbl) if k in (b"stsz", b"stz2")), None) if stbl else None
        if stsz is not None and stsz[0] + 12 <= stsz[1]:
            if struct.unpack(">I", data[stsz[0] + 8 : stsz[0] + 12])[0] == 0:
                return "its video track holds no frames (0 frames)"
    return None


def container_problem(path: Path) -> str | None:
    """What the container's own sizes say is wrong, before any decoding: a RIFF (AVI) or ISO BMFF (MP4, MOV)
    file shorter than its header declares (truncated; decoders would conceal the missing frames), an MP4 whose
    header holds no frames, or a Matroska (MKV, WebM) segment running past the end. None if nothing is."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(64)
    if head[:4] == b"RIFF" and len(head) >= 12:
        declared = struct.unpack("<I", head[4:8])[0] + 8
        if declared > size:
            return f"truncated: its RIFF header declares {declared} bytes, the file holds {size}"
        return None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return _mp4_problem(path, size)
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: Matroska or WebM
        return _matroska_problem(path, size)
    return None


def _vint(data: bytes, at: int, strip: bool) -> tuple[int, int] | None:
    """An EBML variable-length integer at ``at``: (value, length), the marker bit stripped for sizes."""
    if at >= len(data) or data[at] == 0:
        return None
    length = 8 - data[at].bit_length() + 1
    if at + length > len(data):
        return None
    value = int.from_bytes(data[at : at + length], "big")
    if strip:
        value &= (1 << (7 * length)) - 1
        if value == (1 << (7 * length)) - 1:
            return -1, length  # unknown size (a live stream)
    return value, length


def _matroska_problem(path: Path, size: int) -> str | None:
    with path.open("rb") as f:
        head = f.read(4096)
    header_size = _vint(head, 4, True)
    if header_size is None:
        return None
    segment = 4 + header_size[1] + header_size[0]
    seg_id = _vint(head, segment, False)
    if seg_id is None or head[segment : segment + seg_id[1]] != b"\x18\x53\x80\x67":
        return None
    seg_size = _vint(head, segment + seg_id[1], True)
    if seg_size is None or seg_size[0] < 0:
        return None
    declared = segment + seg_id[1] + seg_size[1] + seg_size[0]
    if declared > size:
        return f"truncated: its Matroska segment declares {declared} bytes, the file holds {size}"
    return None


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
        with readable_path(path) as name:
            reader = VideoReader(name, ctx=cpu(0), num_threads=threads, width=width, height=height)
        batch = reader.get_batch(unique).asnumpy()  # U×H×W×3
    except (DECORDError, RuntimeError) as err:
        first = first_line(str(err), 160)
        raise DataError(f"{path}: frames {unique[0]}..{unique[-1]} cannot be decoded ({first})") from err
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise DataError(f"{path}: frames decode to shape {tuple(batch.shape)}, not T×H×W×3")
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
    video, or in strict mode the first unusable one (:class:`~mimsdk.adapter.ScanPolicy`).
    """
    root = Path(root)
    wanted = f"video files ({', '.join(options.extensions)})"
    files = POLICY.walk(root, wanted, lambda p: p.suffix.lower() in options.extensions)
    span = clip_span(frames, options.stride)

    def probe(path: Path) -> VideoInfo:
        info = probe_video(path)
        if info.frames < span and options.short_clip == "error":
            raise DataError(f"{path}: {info.frames} frames, fewer than the {span} a clip of {frames} frames at "
                            f"stride {options.stride} needs (data.options.short_clip=error)")  # fmt: skip
        return info

    videos = [info for _, info in POLICY.check(root, files, probe, strict)]
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


class VideoDataset(SampleDataset):
    """Videos -> (clip C×T×H×W float32 normalised, label); ``clips_per_video`` items per file.

    A file that fails when read is named once and its clips replaced by the next good ones.

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

    def source(self, index: int) -> str:
        return str(self.videos[index % len(self.videos)].path)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        video = index % len(self.videos)
        info = self.videos[video]
        size = decode_size(info, self.options.short_side)
        frames = read_frames(info.path, self.indices(index), self.options.threads, size)
        clip = self.transform(tv_tensors.Video(frames.permute(0, 3, 1, 2)))  # T×3×H×W: one crop and flip for all
        return clip.permute(1, 0, 2, 3).contiguous().as_subclass(torch.Tensor), self.labels[video]


@ADAPTERS.register("video")
class VideoAdapter(Adapter):
    """Video clips C×T×H×W (``model.input_size`` is frames, height, width), VideoMAE's sampling and crops."""

    name = "video"
    Options = VideoOptions
    uses = ("crop_scale", "hflip", "mean", "std")
    # How clips were sampled from the files: read back at embed/probe time (a stride-2 model reads stride 2).
    stored = ("stride", "short_clip")
    policy = POLICY

    def check_options(self, opts: VideoOptions, model: ModelConfig | None) -> VideoOptions:
        return check_video_options(opts)

    def _check(self, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        if len(model.input_size) != 3:
            raise DataError(f"model.input_size {model.input_size} is not 3D (frames, height, width) as video needs")
        if model.in_chans != 3:
            raise DataError(f"model.in_chans is {model.in_chans}; video clips are RGB (3 channels)")
        return normalisation(data.mean, data.std, 3, IMAGENET_MEAN, IMAGENET_STD)

    def scan(self, path: str | Path, data: DataConfig, model: ModelConfig, options: VideoOptions) -> Scan:
        frames = model.input_size[0]
        extra = (frames, options.stride, options.short_clip, tuple(options.extensions))
        return self.remember(path, data, extra, lambda: scan_videos(path, frames, options, data.labels, data.strict))

    def transform(self, data: DataConfig, model: ModelConfig, train: bool) -> v2.Compose:
        mean, std = self._check(data, model)
        size = list(model.input_size[1:])
        bilinear = v2.InterpolationMode.BILINEAR  # VideoMAE's; bicubic costs more per frame for no gain here
        if train:
            crop = v2.RandomResizedCrop(size, scale=self.crop_scale(data), interpolation=bilinear, antialias=True)
            steps = [crop, *([v2.RandomHorizontalFlip()] if self.hflip(data) else [])]
        else:
            steps = [v2.Resize(min(size), interpolation=bilinear, antialias=True), v2.CenterCrop(size)]
        return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def build(self, path: Path, data: DataConfig, model: ModelConfig, opts: VideoOptions, train: bool) -> VideoDataset:
        self._check(data, model)
        scan = self.scan(path, data, model, opts)
        return VideoDataset(scan, model.input_size[0], opts, self.transform(data, model, train), train)

    def describe(self, data: DataConfig, model: ModelConfig, opts: VideoOptions) -> dict[str, Any]:
        mean, std = self._check(data, model)
        # "frames" and "stride" stay at the top level for readers of older metadata (model cards).
        names = ["red", "green", "blue"]
        return {"channel_names": names, "mean": mean, "std": std, "frames": model.input_size[0], "stride": opts.stride}

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        """For each clip (up to 4), three rows: original, masked and reconstruction; columns are frames.

        One frame per tubelet time step is shown (every other frame with 2-frame
        tubelets), at most 8, evenly spread.
        """
        strips = _strips(recon, model)
        rows: list[list[np.ndarray]] = []
        for i, (original, masked, rebuilt) in enumerate(strips["rows"][:PICTURE_SAMPLES]):
            h, w = original[0].shape[:2]
            rows.append([_label(f"clip {i}\n{COLUMNS[0]}", h, w), *original])
            rows += [[_label(title, h, w), *strip] for title, strip in zip(COLUMNS[1:], (masked, rebuilt))]
        return grid(rows, ["", *[f"frame {t}" for t in strips["times"]]], min_cell=MIN_CELL)


def _strips(recon: dict[str, torch.Tensor], model: ModelConfig, every_frame: bool = False) -> dict[str, Any]:
    """Denormalised, enlarged H×W×3 frames per clip: original, masked (grey), reconstruction."""
    frames = recon["input"].shape[2]
    step = model.patch_size[0]
    times = list(range(frames)) if every_frame else list(range(0, frames, step))
    if not every_frame and len(times) > PICTURE_FRAMES:
        times = [times[round(i * (len(times) - 1) / (PICTURE_FRAMES - 1))] for i in range(PICTURE_FRAMES)]
    height, width = recon["input"].shape[3:]
    scale = max(1, -(-MIN_CELL // max(height, width)))

    def show(clip: torch.Tensor, hidden: torch.Tensor | None = None) -> list[np.ndarray]:
        video = unnormalise(clip, model).permute(1, 2, 3, 0).numpy()  # T×H×W×C
        if hidden is not None:  # T×H×W×1, the same plane in every step
            video = grey_out(video, hidden.detach().float().cpu()[0].numpy()[..., None])
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
        pictures.append(grid(rows, COLUMNS, min_cell=MIN_CELL))
    path = Path(path)
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)
    return path
