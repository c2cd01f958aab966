"""Shard formats for mimsdk: litdata, MosaicML streaming (MDS) and WebDataset, measured on the same samples.

What it measures
    The same ``--samples`` samples (default 2,000) are written in each format, uncompressed and with the
    format's own compression (litdata zstd, MDS zstd, WebDataset gzip'd tar), ``--per-shard`` samples a
    shard (default 250). A sample is what a prepared mimsdk sample looks like: ``image``, a 3×64×64 uint8
    array; ``jpeg``, the JPEG bytes of that image; ``points``, a float16 array of k×3 with k varying from
    sample to sample (arrays of any shape); ``label``, an int; and ``index``, its position, by which every
    sample read is checked equal to the one written.

    - write: seconds to write the set from samples already in memory, the library imported; a one-sample
      write before it gives the writer's own start-up (litdata's ``optimize`` starts a worker process);
    - sequential read: samples/s iterating the set in its stored order in one process, the arrays decoded,
      the JPEG left as bytes, after the first sample (opening the set and the first sample are timed apart);
    - random access: samples/s reading every sample by index in a random permutation, as mimsdk's
      ``ShardReader`` does under its own sampler (``dataset[i]``), after the first; WebDataset 1.0 has no
      access by index.

    Reads are timed in ``--rounds`` rounds, every format variant once a round (the order reversed every
    other round), each in a fresh Python process; the tables give the median over rounds. Each format
    runs in its own process, so MosaicML streaming can run from a separate folder: its 0.13.0 release pins
    ``transformers<5`` and ``numpy<2.2``, which this project's environment does not satisfy, so it is
    installed apart and put on the path of its process only::

        pip install --no-deps --target /tmp/mosaic-pkgs mosaicml-streaming

    (its other imports, xxhash, zstd, catalogue, boto3 and the like, come from the project's environment).

    Capabilities are measured where they can be, on the uncompressed sets:

    - order independent of worker count: the library's own shuffled iteration (seeded) through a DataLoader
      with 1 and with 2 workers: the same order or not;
    - mid-epoch resume: 2 workers, shuffled, stopped after half the epoch, the loader's ``state_dict`` loaded
      into a new dataset and loader: is the rest of the epoch exactly what the uninterrupted run read?
    - arrays and bytes: every sample read back equal (``index``, ``image``, ``jpeg``, ``points``, ``label``);
    - object-store schemes: the URL schemes the installed library registers for reading;
    - maintenance: the installed and latest versions, the latest release's date (PyPI's JSON API; skipped
      offline) and the installed package's requirements this environment does not satisfy.

    The rest (DDP and multi-node partitioning, index-ordered parallel writing) is stated from each library's
    API as installed.

How to run (from the repository root; nothing else should run on the machine)
    OMP_NUM_THREADS=1 python benchmarks/bench_shard_formats.py             # 2,000 samples, 3 rounds
    OMP_NUM_THREADS=1 python benchmarks/bench_shard_formats.py --quick     # a smoke test: 200 samples
    python benchmarks/bench_shard_formats.py --mosaic-path /tmp/mosaic-pkgs --samples 10000 --rounds 5

The output is markdown: progress in HTML comments, then the machine and the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import io
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from machine import cpu_model  # benchmarks/machine.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
FORMATS = {"litdata": "litdata", "mosaic": "mosaicml-streaming", "webdataset": "webdataset"}
COMPRESSION = {"litdata": "zstd", "mosaic": "zstd", "webdataset": "gz"}
BATCH = 16  # DataLoader batch of the order and resume checks
SAMPLES: list[dict[str, Any]] = []  # the samples of this process, for litdata's forked writer


# -- the samples -------------------------------------------------------------------------------------------


def make_samples(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` samples, the same for every format: a blocky 3×64×64 image (JPEG-like content), its JPEG,
    a float16 k×3 array with k in [100, 300), a label."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    samples = []
    for index in range(count):
        blocks = rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)
        image = np.kron(blocks, np.ones((1, 8, 8), dtype=np.uint8))
        buffer = io.BytesIO()
        Image.fromarray(image.transpose(1, 2, 0)).save(buffer, format="JPEG", quality=90)
        points = rng.standard_normal((int(rng.integers(100, 300)), 3)).astype(np.float16)
        samples.append({"index": index, "image": image, "jpeg": buffer.getvalue(), "points": points,
                        "label": index % 10})  # fmt: skip
    return samples


def sample_bytes(samples: list[dict[str, Any]]) -> float:
    """Mean payload bytes of a sample."""
    total = sum(s["image"].nbytes + len(s["jpeg"]) + s["points"].nbytes + 16 for s in samples)
    return total / max(len(samples), 1)


def same(read: dict[str, Any], written: dict[str, Any]) -> bool:
    """Whether a sample read back equals the one written (arrays equal in dtype, shape and values)."""
    image, points = np.asarray(read["image"]), np.asarray(read["points"])
    return (
        int(read["index"]) == written["index"] and int(read["label"]) == written["label"]
        and bytes(read["jpeg"]) == written["jpeg"]
        and image.dtype == written["image"].dtype and np.array_equal(image, written["image"])
        and points.dtype == written["points"].dtype and np.array_equal(points, written["points"])
    )  # fmt: skip


# -- litdata ---------------------------------------------------------------------------------------------------


def _litdata_item(index: int) -> dict[str, Any]:
    return SAMPLES[index]


class Litdata:
    """litdata: chunks written by ``optimize``, read by ``StreamingDataset`` (mimsdk's own use of it)."""

    module = "litdata"

    def write(self, out: Path, per_shard: int, compression: str | None) -> None:
        from litdata import optimize

        with contextlib.redirect_stdout(sys.stderr):  # its progress lines: stdout carries the result
            optimize(
                fn=_litdata_item, inputs=list(range(len(SAMPLES))), output_dir=str(out), chunk_size=per_shard,
                num_workers=1, keep_data_ordered=True, mode="overwrite", verbose=False, compression=compression,
                start_method="fork",
            )  # fmt: skip

    def sequential(self, out: Path) -> Iterator[dict[str, Any]]:
        from litdata import StreamingDataset

        yield from StreamingDataset(str(out))

    def by_index(self, out: Path) -> Callable[[int], dict[str, Any]] | None:
        from litdata import StreamingDataset

        dataset = StreamingDataset(str(out))
        return dataset.__getitem__

    def loader(self, out: Path, workers: int, seed: int) -> Any:
        from litdata import StreamingDataLoader, StreamingDataset

        dataset = StreamingDataset(str(out), shuffle=True, seed=seed)
        return StreamingDataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=collate_indices)

    def schemes(self) -> list[str]:
        from litdata.streaming import downloader

        return sorted(downloader._DOWNLOADERS)  # the registered readers; private, hence read defensively


