"""The recipe's data loader alone, timed (``mimsdk pretrain RECIPE --data-only``).

A run that waits for data (its ``data_wait`` column) is loader-bound; this says how fast the loader can go
without a model beside it: the same dataset, sampler, batch size and workers as a run, for N batches. The
first batch is timed apart, as it carries the workers' start-up and the dataset's checks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from mimsdk.adapter import get_adapter
from mimsdk.config import Recipe
from mimsdk.data import ResumableSampler, SeededDataset
from mimsdk.errors import DataError


@dataclass(frozen=True)
class LoaderRate:
    """What :func:`measure_loader` measured: samples/s after the first batch, overall and per worker."""

    batches: int
    batch_size: int
    workers: int
    first_batch_s: float
    samples_per_s: float

    @property
    def per_worker(self) -> float:
        """Samples/s each worker delivers (the main process counts as one when there are none)."""
        return self.samples_per_s / max(self.workers, 1)

    def __str__(self) -> str:
        workers = f"{self.workers} worker{'s' if self.workers != 1 else ''}" if self.workers else "no workers"
        return (
            f"loader alone, {self.batches} batches of {self.batch_size} with {workers}: first batch after "
            f"{self.first_batch_s:.2f} s, then {self.samples_per_s:.1f} samples/s ({self.per_worker:.1f} per worker)"
        )


def measure_loader(recipe: Recipe, batches: int = 50) -> LoaderRate:
    """Time ``batches`` training batches of ``recipe``'s data (its path, or the adapter's shipped sample)."""
    if batches < 2:
        raise ValueError(f"--data-only takes at least 2 batches (the first is timed apart); got {batches}")
    data, seed = recipe.data, recipe.train.seed
    adapter = get_adapter(data.modality)
    path = data.path or adapter.sample_path()
    if path is None:
        raise DataError(f"data.path is not set and the {data.modality} adapter ships no sample")
    started = time.perf_counter()
    dataset = SeededDataset(adapter.dataset(path, data, recipe.model, train=True), seed)  # a folder or a URL
    if len(dataset) < data.batch_size:
        raise DataError(f"{path} has {len(dataset)} usable samples, fewer than one batch of {data.batch_size}")
    loader = DataLoader(
        dataset, batch_size=data.batch_size, sampler=ResumableSampler(len(dataset), data.batch_size, seed),
        num_workers=data.num_workers, prefetch_factor=4 if data.num_workers else None,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    stream = iter(loader)
    next(stream)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(batches - 1):
        next(stream)
    rate = (batches - 1) * data.batch_size / (time.perf_counter() - started)
    return LoaderRate(batches, data.batch_size, data.num_workers, first, rate)
