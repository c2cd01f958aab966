"""Writes that a kill never leaves half done, for files and for folders alike.

One rule for both: the new content is written under a fresh temporary name beside the target (in
the same folder, so on the same file system, where a rename is atomic), flushed to disk (fsync),
and only then renamed to the target's name. Temporary names are new for every write (a leading dot,
``.NAME.<8 random characters>.tmp`` for a file, ``.partial`` for a folder) and removed on any error,
KeyboardInterrupt included, so what replaces the target is always the write that just finished, never
a stale temporary from an earlier, killed one. Until the rename, the previous target stays whole.

- :func:`atomic_write`: one file (checkpoints, metrics, pictures, each file of a model directory);
- :func:`atomic_dir`: a folder (a saved model with its card, an export, a pull);
- :func:`remove_stale`: the temporaries a killed process (``kill -9``, a power cut) could not remove.

What is written gets the user's normal permissions: temporaries are created with mode 0666 (files) or
0777 (folders) less the umask, as ``open`` and ``mkdir`` create anything else, and a file that a writer
made narrower (safetensors writes 0600 files) gets those permissions back before it is published, so a
model directory is as readable to colleagues as the ``recipe.yaml`` beside it.

A write that fails for a reason of the operating system (a full disk above all, which torch.save reports
as ``unexpected pos``) raises one :class:`WriteError` naming the file and the OS's own error.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The random part of a temporary name: 8 characters of this alphabet (``tempfile``'s, so the names
# that earlier mimsdk versions made with ``mkstemp`` / ``mkdtemp`` are recognised as well).
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
_STALE_FILE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_STALE_FOLDER = re.compile(r"^\..+\.[a-z0-9_]{8}\.partial$")
# What a writer called by atomic_write may leave on its own when killed: safetensors' ``save_file`` writes
# ``.tmp<6 letters or digits>`` (Rust's tempfile crate) beside the file it was given, then renames it over.
_WRITER_STALE = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")
# OS errors a folder's contents may raise that are about the disk, not about what was asked.
_EDQUOT = getattr(errno, "EDQUOT", -1)
_DISK_ERRORS = {errno.ENOSPC, _EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
_PROBE = 1 << 20  # bytes written to tell a full disk from any other failure of a write


class WriteError(OSError):
    """A file or folder that could not be written: the message names it and the OS's error.

    ``errno`` is the OS's (``errno.ENOSPC`` for a full disk) and ``filename`` the path that was
    being written; the previous content of that path, if any, is left as it was.
    """

    def __init__(self, path: Path, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause), str(path))
        reason = cause.strerror or str(cause)
        code = errno.errorcode.get(cause.errno, str(cause.errno)) if cause.errno is not None else "?"
        if cause.errno in (errno.ENOSPC, _EDQUOT):
            what = "the disk is full" if cause.errno == errno.ENOSPC else "the disk quota is used up"
            self.message = (
                f"cannot write {path}: {what} ({reason}, {code}); free space on that file system, or write "
                "somewhere else, and try again"
            )
        else:
            self.message = f"cannot write {path}: {reason} ({code})"
        if path.exists():
            self.message += f"; {path.name} was left as it was"

    def __str__(self) -> str:
        return self.message


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind ``err``: itself, one it was raised from, or one named in its message
    (``(os error 28)``: safetensors' Rust I/O errors); None if there is none."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        found = re.search(r"os error (\d+)", str(current))
        if found:
            code = int(found.group(1))
            return OSError(code, os.strerror(code))
        current = current.__cause__ or current.__context__
    return None


def _probe(path: Path) -> OSError | None:
    """Append up to a MiB to ``path`` and fsync it: the OS's error if that fails (a full disk), else None.

    For writers that hide the OS's error (torch.save by path reports a full disk as ``unexpected pos``).
    """
    try:
        with open(path, "ab") as f:
            f.write(b"\0" * _PROBE)
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        return err
    return None


def _diagnose(err: BaseException, probe: Path | None) -> OSError | None:
    """The OS error that made a write fail, if there was one: from ``err`` itself, else by probing."""
    if isinstance(err, WriteError):
        return None
    found = _os_error(err)
    if found is None and probe is not None:
        found = _probe(probe)
    return found


def _widen(path: Path, allowed: int) -> None:
    """Give ``path`` at least the permission bits ``allowed`` (what the umask allows) if a writer left it narrower."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current | allowed != current:
        os.chmod(path, current | allowed)


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
    """A new, hidden name beside ``target``, created empty: ``.NAME.<random>.tmp`` (a file) or
    ``.NAME.<random>.partial`` (a folder), with the umask's permissions (not ``mkstemp``'s 0600)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".partial" if folder else ".tmp"
    for _ in range(100):
        name = target.parent / f".{target.name}.{''.join(secrets.choice(_ALPHABET) for _ in range(8))}{suffix}"
        try:
            if folder:
                os.mkdir(name, 0o777)
            else:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
        except FileExistsError:
            continue
        return name
    raise FileExistsError(errno.EEXIST, f"no free temporary name beside {target}")


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, fsync it, then rename it to ``path``.

    ``write`` gets the temporary file's name as a string (what ``save_file``, ``torch.save`` and
    ``Image.save`` take). Returns ``path``. A failure of the OS (a full disk, no permission, a
    read-only file system) raises :class:`WriteError` naming ``path``; ``path`` is left as it was.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        tmp = _temporary_name(path, folder=False)
        allowed = stat.S_IMODE(tmp.stat().st_mode)  # 0666 less the umask
        write(str(tmp))
        _widen(tmp, allowed)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as err:
        cause = _diagnose(err, tmp if tmp is not None and tmp.exists() else None)
        if cause is None:
            raise
        raise WriteError(path, cause) from err
    finally:
        if tmp is not None:
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
    On any error the temporary folder is removed and ``target`` is left as it was. A full disk (or
    another failure of the disk) while the block writes, or while the folder is published, raises
    :class:`WriteError` naming ``target``.
    """
    target = Path(target)
    if not replace:
        _require_new(target)
    try:
        staging = _temporary_name(target, folder=True)
    except OSError as err:
        raise WriteError(target, err) from err
    try:
        try:
            yield staging
        except Exception as err:  # what the block wrote: only a failure of the disk is this module's to name
            cause = _diagnose(err, None)
            if cause is None or cause.errno not in _DISK_ERRORS:
                raise
            raise WriteError(target, cause) from err
        try:
            _publish(staging, target, replace, last)
        except (FileExistsError, WriteError):
            raise
        except OSError as err:
            raise WriteError(target, err) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, target: Path, replace: bool, last: str | None) -> None:
    """Give ``staging``'s files the umask's permissions at least and flush them to disk, then make it
    ``target`` (one rename, or file by file when replacing)."""
    allowed = stat.S_IMODE(staging.stat().st_mode)  # 0777 less the umask, as made by _temporary_name
    for item in staging.rglob("*"):
        if item.is_symlink():
            continue
        if item.is_file():
            _widen(item, allowed & 0o666)
            _fsync_file(item)
        elif item.is_dir():
            _widen(item, allowed)
    if replace and target.exists():
        _update_in_place(staging, target, last)
    else:
        _require_new(target)
        if target.exists():
            target.rmdir()  # an empty folder: os.replace would refuse it on some systems
        os.replace(staging, target)
    _fsync_dir(target.parent)


