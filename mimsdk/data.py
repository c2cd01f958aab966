"""Modality-free data plumbing: errors, resumable sharded sampling, seeded items.

Exact resume and DDP equivalence rest on two rules:
- the order of samples is a function of (seed, epoch) alone, each rank taking
  its contiguous slice of every global batch; resuming skips what was consumed;
- each sample's augmentation is drawn from a generator seeded by
  (seed, epoch, index), so it does not depend on workers, ranks or restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset, Sampler

from mimsdk.errors import DataError


class LabelledDataset(Protocol):
    """What an adapter's dataset offers: items ``(tensor C×S1..Sn, label)``, label -1 if none."""

    classes: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...


def normalisation(
    mean: list[float] | None,
    std: list[float] | None,
    channels: int,
    default_mean: list[float],
    default_std: list[float],
) -> tuple[list[float], list[float]]:
    """``data.mean`` and ``data.std``, or an adapter's defaults, checked to hold one value per channel."""
    mean, std = mean or default_mean, std or default_std
    if len(mean) != channels or len(std) != channels:
        raise DataError(f"data.mean and data.std need {channels} values each; got {mean} and {std}")
    return mean, std


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed unique to (seed, epoch, index), spread by a fixed hash."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
    return (x ^ (x >> 32)) & (2**63 - 1)


class SeededDataset(Dataset):
    """Wraps a dataset so item ``(epoch, index)`` is drawn under its own seed.

    Transforms that use torch's global generator (torchvision's) become a pure
    function of (seed, epoch, index); the caller's RNG state is left untouched.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, index))
            return self.dataset[index]


class ResumableSampler(Sampler):
    """Yields ``(epoch, index)`` for this rank, epoch after epoch, from ``start`` global batches in.

    Args:
        size: dataset length. batch_size: per-rank batch. rank, world: this process and the count.
        seed: epoch ``e``'s order is ``randperm(size)`` under ``seed + e``.
        start: global batches already consumed since the beginning of the run (resume).

    Every epoch holds ``size // (batch_size·world)`` full global batches; the rest is dropped.
    Endless, so one DataLoader (and its workers) serves the whole run.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world, self.start = rank, world, start

    @staticmethod
    def batches_per_epoch(size: int, global_batch: int) -> int:
        return size // global_batch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world
        per_epoch = self.batches_per_epoch(self.size, global_batch)
        epoch, first_batch = divmod(self.start, per_epoch)
        while True:
            gen = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
            for b in range(first_batch, per_epoch):
                first = b * global_batch + self.rank * self.batch_size
                for index in order[first : first + self.batch_size]:
                    yield epoch, index
            epoch, first_batch = epoch + 1, 0
