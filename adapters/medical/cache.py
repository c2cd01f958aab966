"""Where stored volumes are kept between reads: MONAI's caches, the memory one bounded in bytes.

- ``cache: memory``: MONAI's ``CacheDataset`` over the first items whose stored volumes fit
  ``data.options.memory_limit`` (counted from their headers, :func:`~.headers.stored_bytes`), and MONAI's
  ``PersistentDataset`` (the disk cache) for the others, so no run holds more than the limit in RAM;
- ``cache: disk``: ``PersistentDataset`` for all, kept across runs; ``cache: none``: prepared at every read.

The caches hold *prepare*'s records, whose images are compact (uint16 for scaled intensities: half of float32).
A disk cache lives in ``data.options.cache_dir``, else (:func:`cache_folder`) in ``.mimsdk-cache`` inside the
data folder for ``cache: disk`` and in mimsdk's cache folder for spilled volumes; one sub-folder per set of
preparation settings.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from mimsdk.adapters.medical.headers import stored_bytes
from mimsdk.adapters.medical.options import MedicalOptions, memory_limit
from mimsdk.adapters.medical.prepare import Prepare
from mimsdk.errors import DataError
from mimsdk.scan import cache_root, fork_safe_threads

log = logging.getLogger(__name__)

HEADER_THREADS = 4  # headers are small reads: threads overlap their waits on the disk
HEADER_CHUNK = 256  # headers estimated at once, so few are read past the memory limit


def cache_mode(opts: MedicalOptions, items: list[dict[str, Any]]) -> str:
    """``data.options.cache`` with ``auto`` resolved: none for npz images (their arrays are in memory already),
    memory otherwise."""
    if opts.cache != "auto":
        return opts.cache
    return "none" if all("npz" in item for item in items) else "memory"


def cache_folder(opts: MedicalOptions, root: Path, prepare: Prepare, spill: bool = False) -> Path:
    """The disk cache's folder for ``prepare``'s settings, made if needed: ``data.options.cache_dir``; else for
    ``cache: disk`` ``.mimsdk-cache`` in the data folder (kept with the data, as documented), and for the
    volumes the memory cache spills (which the user did not ask to keep) or a data folder that cannot be
    written, mimsdk's own cache folder (``$MIMSDK_CACHE``, else ``~/.cache/mimsdk``)."""
    digest = hashlib.sha1(prepare.settings().encode()).hexdigest()[:16]
    if opts.cache_dir:
        folder = Path(opts.cache_dir) / digest
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DataError(f"data.options.cache_dir {opts.cache_dir}: cannot be written ({err})") from None
        return folder
    own = cache_root() / "medical" / digest  # MONAI names entries by item (files and their stamps): shareable
    if not spill:
        folder = (root if root.is_dir() else root.parent) / ".mimsdk-cache" / digest
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            pass
        log.info("%s cannot be written; the medical disk cache is in %s", folder.parent, own)
    own.mkdir(parents=True, exist_ok=True)
    return own


def fitting(items: list[dict[str, Any]], prepare: Prepare, limit: int) -> tuple[int, int]:
    """How many of the first items fit ``limit`` bytes when stored, and their bytes (header estimates, read in
    threads a chunk at a time, so the headers past the limit are not read)."""
    total = 0
    with fork_safe_threads(HEADER_THREADS) as pool:
        for start in range(0, len(items), HEADER_CHUNK):
            chunk = items[start : start + HEADER_CHUNK]
            for offset, size in enumerate(pool.map(lambda item: stored_bytes(item, prepare), chunk)):
                if total + size > limit:
                    return start + offset, total
                total += size
    return len(items), total


def cached_records(
    items: list[dict[str, Any]], prepare: Prepare, opts: MedicalOptions, root: Path, workers: int, lazy: bool
) -> Any:
    """MONAI's dataset of ``prepare``'s records over ``items``, kept as ``data.options.cache`` says.

    Args:
        workers: ``data.num_workers``: threads filling the memory cache, and whether the processes that read
            it share one (MONAI's ``runtime_cache="processes"``).
        lazy: fill the memory cache as items are first read rather than now (a big folder: nothing is decoded
            before training starts).
    """
    from monai.data import CacheDataset, Dataset, PersistentDataset
    from torch.utils.data import ConcatDataset

    mode = cache_mode(opts, items)
    if mode == "none":
        return Dataset(items, prepare)
    if mode == "disk":
        return PersistentDataset(items, prepare, cache_dir=cache_folder(opts, root, prepare))
    limit = memory_limit(opts)
    count, size = fitting(items, prepare, limit)
    memory = None
    if count:
        runtime = ("processes" if workers > 0 else True) if lazy else False
        memory = CacheDataset(
            items[:count], prepare, num_workers=max(1, workers), progress=False, copy_cache=False,
            runtime_cache=runtime,
        )  # fmt: skip
    if count == len(items):
        return memory
    folder = cache_folder(opts, root, prepare, spill=True)
    log.info(
        "the memory cache holds the first %d of %d items (%s bytes of data.options.memory_limit %s); the other "
        "%d are cached on disk in %s", count, len(items), f"{size:,}", f"{limit:,}", len(items) - count, folder,
    )  # fmt: skip
    disk = PersistentDataset(items[count:], prepare, cache_dir=folder)
    return disk if memory is None else ConcatDataset([memory, disk])