def is_temporary(path: str | Path) -> bool:
    """True for a name this module gives its temporaries (``.NAME.<8 characters>.tmp`` or ``.partial``)."""
    name = Path(path).name
    return bool(_STALE_FILE.match(name) or _STALE_FOLDER.match(name))


def remove_stale(folder: str | Path, *, writers: bool = False) -> list[Path]:
    """Remove the temporaries that killed writes left in ``folder`` (not in its sub-folders); returns them.

    Only this module's own names are touched: hidden ``.NAME.<8 characters>.tmp`` files and
    ``.NAME.<8 characters>.partial`` folders. ``writers``: also the ``.tmp<6 characters>`` files of
    safetensors' ``save_file``, for a folder that only mimsdk writes (a model directory). A process killed
    outright (``kill -9``, out of memory, a power cut) cannot remove its temporary, and one may be as
    large as a checkpoint. Call it only while nothing writes into ``folder``: a write in progress there
    has a temporary of this shape too. A missing folder holds nothing stale.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for item in sorted(folder.iterdir()):
        if item.is_symlink():
            continue
        if item.is_file() and (_STALE_FILE.match(item.name) or (writers and _WRITER_STALE.match(item.name))):
            item.unlink(missing_ok=True)
        elif item.is_dir() and _STALE_FOLDER.match(item.name):
            shutil.rmtree(item, ignore_errors=True)
        else:
            continue
        removed.append(item)
    return removed
