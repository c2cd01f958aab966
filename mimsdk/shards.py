"""Shard sets: a corpus prepared once, stored in shards, and read like a folder, from disk or a bucket.

The shards are litdata's (chunk files and ``index.json``; benchmarks/RESULTS.md says why litdata rather than
MosaicML streaming or WebDataset), written by ``litdata.optimize`` in worker processes in the order of the
source, so sample i of a shard set is sample i of the folder it was made from. ``mimsdk-shards.json`` beside
them says what the samples are (:class:`Manifest`): the adapter and the version of its preparation, the
preparation settings, the class names, the count, and facts computed over the whole set (band statistics).

Samples are read by index (``litdata.StreamingDataset[i]``), so the order, the resume and the split over
processes stay those of mimsdk's own sampler (:class:`mimsdk.data.ResumableSampler`), exactly as for a
folder. A remote set (``s3://bucket/prefix``; litdata's other schemes too) is fetched chunk by chunk into
litdata's cache (``LITDATA_CACHE_DIR``); S3 credentials and endpoint come from the usual AWS settings
(``AWS_ENDPOINT_URL`` for MinIO or another S3-compatible store).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import re
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from mimsdk.atomic import atomic_dir
from mimsdk.errors import DataError

MANIFEST = "mimsdk-shards.json"
FORMAT = 1
INDEX = "index.json"  # litdata's
LITDATA_ERROR_GRACE_S = 10  # s: a worker terminated by another hand than litdata's is a death after that
ORPHANED_WRITER_S = 120  # s: no preparing process alive and litdata not done: it waits for a dead one
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def is_url(path: str | Path) -> bool:
    """Whether ``path`` is a URL (``s3://...``) rather than a local path."""
    return bool(URL.match(str(path)))


def is_shard_set(path: str | Path) -> bool:
    """A URL, or a local folder holding ``mimsdk-shards.json``."""
    return is_url(path) or (Path(path) / MANIFEST).is_file()


@dataclass
class Manifest:
    """What a shard set holds, written beside its shards.

    Attributes:
        adapter: the ``data.modality`` that prepared it. version: that adapter's preparation version.
        preparation: the settings the stored samples depend on (a recipe that differs is refused).
        count: samples. classes: class names, indexed by the samples' labels (empty when unlabelled).
        facts: what the adapter computed over the whole set when it was written (per-band statistics).
        source: where the samples came from, for messages.
    """

    adapter: str
    version: int
    preparation: dict[str, Any]
    count: int
    classes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    format: int = FORMAT


def read_manifest(path: str | Path) -> Manifest:
    """The manifest of the shard set at ``path`` (a folder or a URL); DataError naming it if absent or bad."""
    where = f"{str(path).rstrip('/')}/{MANIFEST}"
    try:
        text = _fetch(str(path), MANIFEST) if is_url(path) else (Path(path) / MANIFEST).read_text()
        raw = json.loads(text)
    except DataError:
        raise
    except (OSError, ValueError) as err:
        raise DataError(f"{where}: not a readable shard set manifest ({err})") from None
    except Exception as err:  # noqa: BLE001 - a storage client's own error (no such bucket, no access)
        raise DataError(f"{where}: cannot be fetched ({type(err).__name__}: {err})") from None
    if raw.get("format") != FORMAT:
        raise DataError(f"{where}: shard set format {raw.get('format')!r}; this mimsdk reads format {FORMAT}")
    names = {f.name for f in dataclasses.fields(Manifest)}
    try:
        return Manifest(**{k: v for k, v in raw.items() if k in names})
    except TypeError as err:
        raise DataError(f"{where}: not a shard set manifest ({err})") from None


def allow_plain_http() -> None:
    """Let litdata's obstore client reach an S3-compatible store on plain ``http://`` (``AWS_ENDPOINT_URL``).

    litdata builds obstore's S3 client with client options (timeouts) but without ``allow_http``, and obstore
    then refuses an ``http://`` endpoint with "builder error" (developmentseed/obstore#159): a MinIO inside a
    cluster, or the local server of the tests. Added only when the configured endpoint is plain http.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    if endpoint.startswith("http://"):
        from litdata.streaming import downloader

        options = getattr(downloader, "_OBSTORE_CLIENT_OPTIONS", None)
        if isinstance(options, dict):
            options["allow_http"] = "true"


def _fetch(url: str, name: str) -> str:
    """A small file of a remote shard set, through litdata's own downloader (same credentials as the chunks)."""
    from litdata.streaming.downloader import get_downloader

    allow_plain_http()
    with tempfile.TemporaryDirectory(prefix="mimsdk-manifest-") as folder:
        local = Path(folder) / name
        get_downloader(url.rstrip("/"), folder, []).download_file(f"{url.rstrip('/')}/{name}", str(local))
        if not local.is_file():  # litdata's downloader passes over a missing object in silence
            raise DataError(f"{url.rstrip('/')}/{name}: not found; a shard set made by mimsdk shard has one")
        return local.read_text()


def check_preparation(manifest: Manifest, expected: dict[str, Any], adapter: str, version: int, where: str) -> None:
    """Refuse a shard set prepared otherwise than the recipe asks, naming the first key that differs."""
    if manifest.adapter != adapter:
        raise DataError(f"{where} holds {manifest.adapter} samples; data.modality is {adapter}")
    if manifest.version != version:
        raise DataError(
            f"{where} was prepared by version {manifest.version} of the {adapter} adapter's preparation; this "
            f"mimsdk prepares with version {version}: shard the data again"
        )
    for key in sorted(set(expected) | set(manifest.preparation)):
        ours, theirs = _plain(expected.get(key)), _plain(manifest.preparation.get(key))
        if key not in manifest.preparation and ours is not None:
            raise DataError(
                f"{where} records no {key} (it was made before the {adapter} adapter's preparation took that "
                f"setting); the recipe asks for {ours!r}: shard the data again with this recipe"
            )
        if not _same(ours, theirs):
            raise DataError(
                f"{where} was prepared with {key} = {theirs!r}, the recipe asks for {ours!r}: shard the data "
                "again with this recipe, or set the recipe to the shard set's value"
            )


def _plain(value: Any) -> Any:
    """JSON's view of a value (tuples as lists), so a recipe's value compares with a manifest's."""
    return json.loads(json.dumps(value))


def _same(ours: Any, theirs: Any) -> bool:
    """Equal as settings: NaN (a nodata value) is the same as NaN, 400 as 400.0, in lists and dicts too."""
    if isinstance(ours, float) and isinstance(theirs, float) and math.isnan(ours) and math.isnan(theirs):
        return True
    if isinstance(ours, list) and isinstance(theirs, list):
        return len(ours) == len(theirs) and all(map(_same, ours, theirs))
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return ours.keys() == theirs.keys() and all(_same(ours[key], theirs[key]) for key in ours)
    return ours == theirs


def check_chunks(folder: Path, count: int) -> dict[int, str]:
    """Local chunk files that are missing or shorter than litdata's index says: chunk number -> the reason.
    An index that does not hold the manifest's ``count`` samples is refused whole."""
    try:
        chunks = json.loads((folder / INDEX).read_text())["chunks"]
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{folder / INDEX}: not a readable litdata index ({err})") from None
    indexed = sum(chunk["chunk_size"] for chunk in chunks)
    if indexed != count:
        raise DataError(f"{folder}: {indexed} samples in {INDEX}, {count} in {MANIFEST}; the shard set is incomplete")
    bad = {}
    for number, chunk in enumerate(chunks):
        path = folder / chunk["filename"]
        size = path.stat().st_size if path.is_file() else None
        if size is None:
            bad[number] = f"{path}: missing"
        elif size < chunk["chunk_bytes"]:
            bad[number] = f"{path}: {size} bytes where the index says {chunk['chunk_bytes']} (truncated)"
    return bad


class ShardReader:
    """Random access to the samples of a shard set: ``reader[i]`` is the stored sample i (a dict).

    litdata's dataset is made on first use in each process (DataLoader workers included), not pickled.
    A local chunk found truncated or missing when the set is opened fails its samples at once with a
    DataError naming the chunk, rather than after litdata's wait for bytes that never come.
    """

    def __init__(self, path: str | Path, manifest: Manifest) -> None:
        self.path, self.manifest, self.classes = str(path), manifest, list(manifest.classes)
        self.bad = {} if is_url(path) else check_chunks(Path(path), manifest.count)
        self._starts: list[int] | None = None
        self._dataset: Any = None
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.manifest.count

    def _open(self) -> Any:
        if self._dataset is None or self._pid != os.getpid():  # a forked worker opens its own files
            self._pid = os.getpid()
            from litdata import StreamingDataset

            allow_plain_http()
            # litdata reads LITDATA_CACHE_DIR when it is imported; read here, it also takes effect when set later.
            # Its len() is this process's share under torchrun, but indexing reaches every sample, as we need.
            # batch_decode=0: mimsdk reads by index in its own random order, so litdata's decode window (the
            # neighbours decoded ahead, for a sequential reader) would be work thrown away at every sample.
            self._dataset = StreamingDataset(self.path, cache_dir=os.environ.get("LITDATA_CACHE_DIR"), batch_decode=0)
        return self._dataset

    def chunk_of(self, index: int) -> int:
        """The chunk that holds sample ``index`` (from litdata's index; local sets only)."""
        if self._starts is None:
            chunks = json.loads((Path(self.path) / INDEX).read_text())["chunks"]
            starts, total = [], 0
            for chunk in chunks:
                starts.append(total)
                total += chunk["chunk_size"]
            self._starts = starts
        return max(i for i, start in enumerate(self._starts) if start <= index)

    def source(self, index: int) -> str:
        """The sample, or for a sample in a bad chunk the chunk (so the chunk is named once, not per sample)."""
        if self.bad and (chunk := self.chunk_of(index)) in self.bad:
            return self.bad[chunk].split(": ", 1)[0]
        return f"{self.path} sample {index}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.bad:
            chunk = self.chunk_of(index)
            if chunk in self.bad:
                raise DataError(f"{self.bad[chunk]}; sample {index} is in it")
        return self._open()[index]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}  # each worker opens its own


