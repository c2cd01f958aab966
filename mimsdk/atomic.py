"""Writes that a kill never leaves half done, for files and for folders alike.

One rule for both: the new content is written under a fresh temporary name beside the target (in
the same folder, so on the same file system, where a rename is atomic), flushed to disk (fsync),
and only then renamed to the target's name. Temporary names are new for every write
(``mkstemp`` / ``mkdtemp``, a leading dot) and removed on any error, KeyboardInterrupt included, so
what replaces the target is always the write that just finished, never a stale temporary from an
earlier, killed one. Until the rename, the previous target stays whole.

- :func:`atomic_write`: one file (checkpoints, metrics, pictures, each file of a model directory);
- :func:`atomic_dir`: a folder (a saved model with its card, an export, a pull).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _fsync_file(path: str | Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary_name(target: Path, folder: bool) -> Path:
    """A new, hidden name beside ``target``: ``.NAME.<random>.tmp`` (a file) or ``.NAME.<random>.partial``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    ``write`` gets the temporary file's name as a string (what ``save_file``, ``torch.save`` and
    ``Image.save`` take). Returns ``path``.
    """
    path = Path(path)
    tmp = _temporary_name(path, folder=False)
    try:
        write(str(tmp))
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _require_new(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists and is not empty; choose a new directory")


def _update_in_place(staging: Path, target: Path, last: str | None) -> None:
    """Move the top-level files of ``staging`` into the existing folder ``target``, one rename each.

    ``last`` (the file whose presence says the folder is complete, e.g. config.json) is removed
    first and renamed in last, so an update cut short never looks like a complete folder. Files of
    ``target`` that ``staging`` lacks are left as they are.
    """
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if last is not None:
        (target / last).unlink(missing_ok=True)
    for item in sorted(staging.iterdir()):
        if item.name != last:
            if item.is_dir() and (target / item.name).is_dir():
                shutil.rmtree(target / item.name)  # a folder cannot be renamed over a non-empty one
            os.replace(item, target / item.name)
    if last is not None and (staging / last).exists():
        os.replace(staging / last, target / last)


@contextmanager
def atomic_dir(target: str | Path, *, replace: bool = False, last: str | None = None) -> Iterator[Path]:
    """A fresh temporary folder beside ``target``, which becomes ``target`` when the block ends without error.

    ``replace=False``: ``target`` must be new or an empty folder (checked before the block runs, and
    again when publishing); the finished folder appears in one rename. ``replace=True``: an
    existing folder is updated file by file, with ``last`` written last (see :func:`_update_in_place`).
    On any error the temporary folder is removed and ``target`` is left as it was.
    """
    target = Path(target)
    if not replace:
        _require_new(target)
    staging = _temporary_name(target, folder=True)
    try:
        yield staging
        for item in staging.rglob("*"):
            if item.is_file():
                _fsync_file(item)
        if replace and target.exists():
            _update_in_place(staging, target, last)
        else:
            _require_new(target)
            if target.exists():
                target.rmdir()  # an empty folder: os.replace would refuse it on some systems
            os.replace(staging, target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
