"""Modality-free data plumbing: errors, resumable sharded sampling, seeded items, samples that fail to load.

Exact resume and DDP equivalence rest on two rules:
- the order of samples is a function of (seed, epoch) alone, each rank taking
  its contiguous slice of every global batch; resuming skips what was consumed;
- each sample's augmentation is drawn from a generator seeded by
  (seed, epoch, index), so it does not depend on workers, ranks or restarts.

A sample that fails only when it is read (a file that changed after the scan, a stream that breaks halfway)
is handled in one place, :class:`SampleDataset`, the base of every adapter's dataset: it is named in one
warning, replaced by the next sample that loads (under the same random state, so the replacement depends
only on (seed, epoch, index) and which files are bad) and counted; with ``data.strict`` it stops the run.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from mimsdk.errors import DataError

# Errors of the program rather than of the data: never taken for a bad sample.
PROGRAM_ERRORS = (
    TypeError, AttributeError, NameError, NotImplementedError, AssertionError, ImportError, MemoryError, RecursionError,
)  # fmt: skip
ROWS = 64  # counter rows: one per DataLoader worker (folded beyond 63) and one for the main process
NAMES = 256  # bad files each row remembers, so a file is warned about once across worker processes
EPOCHS = 4096  # epochs SeededDataset keeps replacement counts for (epoch modulo this)
REASON_CHARS = 1000  # a reason longer than this is cut: a library's message can run on


def first_line(text: str, limit: int = REASON_CHARS) -> str:
    """The first non-empty line of ``text``, at most ``limit`` characters: a message without its traceback."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failure_reason(err: BaseException, name: str | None = None) -> str:
    """One line saying why reading failed, naming ``name``: a DataError's own first line, else the innermost
    cause (``raise ... from``) of a chain of wrapped errors (MONAI nests them many deep) as ``Type: message``.
    No traceback."""
    if isinstance(err, DataError):
        text = first_line(str(err))
    else:
        root, seen = err, {id(err)}
        while True:
            below = root.__cause__
            if below is None or id(below) in seen:
                break
            seen.add(id(below))
            if isinstance(below, DataError):
                root = below
                break
            root = below
        text = first_line(str(root)) if isinstance(root, DataError) else f"{type(root).__name__}: {first_line(root)}"
    if name and name not in text:
        text = f"{name}: {text}"
    return first_line(text)


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


def _shared_zeros(*shape: int) -> torch.Tensor:
    """int64 zeros in shared memory, so DataLoader workers (forked or spawned) write what the main process reads."""
    t = torch.zeros(*shape, dtype=torch.int64)
    try:
        return t.share_memory_()
    except (RuntimeError, OSError):  # no shared memory here: counts stay per process
        return t


def _row() -> int:
    """This process's counter row: its DataLoader worker id, or the last row in the main process."""
    info = get_worker_info()
    return ROWS - 1 if info is None else info.id % (ROWS - 1)