# -- MosaicML streaming ------------------------------------------------------------------------------------


class Mosaic:
    """MosaicML streaming: MDS shards written by ``MDSWriter``, read by ``streaming.StreamingDataset``."""

    module = "streaming"

    def write(self, out: Path, per_shard: int, compression: str | None) -> None:
        from streaming import MDSWriter

        columns = {"index": "int", "image": "ndarray:uint8:3,64,64", "jpeg": "bytes", "points": "ndarray:float16",
                   "label": "int"}  # fmt: skip
        limit = int(per_shard * (sample_bytes(SAMPLES[:100]) + 64))  # MDS splits shards by bytes
        with MDSWriter(out=str(out), columns=columns, compression=compression, size_limit=limit) as writer:
            for sample in SAMPLES:
                writer.write(sample)

    def _dataset(self, out: Path, **kw: Any) -> Any:
        from streaming import StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()  # a dataset of an earlier check in this process leaves its shared memory
        return StreamingDataset(local=str(out), remote=None, **kw)

    def sequential(self, out: Path) -> Iterator[dict[str, Any]]:
        yield from self._dataset(out, shuffle=False, batch_size=1)

    def by_index(self, out: Path) -> Callable[[int], dict[str, Any]] | None:
        return self._dataset(out, shuffle=False, batch_size=1).__getitem__

    def loader(self, out: Path, workers: int, seed: int) -> Any:
        from streaming import StreamingDataLoader

        dataset = self._dataset(out, shuffle=True, shuffle_seed=seed, batch_size=BATCH)
        return StreamingDataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=collate_indices)

    def schemes(self) -> list[str]:
        from streaming.base.storage import download

        return sorted(k for k in download.DOWNLOADER_MAPPINGS if k)


