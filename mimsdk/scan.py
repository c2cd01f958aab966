"""How an adapter finds its files before training: walk the folder, probe each unit once in threads, warn once
per unusable one, summarise, and stop in strict mode or when nothing is usable (:class:`ScanPolicy`).

On a big folder (more than :data:`FULL_CHECK_LIMIT` files) an adapter checks headers only before training
(decoding 10^5 files first would hold step one for minutes); a file that fails later, when read, is named once
and replaced (:class:`~mimsdk.data.SampleDataset`). :class:`ScanCache` keeps what the scan learnt of each usable
file on disk by path, size and modification time, so a folder scanned before is probed again only where files
changed. Probes run in :func:`fork_safe_threads`, which every thread pool of mimsdk uses, so that a worker process
forked after a scan inherits no lock a scan thread held.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from mimsdk.data import PROGRAM_ERRORS, failure_reason, first_line
from mimsdk.errors import DataError

log = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")

THREAD_EXIT_WAIT_S = 5.0  # s: a pool thread of fork_safe_threads still ending after this is left to end alone
FULL_CHECK_LIMIT = 5000  # files: up to this many, each is decoded whole before training; beyond, headers only


def cache_root() -> Path:
    """Where mimsdk keeps what it may recompute: ``$MIMSDK_CACHE``, else ``~/.cache/mimsdk``."""
    return Path(os.environ.get("MIMSDK_CACHE") or Path.home() / ".cache" / "mimsdk")


class ScanCache(Generic[T]):
    """What earlier scans of ``root`` learnt of each usable file, by path, size and modification time.

    :meth:`remembering` wraps a probe (what it returns for a usable file; it raises for an unusable one) so an
    unchanged file is answered from the cache; :meth:`write` keeps this scan's answers. ``kind`` names the probe
    and every setting its answer depends on (e.g. "images-header", or a document's DPI), so one probe never
    stands in for another. ``save`` turns an answer into JSON, ``load(path, saved)`` back. Only usable files
    are remembered: a failure may pass next time (a flaky network disk, a raised pixel limit, a new plugin), and
    the few bad files of a folder are cheap to probe again. The file is rewritten whole (to a temporary name,
    then renamed); an unreadable, stale or undecodable entry is simply a miss.
    """

    def __init__(
        self,
        root: Path,
        kind: str,
        save: Callable[[T], Any] = lambda answer: None,
        load: Callable[[Path, Any], T] = lambda path, saved: None,
    ) -> None:
        key = hashlib.sha256(f"{Path(root).resolve()}\0{kind}".encode("utf-8", "surrogateescape")).hexdigest()[:24]
        self.file = cache_root() / "scans" / f"{key}.json"
        self.save, self.load = save, load
        try:
            saved = json.loads(self.file.read_text())
        except (OSError, ValueError):
            saved = {}
        self.saved: dict[str, list] = saved if isinstance(saved, dict) else {}
        self.seen: dict[str, list] = {}
        self.probed = 0

    def remembering(self, probe: Callable[[Path], T]) -> Callable[[Path], T]:
        """``probe``, answered from earlier scans where the file is unchanged (safe to call from threads)."""

        def answer(path: Path) -> T:
            name = os.fsdecode(path)
            try:
                stat = path.stat()
            except OSError:
                return probe(path)  # the probe names what is wrong
            stamp = [stat.st_size, stat.st_mtime_ns]
            saved = self.saved.get(name)
            try:
                if not isinstance(saved, list) or saved[:2] != stamp:
                    raise LookupError(name)
                result = self.load(path, saved[2])
            except Exception:  # noqa: BLE001 - not seen, changed, or saved by another mimsdk: a miss
                result = probe(path)
                self.probed += 1
            self.seen[name] = [*stamp, self.save(result)]
            return result

        return answer

    def write(self) -> None:
        """Keep this scan's answers (the files it found usable), if anything changed since the last."""
        if not self.probed and self.seen.keys() == self.saved.keys():
            return
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.file.with_name(f".{self.file.name}.{os.getpid()}")
            temporary.write_text(json.dumps(self.seen))
            os.replace(temporary, self.file)
        except OSError as err:  # a cache is a convenience: a read-only home must not stop a run
            log.info("scan cache not written (%s)", err)


class VerdictCache(ScanCache[None]):
    """A :class:`ScanCache` of verdicts alone, for probes that return None (usable) or the reason."""

    def check(self, paths: Sequence[Path], probe: Callable[[Path], str | None], threads: int) -> list[str | None]:
        """``probe(path)`` (None or the reason) for each path not seen unchanged before; the others' saved verdicts."""

        def usable(path: Path) -> None:
            reason = probe(path)
            if reason is not None:
                raise _Unusable(reason)

        remembered = self.remembering(usable)

        def verdict(path: Path) -> str | None:
            try:
                remembered(path)
            except _Unusable as err:
                return str(err)
            return None

        verdicts = _map(verdict, paths, threads)
        self.write()
        return verdicts


class _Unusable(Exception):
    """A verdict that a file cannot be used, carried through :meth:`ScanCache.remembering` (not remembered)."""


def _map(function: Callable[[T], U], items: Sequence[T], threads: int) -> list[U]:
    """``function`` over ``items`` in ``threads`` threads (in order)."""
    if threads <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with fork_safe_threads(threads) as pool:
        return list(pool.map(function, items))


@contextmanager
def fork_safe_threads(threads: int) -> Iterator[ThreadPoolExecutor]:
    """A thread pool that, on leaving, waits until its threads have ended in the operating system too (up to
    :data:`THREAD_EXIT_WAIT_S`), so that a process forked afterwards holds no lock one of them held.

    ``Thread.join`` returns before a thread's C-level thread-local destructors run, and GDAL closes its per-thread
    PROJ database there, holding SQLite's lock. A process forked in that gap (a DataLoader worker, the shard
    writer) inherits the lock held by a thread it does not have, and hangs at its first ``rasterio.open``. The
    wait reads ``/proc/self/task``; where there is none (not Linux), nothing is waited for.
    """
    started: list[int] = []

    def remember_thread() -> None:
        started.append(threading.get_native_id())

    try:
        with ThreadPoolExecutor(max_workers=max(1, threads), initializer=remember_thread) as pool:
            yield pool
    finally:
        tasks = Path("/proc/self/task")
        deadline = time.monotonic() + THREAD_EXIT_WAIT_S
        while tasks.is_dir() and any((tasks / str(tid)).exists() for tid in started):
            if time.monotonic() > deadline:
                log.warning("threads %s had not ended after %s s; a fork now may hang", started, THREAD_EXIT_WAIT_S)
                break
            time.sleep(0.001)


@dataclass(frozen=True)
class ScanPolicy:
    """How an adapter finds its files before training: walk, probe each once, report the unusable ones.

    Args:
        unit, unusable: words for the messages ("skipped 2 of 14 files", "2 unusable files").
        threads: units probed at once by :meth:`check`; 1 where the reading library is not thread-safe.
    """

    unit: str = "files"
    unusable: str = "unusable"
    threads: int = 4

    def walk(self, root: Path, wanted: str, keep: Callable[[Path], bool] | None = None) -> list[Path]:
        """``root`` itself if a file, else its files (sorted, hidden ones skipped) for which ``keep`` holds.

        Args:
            wanted: what the folder should hold, for the error ("video files (.mp4, .avi)").
            keep: a filter on file names; the files it leaves out are counted in one log line.
        Raises DataError for a missing path or a folder with nothing to read.
        """
        if not root.exists():
            raise DataError(f"data path {root} does not exist")
        if root.is_file():
            return [root]
        found = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        files = found if keep is None else [p for p in found if keep(p)]
        if len(files) < len(found):
            log.info("%s: left out %d file(s) that are not %s", root, len(found) - len(files), wanted)
        if not files:
            raise DataError(f"data folder {root} holds no {wanted}")
        return files

    def check(self, root: Path, units: Sequence[U], probe: Callable[[U], T], strict: bool) -> list[tuple[U, T]]:
        """Probe every unit (file, folder, scene) in ``threads`` threads, then :meth:`settle`.

        ``probe`` returns what the adapter learnt of a usable unit, or raises DataError naming it and why
        it cannot be used. Returns the usable units with their probe results, in order.
        """
        results = self.probe(units, probe)
        problems = [str(r) if isinstance(r, DataError) else None for r in results]
        return [(units[i], results[i]) for i in self.settle(root, problems, strict)]

    def probe(self, units: Sequence[U], probe: Callable[[U], T]) -> list[T | DataError]:
        """``probe`` of every unit in ``threads`` threads: its result, or the DataError it raised (one line,
        without the chained traceback); any other error of a reading library becomes one too, naming the unit.
        For adapters that judge units against each other before :meth:`settle`."""

        def attempt(unit: U) -> T | DataError:
            try:
                return probe(unit)
            except DataError as err:
                return DataError(first_line(str(err)))
            except PROGRAM_ERRORS:
                raise
            except Exception as err:  # noqa: BLE001 - a reading library's own error the probe did not name
                return DataError(failure_reason(err, str(unit[0] if isinstance(unit, tuple) else unit)))

        return _map(attempt, units, self.threads)

    def settle(self, root: Path, problems: Sequence[str | None], strict: bool) -> list[int]:
        """The scan policy: indices of the usable units (``problems[i]`` None), after reporting the rest.

        Each problem (a message naming its file) is one warning, repeated problems once (the images of one
        bad array); then one summary "skipped N of M". ``strict`` makes the first problem an error instead,
        and no usable unit at all is always one.
        """
        bad = [first_line(p) for p in problems if p]  # one line each: a library's nested traceback is cut
        if bad and strict:
            raise DataError(f"{bad[0]} (strict mode; {len(bad)} {self.unusable} {self.unit} in {root})")
        for problem in dict.fromkeys(bad):
            warnings.warn(f"skipping {problem}", stacklevel=3)
        good = [i for i, p in enumerate(problems) if not p]
        if bad:
            summary = f"skipped {len(bad)} of {len(problems)} {self.unit} in {root}; using {len(good)}"
            warnings.warn(summary, stacklevel=3)
        if not good:
            raise DataError(f"{root} holds no usable {self.unit} ({len(bad)} {self.unusable})")
        return good
