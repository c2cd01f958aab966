"""How an adapter finds its files before training: walk the folder, probe each unit once in threads, warn once
per unusable one, summarise, and stop in strict mode or when nothing is usable (:class:`ScanPolicy`).

On a big folder (more than :data:`FULL_CHECK_LIMIT` files) an adapter checks headers only before training
(decoding 10^5 files first would hold step one for minutes); a file that fails later, when read, is named once
and replaced (:class:`~mimsdk.data.SampleDataset`). :class:`VerdictCache` keeps each file's verdict on disk by
path, size and modification time, so a folder scanned before is probed again only where files changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mimsdk.data import PROGRAM_ERRORS, failure_reason, first_line
from mimsdk.errors import DataError

log = logging.getLogger(__name__)

T = TypeVar("T")
U = TypeVar("U")

FULL_CHECK_LIMIT = 5000  # files: up to this many, each is decoded whole before training; beyond, headers only


def cache_root() -> Path:
    """Where mimsdk keeps what it may recompute: ``$MIMSDK_CACHE``, else ``~/.cache/mimsdk``."""
    return Path(os.environ.get("MIMSDK_CACHE") or Path.home() / ".cache" / "mimsdk")


class VerdictCache:
    """The verdicts of earlier scans of ``root`` (None: usable, else the reason), by path, size and mtime;
    only usable files are remembered.

    ``kind`` names what a verdict means (e.g. "images-header" or "images-full"), so a header check never stands
    in for a full one. The file is rewritten whole (to a temporary name, then renamed); an unreadable or
    stale cache is simply a miss.
    """

    def __init__(self, root: Path, kind: str) -> None:
        key = hashlib.sha256(f"{Path(root).resolve()}\0{kind}".encode("utf-8", "surrogateescape")).hexdigest()[:24]
        self.file = cache_root() / "scans" / f"{key}.json"
        try:
            self.saved: dict[str, list] = json.loads(self.file.read_text())
        except (OSError, ValueError):
            self.saved = {}
        self.seen: dict[str, list] = {}

    @staticmethod
    def _stamp(path: Path) -> list[int]:
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]

    def check(self, paths: Sequence[Path], probe: Callable[[Path], str | None], threads: int) -> list[str | None]:
        """``probe(path)`` (None or the reason) for each path not seen unchanged before; the others' saved verdicts."""
        names = [os.fsdecode(p) for p in paths]
        stamps: list[list[int] | None] = []
        for path in paths:
            try:
                stamps.append(self._stamp(path))
            except OSError:
                stamps.append(None)
        todo = [i for i, (n, st) in enumerate(zip(names, stamps)) if st is None or self.saved.get(n, [None])[:2] != st]
        fresh = dict(zip(todo, _map(probe, [paths[i] for i in todo], threads)))
        verdicts = [fresh[i] if i in fresh else self.saved[names[i]][2] for i in range(len(paths))]
        # Only usable files are remembered: a failure may pass next time (a flaky network disk, a raised
        # Pillow pixel limit, a new plugin), and the few bad files of a folder are cheap to probe again.
        self.seen = {n: [*st, v] for n, st, v in zip(names, stamps, verdicts) if st is not None and v is None}
        if todo:
            self._save()
        return verdicts

    def _save(self) -> None:
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.file.with_name(f".{self.file.name}.{os.getpid()}")
            temporary.write_text(json.dumps(self.seen))
            os.replace(temporary, self.file)
        except OSError as err:  # a cache is a convenience: a read-only home must not stop a run
            log.info("scan cache not written (%s)", err)


def _map(function: Callable[[T], U], items: Sequence[T], threads: int) -> list[U]:
    """``function`` over ``items`` in ``threads`` threads (in order)."""
    if threads > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(function, items))
    return [function(item) for item in items]


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