def write_shards(
    prepare: Callable[[int], dict[str, Any] | LeftOut | None],
    count: int,
    out: str | Path,
    manifest: Manifest,
    workers: int = 1,
    chunk_bytes: str = "64MB",
    compression: str | None = None,
) -> Path:
    """Prepare samples ``0..count-1`` with ``prepare`` in ``workers`` processes and write them, in order, as a
    shard set at ``out`` (a new local folder, written whole or not at all). ``prepare`` returns None for a
    sample it leaves out (a bad file, already named); the manifest's count is the samples written.
    ``compression``: litdata's ("zstd"), for samples that are raw pixels (decoded frames, volumes).
    """
    out = Path(out)
    with atomic_dir(out) as staging, tempfile.TemporaryDirectory(prefix="mimsdk-shard-marks-") as marks_dir:
        marks = Path(marks_dir)
        (marks / "left-out").mkdir()
        options = {
            "fn": Counted(prepare, marks / "left-out"), "inputs": list(range(count)), "output_dir": str(staging),
            "num_workers": max(1, workers), "chunk_bytes": chunk_bytes, "compression": compression,
            "keep_data_ordered": True, "mode": "overwrite", "verbose": True,
        }  # fmt: skip
        _optimize_watched(options, marks / "error")
        left_out = sorted((marks / "left-out").iterdir(), key=lambda mark: int(mark.name.split(".")[0]))
        stop = next((mark.read_text() for mark in left_out if mark.name.endswith(".stop")), None)
        if stop is not None:
            raise DataError(stop)
        written = sum(chunk["chunk_size"] for chunk in json.loads((staging / INDEX).read_text())["chunks"])
        # A second guard, for a litdata that carries on after a worker dies: its samples would be missing
        if written + len(left_out) != count:
            raise DataError(
                f"{count - written - len(left_out)} of {count} samples are missing from the shards and were not left "
                "out on purpose: a preparing process died (out of memory?); the shard set was not written"
            )
        (staging / MANIFEST).write_text(json.dumps(dataclasses.asdict(dataclasses.replace(manifest, count=written))))
    return out