# -- WebDataset --------------------------------------------------------------------------------------------------


class WebDataset:
    """WebDataset: tar shards written by ``ShardWriter``, read as a stream by ``webdataset.WebDataset``."""

    module = "webdataset"

    def write(self, out: Path, per_shard: int, compression: str | None) -> None:
        import webdataset as wds

        out.mkdir(parents=True, exist_ok=True)
        pattern = str(out / ("shard-%06d.tar" + (".gz" if compression else "")))  # .tar.gz: gzip'd stream
        with wds.ShardWriter(pattern, maxcount=per_shard, verbose=0) as writer:
            for s in SAMPLES:
                writer.write({"__key__": f"{s['index']:08d}", "image.npy": s["image"], "jpg": s["jpeg"],
                              "points.npy": s["points"], "cls": s["label"]})  # fmt: skip

    @staticmethod
    def urls(out: Path) -> list[str]:
        return sorted(str(p) for p in out.iterdir() if ".tar" in p.name)

    @staticmethod
    def plain(sample: dict[str, Any]) -> dict[str, Any]:
        return {"index": int(sample["__key__"]), "image": sample["image.npy"], "jpeg": sample["jpg"],
                "points": sample["points.npy"], "label": sample["cls"]}  # fmt: skip

    def sequential(self, out: Path) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        # decode(): the default handlers decode .npy and .cls; no image handler is given, so the JPEG stays bytes.
        dataset = wds.WebDataset(self.urls(out), shardshuffle=False, empty_check=False).decode()
        yield from map(self.plain, dataset)

    def by_index(self, out: Path) -> Callable[[int], dict[str, Any]] | None:
        return None  # tar streams; 1.0 has no indexed reader

    def loader(self, out: Path, workers: int, seed: int) -> Any:
        import webdataset as wds
        from torch.utils.data import DataLoader

        urls = self.urls(out)
        dataset = wds.WebDataset(urls, shardshuffle=len(urls), seed=seed, empty_check=False)
        dataset = dataset.shuffle(500, seed=seed).decode().map(self.plain)
        return DataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=collate_indices)

    def schemes(self) -> list[str]:
        gopen = importlib.import_module("webdataset.gopen")  # the module; the package's `gopen` is its function

        return sorted(k for k in gopen.gopen_schemes if not k.startswith("_"))


READERS: dict[str, Callable[[], Any]] = {"litdata": Litdata, "mosaic": Mosaic, "webdataset": WebDataset}


# -- the measurements, in a child process per format --------------------------------------------------------


def collate_indices(batch: list[dict[str, Any]]) -> dict[str, list[int]]:
    """A batch of the order and resume checks: the samples' indices (the arrays vary in shape, and are not needed),
    as a dict, which every loader counts as a batch of len(indices) samples."""
    return {"index": [int(sample["index"]) for sample in batch]}


def indices(batch: dict[str, list[int]]) -> list[int]:
    return batch["index"]


def epoch_order(fmt: Any, out: Path, workers: int, seed: int) -> list[int]:
    return [i for batch in fmt.loader(out, workers, seed) for i in indices(batch)]


