"""The video preparation in two halves: what a shard stores of each video, and the clip made from it.

Stored half (deterministic, one sample per video): every ``stride``-th frame of the source (0, stride,
2·stride, ...) decoded by decord straight to the recipe's training resolution (``short_side``), uint8
N×H×W×3, with the source's fps, frame count and name. A window starts on this grid, so these are all the
frames any window can take; starting anywhere (as before shards) would need every frame stored, ``stride``
times the bytes and the reading, for start offsets finer than the stride.

Finish (random when training): a window of ``model.input_size[0]`` consecutive stored frames (a random start
drawn from torch's global generator, which :class:`~mimsdk.data.SeededDataset` seeds per item; the centre or
evenly spaced windows in evaluation; ``short_clip`` for short sources), then one random resized crop and flip
for all its frames, and the normalisation.

A folder goes through the same two halves as its shards, so both train alike; reading a folder, the stored
frames are decoded lazily (:class:`FileFrames`): a window decodes only its own frames, as before shards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from decord import VideoReader
from torchvision import tv_tensors
from torchvision.transforms import v2

from mimsdk.adapters.video.clips import clip_indices, stored_count
from mimsdk.adapters.video.options import VideoOptions
from mimsdk.adapters.video.reading import VideoInfo, decode, decode_size, open_reader
from mimsdk.adapters.video.scan import Scan
from mimsdk.data import Prepared
from mimsdk.errors import DataError

# A video whose stored frames would exceed this is left out of a shard set (named): a reader loads a whole
# sample to take one window, so an hour of video in one sample would cost seconds per clip. 1 GiB holds about
# 4 minutes of 16:9 video at 30 fps, stride 4 and a 320-pixel short side (an hour at 80 pixels); cut longer
# sources into clips before sharding.
MAX_STORED_BYTES = 1 << 30


class FileFrames:
    """The stored frames of one file, decoded on demand: ``frames[positions]`` decodes only those frames.

    Stands for the N×H×W×3 array a shard holds (``len`` is N, position p is source frame p·stride), so that
    :class:`FinishClip` reads a folder and a shard set alike. The file is opened once, on first use.
    """

    def __init__(self, path: Path, stride: int, size: tuple[int, int] | None, shape: tuple[int, int], threads: int):
        self.path, self.stride, self.size, self.shape, self.threads = path, stride, size, shape, threads
        self._reader: VideoReader | None = None

    def reader(self) -> VideoReader:
        if self._reader is None:
            self._reader = open_reader(self.path, self.threads, self.size)
        return self._reader

    @property
    def available(self) -> int:
        """Frames in the source, as decord counts them (not the header's claim)."""
        return len(self.reader())

    def __len__(self) -> int:
        return stored_count(self.available, self.stride)

    def __getitem__(self, positions: Sequence[int]) -> np.ndarray:
        """Stored frames ``positions`` as uint8 T×H×W×3."""
        return decode(self.reader(), self.path, [p * self.stride for p in positions])

    def whole(self) -> np.ndarray:
        """Every stored frame, uint8 N×H×W×3 (what a shard holds); a DataError naming the file over
        :data:`MAX_STORED_BYTES`, before anything is decoded."""
        count = len(self)
        height, width = self.shape
        size = count * height * width * 3
        if size > MAX_STORED_BYTES:
            raise DataError(
                f"{self.path}: {count} frames at stride {self.stride} of {width}×{height} would store {size:,} "
                f"bytes, more than the {MAX_STORED_BYTES:,} one sample may hold; cut the video into shorter "
                "clips, or lower data.options.short_side"
            )
        return self[range(count)]


class VideoFiles:
    """The videos of a scan -> stored samples, one per video (:class:`~mimsdk.data.Prepared`).

    ``files[i]`` is ``{"frames": every stride-th frame at the training resolution (N×H×W×3 uint8),
    "fps": the source's, "frame_count": the source's frames, "source": its path under the data root,
    "label": int}``. Reading a folder, ``frames`` is a :class:`FileFrames` that decodes only what a window
    takes; with ``verify`` (writing shards) it is the array, decoded whole, so a shard never holds a video
    that cannot be decoded.
    """

    def __init__(self, scan: Scan, root: Path, options: VideoOptions, verify: bool = False) -> None:
        self.videos, self.labels, self.classes = scan.videos, scan.labels, scan.classes
        self.root, self.options, self.verify = root, options, verify

    def __len__(self) -> int:
        return len(self.videos)

    def source(self, index: int) -> str:
        return str(self.videos[index].path)

    def frames(self, info: VideoInfo) -> FileFrames:
        size = decode_size(info, self.options.short_side)
        shape = size or (info.height, info.width)
        return FileFrames(info.path, self.options.stride, size, shape, self.options.threads)

    def __getitem__(self, index: int) -> dict[str, Any]:
        info = self.videos[index]
        lazy = self.frames(info)
        frames: FileFrames | np.ndarray = lazy.whole() if self.verify else lazy
        count = lazy.available if self.verify else info.frames  # the decoder's own count once opened
        name = info.path.name if self.root.is_file() else info.path.relative_to(self.root).as_posix()
        source = os.fsencode(name).decode("utf-8", "backslashreplace")  # a name that is not UTF-8, storable
        return {"frames": frames, "fps": info.fps, "frame_count": count, "source": source, "label": self.labels[index]}


class Windows:
    """Stored videos -> items: ``clips_per_video`` windows of each video per epoch, each video stored once.

    Item ``i`` is window ``i // V`` of video ``i % V`` (V videos): the first V items are V different videos
    (what reconstruction pictures show). The sample gets ``"clip"``, the window's number, which places the
    evenly spaced windows of evaluation.
    """

    def __init__(self, videos: Prepared, clips: int) -> None:
        self.videos, self.clips, self.classes = videos, clips, list(videos.classes)

    def __len__(self) -> int:
        return len(self.videos) * self.clips

    def source(self, index: int) -> str:
        return self.videos.source(index % len(self.videos))

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip, video = divmod(index, len(self.videos))
        return {**self.videos[video], "clip": clip}


class FinishClip:
    """A stored video -> clip C×T×H×W float32, normalised: a window of ``frames`` stored frames (random in
    training), one crop and flip for all of them (``transform``, on T×3×H×W)."""

    def __init__(self, transform: v2.Compose, frames: int, options: VideoOptions, train: bool) -> None:
        self.transform, self.frames, self.options, self.train = transform, frames, options, train

    def positions(self, stored: int, clip: int = 0) -> list[int]:
        """Stored frames of window ``clip`` of a video with ``stored`` of them (random in training: call under
        the item's seed). The stored frames are already ``stride`` apart: the window takes consecutive ones."""
        o = self.options
        if stored < self.frames and o.short_clip == "error":  # a shard set made under loop or pad holds it
            raise DataError(
                f"{stored} frames stored at stride {o.stride}, fewer than the {self.frames} a clip needs "
                "(data.options.short_clip=error)"
            )
        return clip_indices(stored, self.frames, 1, o.short_clip, self.train, clip, o.clips_per_video)

    def __call__(self, sample: dict[str, Any]) -> torch.Tensor:
        frames = sample["frames"]
        chosen = frames[self.positions(len(frames), int(sample.get("clip", 0)))]  # T×H×W×3 uint8, a copy
        video = tv_tensors.Video(torch.from_numpy(np.ascontiguousarray(chosen)).permute(0, 3, 1, 2))
        clip = self.transform(video)  # T×3×H×W: one crop and flip for every frame
        return clip.permute(1, 0, 2, 3).contiguous().as_subclass(torch.Tensor)