def _optimize_watched(options: dict[str, Any], error: Path) -> None:
    """``litdata.optimize(**options)`` in a process of its own, which stops whole, with the reason in ``error``,
    when one of litdata's workers dies: litdata 0.2.76 waits forever for a worker killed outright (for memory,
    say), as its merge waits for that worker's index. The own process also keeps litdata's global changes (the
    start method, a SIGINT handler that exits with status 0) out of the caller's."""
    if os.name != "posix":  # no fork, no SIGCHLD: unwatched
        _optimize(options, error)
    else:
        writer = multiprocessing.get_context("fork").Process(
            target=_optimize, args=(options, error, os.getpid()), name="mimsdk-shard-writer"
        )
        writer.start()
        with contextlib.suppress(OSError):  # the writer sets it too: whichever runs first, the group exists
            os.setpgid(writer.pid, writer.pid)
        try:
            os.waitid(os.P_PID, writer.pid, os.WEXITED | os.WNOWAIT)  # ended, not reaped: its group id stays ours
        finally:  # Ctrl-C, or helpers that litdata leaves behind on an error (its workers' own children)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(writer.pid, signal.SIGKILL)
            writer.join()
        if writer.exitcode != 0 and not error.exists():
            error.write_text(f"the shard writer process stopped: {_exit_reason(writer.exitcode)}")
    if error.exists():
        raise DataError(error.read_text())