def resume_exact(fmt: Any, out: Path, seed: int) -> str:
    """Stop a shuffled 2-worker epoch halfway, resume from the loader's state in a new loader: exact or not."""
    whole = epoch_order(fmt, out, 2, seed)
    loader = fmt.loader(out, 2, seed)
    if not hasattr(loader, "state_dict"):
        return "no (no loader state to save)"
    first: list[int] = []
    stream = iter(loader)
    for _ in range(len(whole) // BATCH // 2):
        first += indices(next(stream))
    state = loader.state_dict()
    del stream
    again = fmt.loader(out, 2, seed)
    again.load_state_dict(state)
    rest = [i for batch in again for i in indices(batch)]
    if first + rest == whole:
        return f"yes (exact: {len(first)} + {len(rest)} samples as uninterrupted)"
    missing, repeated = len(set(whole) - set(first + rest)), len(first + rest) - len(set(first + rest))
    return f"no ({len(first)} + {len(rest)} samples, {missing} of the epoch missing, {repeated} repeated)"


def child(args: argparse.Namespace) -> dict[str, Any]:
    """What ``--child`` asks for, on format ``args.child``, as a dict printed as JSON."""
    global SAMPLES
    SAMPLES = make_samples(args.samples, args.seed)
    fmt = READERS[args.child]()
    out = args.out
    found: dict[str, Any] = {}
    importlib.import_module(fmt.module)  # imported before any timing: its import is no part of a rate
    if args.task == "write":
        compression = None if args.compression == "none" else args.compression
        scratch = Path(tempfile.mkdtemp(prefix="shard-formats-startup-"))
        # One sample first, untimed in the rate: the writer's own start (litdata's: a worker process).
        started = time.perf_counter()
        SAMPLES, kept = SAMPLES[:1], SAMPLES
        fmt.write(scratch / "one", 1, compression)
        SAMPLES = kept
        found["startup_s"] = time.perf_counter() - started
        shutil.rmtree(scratch, ignore_errors=True)
        started = time.perf_counter()
        fmt.write(out, args.per_shard, compression)
        found["write_s"] = time.perf_counter() - started
        files = [p for p in out.rglob("*") if p.is_file()]
        found["bytes"], found["files"] = sum(p.stat().st_size for p in files), len(files)
    elif args.task == "read":
        # Opening and the first sample timed apart (a reader's start-up), then the rate over the rest.
        started = time.perf_counter()
        stream = iter(fmt.sequential(out))
        next(stream)
        found["sequential_first_s"] = time.perf_counter() - started
        started, count = time.perf_counter(), 0
        for _ in stream:
            count += 1
        found["sequential"] = count / (time.perf_counter() - started)
        found["sequential_count"] = count + 1
        order = np.random.default_rng(args.seed).permutation(len(SAMPLES)).tolist()
        started = time.perf_counter()
        get = fmt.by_index(out)
        if get is not None:
            get(order[0])
            found["random_first_s"] = time.perf_counter() - started
            started = time.perf_counter()
            for i in order[1:]:
                get(i)
            found["random"] = (len(order) - 1) / (time.perf_counter() - started)
    else:  # capabilities, on the uncompressed set
        read = list(fmt.sequential(out))
        found["equal"] = sum(same(r, SAMPLES[int(r["index"])]) for r in read)
        found["in_order"] = [int(r["index"]) for r in read] == list(range(len(SAMPLES)))
        get = fmt.by_index(out)
        found["by_index_equal"] = None if get is None else sum(same(get(i), SAMPLES[i]) for i in range(len(SAMPLES)))
        found["order"] = attempt(lambda: epoch_order(fmt, out, 1, args.seed) == epoch_order(fmt, out, 2, args.seed))
        found["resume"] = attempt(lambda: resume_exact(fmt, out, args.seed))
        found["schemes"] = attempt(fmt.schemes)
        found.update(maintenance(FORMATS[args.child]))
    return found


def attempt(check: Callable[[], Any]) -> Any:
    """A check's result, or what stopped it (a capability missing shows as the library's own error)."""
    try:
        return check()
    except Exception as err:  # noqa: BLE001 - reported in the table
        return f"failed: {type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:200]


def maintenance(package: str) -> dict[str, Any]:
    """The installed version, its requirements this environment does not satisfy, and PyPI's latest release."""
    from packaging.requirements import Requirement

    found: dict[str, Any] = {"installed": importlib.metadata.version(package), "unmet": []}
    for text in importlib.metadata.requires(package) or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra's (dev, docs) or another platform's
        try:
            have = importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            found["unmet"].append(f"{req} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            found["unmet"].append(f"{req} (installed {req.name} {have})")
    try:  # one look-up of the package's own page on the registry; offline, the table says so
        with urllib.request.urlopen(f"https://pypi.org/pypi/{package}/json", timeout=20) as response:
            info = json.load(response)
        latest = info["info"]["version"]
        times = [f["upload_time"] for f in info["releases"].get(latest, [])]
        found["latest"] = f"{latest} ({min(times)[:10]})" if times else latest
    except Exception as err:  # noqa: BLE001 - no network: not checked
        found["latest"] = f"not checked ({type(err).__name__})"
    return found


# -- the parent: runs the children, alternating, and prints the tables -----------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--samples", type=int, help="samples in each set (default 2000; --quick 200)")
    parser.add_argument("--per-shard", type=int, help="samples per shard (default 250; --quick 50)")
    parser.add_argument("--rounds", type=int, help="read rounds (default 3; --quick 1)")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of {','.join(FORMATS)}")
    parser.add_argument("--no-compression", action="store_true", help="measure the uncompressed sets only")
    parser.add_argument("--mosaic-path", type=Path, default=Path("/tmp/mosaic-pkgs"),
                        help="a folder holding mosaicml-streaming, put on the path of its process only")  # fmt: skip
    parser.add_argument("--workdir", type=Path, help="where the sets go (default: a new temp folder, removed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check that the script runs")
    parser.add_argument("--child", choices=list(FORMATS), help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=["write", "read", "capabilities"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--compression", default="none", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name, full, small in [("samples", 2000, 200), ("per_shard", 250, 50), ("rounds", 3, 1)]:
        if getattr(args, name) is None:
            setattr(args, name, small if args.quick else full)
    args.formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in args.formats if f not in FORMATS]
    if unknown:
        parser.error(f"--formats: unknown {unknown}; choose from {', '.join(FORMATS)}")
    if min(args.samples, args.per_shard, args.rounds) < 1:
        parser.error("--samples, --per-shard and --rounds must be >= 1")
    return args


def say(text: str) -> None:
    print(f"<!-- {text} -->", flush=True)


def run_child(args: argparse.Namespace, fmt: str, task: str, out: Path, compression: str = "none") -> dict[str, Any]:
    """One measurement in a fresh process (MosaicML streaming from ``--mosaic-path``); its JSON, or ``error``."""
    env = dict(os.environ)
    if fmt == "mosaic" and args.mosaic_path.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.mosaic_path), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", fmt, "--task", task, "--out", str(out),
           "--samples", str(args.samples), "--per-shard", str(args.per_shard), "--seed", str(args.seed),
           "--compression", compression]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        print(proc.stderr[-4000:], file=sys.stderr)
        error = tail[-1][:300] if tail else f"exit status {proc.returncode}"
        if fmt == "mosaic" and "No module named 'streaming'" in error:
            error += f" (pip install --no-deps --target {args.mosaic_path} mosaicml-streaming)"
        return {"error": error}
    return json.loads(lines[-1])


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mimsdk-shard-formats-"))
    work.mkdir(parents=True, exist_ok=True)
    variants = [(f, "none") for f in args.formats]
    if not args.no_compression:
        variants += [(f, COMPRESSION[f]) for f in args.formats]
    say(f"working folder {work}; {args.samples} samples, {args.per_shard} per shard")
    try:
        written: dict[tuple[str, str], dict[str, Any]] = {}
        for fmt, compression in variants:
            written[fmt, compression] = run_child(args, fmt, "write", work / f"{fmt}-{compression}", compression)
            say(f"{fmt} ({compression}) written: {written[fmt, compression]}")
        reads: dict[tuple[str, str], list[dict[str, Any]]] = {v: [] for v in variants}
        readable = [v for v in variants if "error" not in written[v]]
        for done in range(args.rounds):
            for fmt, compression in readable if done % 2 == 0 else readable[::-1]:
                found = run_child(args, fmt, "read", work / f"{fmt}-{compression}", compression)
                reads[fmt, compression].append(found)
                say(f"round {done + 1}/{args.rounds} {fmt} ({compression}): {found}")
        capabilities = {}
        for fmt in args.formats:
            if "error" in written[fmt, "none"]:
                capabilities[fmt] = {"error": written[fmt, "none"]["error"]}
                continue
            capabilities[fmt] = run_child(args, fmt, "capabilities", work / f"{fmt}-none")
            say(f"{fmt} capabilities: {capabilities[fmt]}")
        report(args, variants, written, reads, capabilities, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def report(
    args: argparse.Namespace,
    variants: list[tuple[str, str]],
    written: dict[tuple[str, str], dict[str, Any]],
    reads: dict[tuple[str, str], list[dict[str, Any]]],
    capabilities: dict[str, dict[str, Any]],
    work: Path,
) -> None:
    import torch

    print(f"\nDate: {datetime.date.today().isoformat()}")
    print(
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); load average at the end "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(
        f"- Python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}; litdata "
        f"{version('litdata')}, webdataset {version('webdataset')} (this environment), mosaicml-streaming "
        f"{capabilities.get('mosaic', {}).get('installed', 'not run')} (from {args.mosaic_path})"
    )
    mean = sample_bytes(make_samples(min(args.samples, 100), args.seed))
    print(
        f"- Setup: {' '.join(['python', 'benchmarks/bench_shard_formats.py', *sys.argv[1:]])}; {args.samples} "
        f"samples of {mean / 1024:.1f} KiB (3×64×64 uint8 + its JPEG + k×3 float16 + 2 ints), {args.per_shard} a "
        f"shard; reads in {args.rounds} round(s), each format in a fresh process, files in the page cache ({work})"
    )
    print(
        "\n| format | compression | write s (first sample: start-up) | written samples/s | size MiB | files | "
        "sequential: open + first s | sequential samples/s | random: open + first s | random access samples/s | "
        "per round seq. / random |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for fmt, compression in variants:
        w = written[fmt, compression]
        name = FORMATS[fmt]
        if "error" in w:
            print(f"| {name} | {compression} | not run: {w['error']} |" + " |" * 8)
            continue
        rounds = [r for r in reads[fmt, compression] if "error" not in r]
        errors = [r["error"] for r in reads[fmt, compression] if "error" in r]
        seq = median([r["sequential"] for r in rounds])
        seq_first = median([r["sequential_first_s"] for r in rounds])
        rnd = [r["random"] for r in rounds if "random" in r]
        rnd_first = median([r["random_first_s"] for r in rounds if "random_first_s" in r])
        per_round = "; ".join(
            f"{r['sequential']:,.0f} / " + (f"{r['random']:,.0f}" if "random" in r else "—") for r in rounds
        )
        random_cells = f"{rnd_first:.2f} | {median(rnd):,.0f}" if rnd else "— | not offered (no access by index)"
        print(
            f"| {name} | {compression} | {w['write_s']:.2f} ({w['startup_s']:.2f}) | "
            f"{args.samples / w['write_s']:,.0f} | "
            f"{w['bytes'] / 2**20:.1f} | {w['files']} | {seq_first:.2f} | {seq:,.0f} | {random_cells} | "
            f"{per_round}{'; failed: ' + errors[0] if errors else ''} |"
        )
    print(
        "\nWrite s: the whole set, after a one-sample write that gives the writer's start-up (in brackets). "
        "MDSWriter's close polls its upload queue once a second, so a small write can gain a whole second; "
        "litdata's optimize starts a worker process each call."
    )
    print()
    print(*capability_table(args, capabilities), sep="\n")


STATED = {  # from each library's API as installed (the docstring says which rows are measured)
    "ddp": {
        "litdata": "yes: chunks split over ranks and workers (world size from torch.distributed); elastic resume",
        "mosaic": "yes: shards split over nodes, ranks and workers (num_canonical_nodes keeps the order elastic)",
        "webdataset": "by hand: nodesplitter=split_by_node (the default, single_node_only, refuses several "
        "nodes); equal sample counts per rank need with_epoch or resampled shards",
    },
    "writing": {
        "litdata": "optimize(keep_data_ordered=True): sample i of the inputs is sample i of the set, with N "
        "writer processes",
        "mosaic": "one MDSWriter writes in call order; parallel writers write parts, joined by merge_index",
        "webdataset": "ShardWriter writes in call order; parallel writers write their own shards",
    },
    "compression": {
        "litdata": "zstd (whole chunk, per sample or framed batches)",
        "mosaic": "zstd, gz, bz2, br, snappy (per shard)",
        "webdataset": "gzip'd tar shards, or per-file .gz members",
    },
}


def capability_table(args: argparse.Namespace, capabilities: dict[str, dict[str, Any]]) -> list[str]:
    names = [FORMATS[f] for f in args.formats]
    lines = ["| what mimsdk needs | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]

    def row(label: str, cell: Callable[[str, dict[str, Any]], str]) -> None:
        cells = []
        for fmt in args.formats:
            found = capabilities.get(fmt, {})
            cells.append(f"not run: {found['error']}" if "error" in found else cell(fmt, found))
        lines.append(f"| {label} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")

    def order(fmt: str, c: dict[str, Any]) -> str:
        own = c["order"]
        text = {True: "yes", False: "no"}.get(own, own) if not isinstance(own, str) else own
        by_index = "; by index under mimsdk's sampler: yes" if c["by_index_equal"] is not None else ""
        return f"own shuffled order, 1 vs 2 workers: {text} (measured){by_index}"

    def arrays(fmt: str, c: dict[str, Any]) -> str:
        return f"{c['equal']} of {args.samples} samples read back equal (uint8 3×64×64, float16 k×3, bytes, ints)"

    def random_access(fmt: str, c: dict[str, Any]) -> str:
        if c["by_index_equal"] is None:
            return "no: tar streams (webdataset 1.0 has no indexed reader)"
        return f"yes: dataset[i], {c['by_index_equal']} of {args.samples} equal"

    def schemes(fmt: str, c: dict[str, Any]) -> str:
        found = c["schemes"]
        return ", ".join(found) if isinstance(found, list) else str(found)

    def maintenance_cell(fmt: str, c: dict[str, Any]) -> str:
        unmet = "; ".join(c["unmet"]) or "none"
        return f"installed {c['installed']}, latest {c['latest']}; requirements this environment does not meet: {unmet}"

    row("deterministic order independent of worker count", order)
    row("mid-epoch resume state (2 workers, shuffled, stopped halfway)", lambda f, c: str(c["resume"]))
    row("DDP / multi-node partitioning", lambda f, c: STATED["ddp"][f])
    row("object-store URL schemes (installed)", schemes)
    row("arbitrary arrays (round trip, measured)", arrays)
    row("compression", lambda f, c: STATED["compression"][f])
    row("index-ordered writing", lambda f, c: STATED["writing"][f])
    row("random access by index", random_access)
    row("stored order = written order (sequential read)", lambda f, c: "yes" if c["in_order"] else "no")
    row("maintenance", maintenance_cell)
    return lines


if __name__ == "__main__":
    main()
