"""The dataset of clips from a folder: ``clips_per_video`` items per file, made in the two halves a shard set
is made of (:mod:`mimsdk.adapters.video.stored`), with what the scan learnt of each file at hand."""

from __future__ import annotations

from torchvision.transforms import v2

from mimsdk.adapters.video.reading import VideoInfo
from mimsdk.adapters.video.stored import FinishClip, VideoFiles, Windows
from mimsdk.data import PreparedDataset


class VideoDataset(PreparedDataset):
    """Videos of a folder -> (clip C×T×H×W float32 normalised, label); ``clips_per_video`` items per file.

    Item ``i`` is window ``i // N`` of video ``i % N`` (:class:`~mimsdk.adapters.video.stored.Windows`).
    A file that fails when read is named once and its clips replaced by the next good ones.
    Random choices (window, crop, flip) come from torch's global generator, which
    :class:`~mimsdk.data.SeededDataset` seeds per item: exact resume holds.
    """

    prepared: Windows
    finish: FinishClip

    def __init__(self, files: VideoFiles, finish: FinishClip) -> None:
        super().__init__(Windows(files, finish.options.clips_per_video), finish)
        self.files = files

    @property
    def videos(self) -> list[VideoInfo]:
        """What the scan learnt of each usable file, in item order modulo their count."""
        return self.files.videos

    @property
    def labels(self) -> list[int]:
        return self.files.labels

    @property
    def transform(self) -> v2.Compose:
        """The crop, flip and normalisation of a window's frames (T×3×H×W uint8 -> float32)."""
        return self.finish.transform

    def indices(self, index: int) -> list[int]:
        """Source frames of item ``index`` (random in training: call under the item's seed)."""
        sample = self.prepared[index]
        positions = self.finish.positions(len(sample["frames"]), sample["clip"])
        return [p * self.files.options.stride for p in positions]