def _optimize(options: dict[str, Any], error: Path, caller: int | None = None) -> None:
    """The shard writer's body: litdata's optimize; its error, one line, goes to ``error``.

    Given the ``caller``'s pid (watched), the writer leads a process group of its own, which every worker joins,
    so that one kill ends them all; it stops the group when a worker dies (:func:`_stop_on_a_dead_worker`), and
    when the caller is gone (killed without the chance to stop it) or no worker is left while litdata still
    waits (:func:`_watch`).
    """
    if caller is not None:
        os.setpgrp()
        writer = os.getpid()  # litdata's workers inherit the handler: their own children are litdata's concern
        signal.signal(signal.SIGCHLD, lambda *_: os.getpid() == writer and _stop_on_a_dead_worker(error))
        threading.Thread(target=_watch, args=(caller, error), daemon=True).start()  # forked workers do not inherit it
    from litdata import optimize

    try:
        optimize(**options, start_method="fork" if caller is not None else None)
    except RuntimeError as err:  # litdata re-raises a worker's error as text: keep its last line
        error.write_text(_worker_error(str(err)))
    except Exception as err:  # noqa: BLE001 - litdata's own failure (a full disk, a bad index): named, one line
        error.write_text(f"{type(err).__name__}: {err}")


def _watch(caller: int, error: Path) -> None:
    """In the shard writer, once a second: stop the group when the caller is gone, or when every worker seen has
    ended for :data:`ORPHANED_WRITER_S` while litdata still runs. The second is the rare death the SIGCHLD
    handler misses: one that litdata reaped itself (``is_alive``) before the handler could look, after which
    litdata waits forever for that worker's index."""
    seen: set[int] = set()
    ended_since: float | None = None
    while True:
        time.sleep(1)
        if os.getppid() != caller:
            _stop_writer(error, "the process that started the shard writer is gone; the shard set was not written")
        alive = set()
        for child in psutil.Process().children():
            with contextlib.suppress(psutil.NoSuchProcess):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.add(child.pid)
        seen |= alive
        if alive or not seen:
            ended_since = None
        elif ended_since is None:
            ended_since = time.monotonic()
        elif time.monotonic() - ended_since > ORPHANED_WRITER_S:
            _stop_writer(
                error, f"every preparing process has ended, yet litdata has not finished after {ORPHANED_WRITER_S} "
                "s: one of them died (out of memory?); the shard set was not written",
            )  # fmt: skip


def _stop_on_a_dead_worker(error: Path) -> None:
    """On SIGCHLD in the shard writer: if a child ended other than with status 0, say which and how in ``error``
    and end the writer's process group. Children are looked at without being reaped (WNOWAIT), so litdata still
    collects the ones that ended well."""
    for child in psutil.Process().children():
        try:
            ended = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            continue
        if ended is None or (ended.si_code == os.CLD_EXITED and ended.si_status == 0):
            continue
        code = ended.si_status if ended.si_code == os.CLD_EXITED else -ended.si_status
        reason = f"a preparing process (pid {child.pid}) died: {_exit_reason(code)}; the shard set was not written"
        if code == -signal.SIGTERM:  # litdata terminates its workers itself on a worker's error, then raises it
            signal.signal(signal.SIGALRM, lambda *_, reason=reason: _stop_writer(error, reason))
            signal.alarm(LITDATA_ERROR_GRACE_S)
            continue
        _stop_writer(error, reason)


def _stop_writer(error: Path, reason: str) -> None:
    """End the shard writer's process group, with ``reason`` in ``error`` (unless litdata's own error is there)."""
    if not error.exists():
        error.write_text(reason)
    os.killpg(0, signal.SIGKILL)


def _exit_reason(code: int | None) -> str:
    """A process's exit code in words: ``-9`` is "killed by SIGKILL (out of memory?)"."""
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal has no name
            name = f"signal {-code}"
        return f"killed by {name}" + (" (out of memory?)" if name == "SIGKILL" else "")
    return f"exit status {code}"


@dataclass
class LeftOut:
    """What a preparation returns for a sample it leaves out and why; ``stops``: the writing must fail (strict)."""

    reason: str
    stops: bool = False


class Counted:
    """``prepare``, leaving a mark in ``folder`` for each sample it leaves out (None or :class:`LeftOut`), so the
    writer can tell samples left out on purpose from samples lost with a process that died, and stop on a
    sample a strict run refuses: from the main process, as litdata waits forever on a worker that raises."""

    def __init__(self, prepare: Callable[[int], dict[str, Any] | LeftOut | None], folder: Path) -> None:
        self.prepare, self.folder = prepare, folder

    def __call__(self, index: int) -> dict[str, Any] | None:
        sample = self.prepare(index)
        if sample is None or isinstance(sample, LeftOut):
            stops = isinstance(sample, LeftOut) and sample.stops
            (self.folder / f"{index}{'.stop' if stops else ''}").write_text(sample.reason if sample else "")
            return None
        return sample


def _worker_error(text: str) -> str:
    """The error a litdata worker raised, from the traceback litdata passes on as text: the last line of the
    original error, before litdata's own "Failed processing item=..." that wraps it."""
    original = text.split("The above exception was the direct cause of the following exception:")[0]
    lines = [line.strip() for line in original.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if "Error:" in line), lines[-1] if lines else text)
    return last.split("DataError: ", 1)[-1]
