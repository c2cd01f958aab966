"""Video: clips read with decord, VideoMAE's sampling and cropping, frame-strip pictures.

A clip is ``model.input_size[0]`` frames taken every ``data.options.stride`` frames
(VideoMAE's 16×4 on Kinetics), cropped and resized the same way for all its frames,
as a tensor C×T×H×W. Tokens are tubelets (``model.patch_size``, e.g. 2×16×16) and the
core's ``tube`` masker hides the same places in every time step; nothing here is
specific to the model beyond the shape it expects.

The preparation is in two halves (:mod:`~mimsdk.adapters.video.stored`), so a folder and the shard set
``mimsdk shard`` makes of it train alike: the stored half keeps every ``stride``-th frame of a video decoded at
the training resolution (``short_side``), uint8, with its fps and source; the finish takes a window of
consecutive stored frames (a random start in training) and crops, flips and normalises it. A shard set
records ``short_side`` and ``stride``; a recipe that asks for others is refused, naming the key.

Before training every file is looked at once. In a folder of up to
:data:`~mimsdk.adapters.video.scan.FULL_CHECK_UP_TO` videos its container is checked against its own
sizes (a truncated AVI, MP4 or MKV), its header read (frame size, at most
:data:`MAX_FRAME_PIXELS`), then frame count, fps and the first and last frame decoded
the way training decodes them; a bigger folder has its headers read only. An empty, truncated, corrupt,
frameless or audio-only file, or one whose frames decord cannot convert to RGB (some tiny sizes, 8×8), is
named in one warning and skipped, or in ``strict`` mode stops the run. A file that fails
only later, while training reads it, is named once and replaced
(:class:`~mimsdk.data.SampleDataset`). A clip shorter than the span a sample
needs follows ``data.options.short_clip``: ``loop`` (play again from the start),
``pad`` (repeat the last frame taken at the stride) or ``error`` (the file counts as unusable); each
short file is named once with the frames it has and the frames it needs.

Recipe keys of this adapter live under ``data.options`` (:class:`VideoOptions`); ``stride`` and
``short_clip`` are stored with the model and read back with it, so ``embed`` and ``probe`` sample clips
as pre-training did.
Labels come from class sub-folders or ``data.labels``, a CSV with columns
``path`` and ``label``, paths relative to the CSV's folder (:mod:`mimsdk.labels`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.transforms import v2

from mimsdk.adapter import Adapter
from mimsdk.adapters.video.clips import clip_indices, clip_span, stored_count
from mimsdk.adapters.video.containers import container_problem
from mimsdk.adapters.video.dataset import VideoDataset
from mimsdk.adapters.video.options import VideoOptions, check_video_options
from mimsdk.adapters.video.pictures import picture, save_gif
from mimsdk.adapters.video.reading import (
    MAX_FRAME_PIXELS,
    VideoInfo,
    decode_size,
    probe_header,
    probe_video,
    read_frames,
)
from mimsdk.adapters.video.scan import FULL_CHECK_UP_TO, POLICY, Scan, scan_videos
from mimsdk.adapters.video.stored import MAX_STORED_BYTES, FileFrames, FinishClip, VideoFiles, Windows
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import Prepared, normalisation
from mimsdk.errors import DataError
from mimsdk.registry import ADAPTERS

__all__ = [
    "FULL_CHECK_UP_TO", "MAX_FRAME_PIXELS", "MAX_STORED_BYTES", "FileFrames", "FinishClip", "Scan", "VideoAdapter",
    "VideoDataset", "VideoFiles", "VideoInfo", "VideoOptions", "Windows", "check_video_options", "clip_indices",
    "clip_span", "container_problem", "decode_size", "probe_header", "probe_video", "read_frames", "save_gif",
    "scan_videos", "stored_count", "video_options",
]  # fmt: skip

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def video_options(data: DataConfig, model: ModelConfig | None = None) -> VideoOptions:
    """``data.options`` (over those stored with ``model``) checked, as the video adapter reads them."""
    return VideoAdapter().options(data, model)


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
        return VideoDataset(self.prepared(path, data, model, opts), self.finish(data, model, opts, train))

    # -- shard sets: the stored half and the finish (mimsdk.adapters.video.stored) --------------------

    def prepared(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: VideoOptions, verify: bool = False
    ) -> VideoFiles:
        """One stored sample per usable video at ``path``: every ``stride``-th frame at the training resolution."""
        self._check(data, model)
        return VideoFiles(self.scan(path, data, model, opts), Path(path), opts, verify)

    def finish(self, data: DataConfig, model: ModelConfig, opts: VideoOptions, train: bool) -> FinishClip:
        return FinishClip(self.transform(data, model, train), model.input_size[0], opts, train)

    def preparation(self, data: DataConfig, model: ModelConfig, opts: VideoOptions) -> dict[str, Any]:
        # What the stored frames depend on. Not the clip's frames nor short_clip: a window and its policy are
        # the finish's, so one shard set serves 8- and 16-frame recipes alike.
        return {"short_side": opts.short_side, "stride": opts.stride}

    def shard_reader(self, path: str | Path, data: DataConfig, model: ModelConfig, opts: VideoOptions) -> Prepared:
        """The shard set's videos, checked, as ``clips_per_video`` items each (the folder's mapping)."""
        return Windows(super().shard_reader(path, data, model, opts), opts.clips_per_video)

    def describe(self, data: DataConfig, model: ModelConfig, opts: VideoOptions) -> dict[str, Any]:
        mean, std = self._check(data, model)
        # "frames" and "stride" stay at the top level for readers of older metadata (model cards).
        names = ["red", "green", "blue"]
        return {"channel_names": names, "mean": mean, "std": std, "frames": model.input_size[0], "stride": opts.stride}

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        return picture(recon, model)
