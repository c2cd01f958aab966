"""The dataset of clips: ``clips_per_video`` items per file, one crop and flip for all of a clip's frames."""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from mimsdk.adapters.video.clips import clip_indices
from mimsdk.adapters.video.options import VideoOptions
from mimsdk.adapters.video.reading import decode_size, read_frames
from mimsdk.adapters.video.scan import Scan
from mimsdk.data import SampleDataset


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