def _name_key(name: str) -> int:
    """A non-zero 63-bit key of a file name (zero marks an empty slot)."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return (int.from_bytes(digest, "little") & (2**63 - 1)) or 1


class LoadFailures:
    """What a :class:`SampleDataset` counts, in shared memory: samples replaced and the files that failed.

    Each process writes only its own row, so counts from DataLoader workers add up without locks.
    """

    def __init__(self) -> None:
        self.replaced = _shared_zeros(ROWS)
        self.names = _shared_zeros(ROWS, NAMES)
        self.local: set[str] = set()  # this process's own record, beyond the shared table's room

    def first_time(self, name: str) -> bool:
        """Record ``name`` as failed; True the first time any process records it."""
        if name in self.local:
            return False
        self.local.add(name)
        key = _name_key(name)
        if bool((self.names == key).any()):
            return False
        row = self.names[_row()]
        free = (row == 0).nonzero()
        if len(free):
            row[int(free[0])] = key
        return True

    @property
    def files(self) -> int:
        """Distinct failed files recorded in the shared table."""
        return int((self.names != 0).sum())


class SampleDataset(Dataset):
    """Base of every adapter's dataset: ``load(index)`` reads an item, ``dataset[index]`` reads it guarded.

    A sample whose reading raises (a DataError naming its file, or any error of the reading library) is:

    - with ``strict`` (``data.strict``), a DataError naming the file and the reason: the run stops;
    - else named in one warning per file (one line: the file and the reason, never a traceback), replaced by
      the next index that loads (``index + 1``, ``index + 2``, ... wrapping), each try under the random state
      the item started with, so the replacement is a function of (seed, epoch, index) and of which files are
      bad, whatever the worker or the timing; and counted (:attr:`skipped`).

    Errors of the program (TypeError, AttributeError, ...) are not taken for bad data and propagate.
    A subclass implements :meth:`load` and :meth:`source`; :meth:`mimsdk.adapter.Adapter.dataset` calls
    :meth:`guard` with ``data.strict`` once the dataset is built, which also places the counters in shared
    memory before any DataLoader worker starts.
    """

    strict: bool = False

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        """Item ``index``, read; raises (preferably DataError naming the file) if it cannot be."""
        raise NotImplementedError

    def source(self, index: int) -> str:
        """The file (or page, or array entry) item ``index`` is read from, for messages."""
        return f"item {index}"

    def guard(self, strict: bool) -> SampleDataset:
        """Set how load failures are treated (``data.strict``) and share the counters with future workers."""
        self.strict = bool(strict)
        self.failures()
        return self

    def failures(self) -> LoadFailures:
        """The shared record of load failures (made on first use)."""
        record = self.__dict__.get("_load_failures")
        if record is None:
            record = self.__dict__["_load_failures"] = LoadFailures()
        return record

    @property
    def skipped(self) -> int:
        """Samples replaced so far because their own file failed to load, in every process of this dataset."""
        return int(self.failures().replaced.sum())

    @property
    def failed_files(self) -> int:
        """Distinct files (or pages, entries) that failed to load so far, as named in the warnings."""
        return self.failures().files

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.fetch(index)[0]

    def fetch(self, index: int) -> tuple[tuple[torch.Tensor, int], int]:
        """Item ``index`` guarded, and the index actually read (``index`` unless it was replaced)."""
        count = len(self)
        state = torch.get_rng_state()
        first: str | None = None
        for step in range(count):
            candidate = (index + step) % count
            if step:
                torch.set_rng_state(state)  # the replacement draws as the item itself would have
            try:
                item = self.load(candidate)
            except PROGRAM_ERRORS:
                raise
            except Exception as err:  # noqa: BLE001 - any reading failure is this sample's, named below
                reason = failure_reason(err, self.source(candidate))
                if self.strict:
                    raise DataError(f"{reason} (strict mode: a sample that fails to load stops the run)") from None
                self._report(candidate, reason)
                first = first or reason
                continue
            if step:
                self.failures().replaced[_row()] += 1
            return item, candidate
        raise DataError(f"none of the {count} samples can be read; the first failure: {first}")

    def _report(self, index: int, reason: str) -> None:
        if self.failures().first_time(self.source(index)):
            warnings.warn(f"skipping {reason} (failed while loading; replaced by the next good sample)", stacklevel=4)


class SeededDataset(Dataset):
    """Wraps a dataset so item ``(epoch, index)`` is drawn under its own seed.

    Transforms that use torch's global generator (torchvision's) become a pure
    function of (seed, epoch, index); the caller's RNG state is left untouched.
    Over a :class:`SampleDataset`, replaced samples are counted per epoch: :meth:`skipped_in`.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epochs = _shared_zeros(ROWS, EPOCHS)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed(self.seed, epoch, index))
            if not isinstance(self.dataset, SampleDataset):
                return self.dataset[index]
            item, used = self.dataset.fetch(index)
        if used != index:
            self.epochs[_row(), epoch % EPOCHS] += 1
        return item

    @property
    def skipped(self) -> int:
        """Samples replaced in all epochs so far (0 over a dataset that is not a SampleDataset)."""
        return self.dataset.skipped if isinstance(self.dataset, SampleDataset) else 0

    def skipped_in(self, epoch: int) -> int:
        """Samples of ``epoch`` replaced because their file failed to load, summed over DataLoader workers.

        Exact once the epoch's batches have all been taken from the loader; counts are kept for the last
        4096 epochs.
        """
        return int(self.epochs[:, epoch % EPOCHS].sum())


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


class Prepared(Protocol):
    """Samples through the stored half of an adapter's preparation: a folder's files prepared as they are read,
    or a shard set's samples (:class:`mimsdk.shards.ShardReader`). ``prepared[i]`` is a dict of arrays, bytes
    and numbers, with ``"label"`` (-1 when unlabelled)."""

    classes: list[str]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...

    def source(self, index: int) -> str: ...


class PreparedDataset(SampleDataset):
    """Items made in two halves: the stored sample (``prepared[i]``: deterministic, what a shard holds) and
    ``finish`` (the random crop and flip, drawn per (seed, epoch, index), and the normalisation).

    Folders and shard sets go through the same ``finish``, so training on shards made from a folder gives
    what training on the folder gives.
    """

    def __init__(self, prepared: Prepared, finish: Any) -> None:
        self.prepared, self.finish, self.classes = prepared, finish, list(prepared.classes)

    def __len__(self) -> int:
        return len(self.prepared)

    @property
    def labels(self) -> list[int] | None:
        """Every item's label when the source lists them (a folder does), so probes need not read the items."""
        return getattr(self.prepared, "labels", None)

    def source(self, index: int) -> str:
        return self.prepared.source(index)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.prepared[index]
        return self.finish(sample), int(sample.get("label", -1))
