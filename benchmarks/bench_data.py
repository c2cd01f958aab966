"""Data rate per loader worker, raw files against shard sets, for every modality; time to first step on a big folder.

What it measures
    1. Samples/s per DataLoader worker at the recipe's training resolution, for the six modalities, from raw
       files and from the shard set ``mimsdk.sharding.shard`` makes of them, alternating in one run.

       Each modality's shared sample (``../shared/data/<folder>``) is replicated by symbolic links into a
       temporary folder until it holds at least ``--samples`` samples, counted as the adapter counts them
       (``len`` of its training dataset: a video clip, a multispectral tile, a document page). The recipe is
       the one a team would train that modality with (its GPU recipe where the sample fits it; the loader
       does not depend on the model's depth or width), with the batch size and the workers of this script
       and every cache off (``cache: none``, ``cache_mb: 0``), so the raw rate is each sample prepared from
       its file. The shard set is written once, by ``shard(recipe, data=folder, out=..., workers=...)``, and
       its write time, rate and size are reported.

       Both datasets are built once (their set-up time, the folder's scan, is reported) and then timed in
       rounds, raw then shards, the order reversed every other round: each timed block is a fresh DataLoader
       with the same sampler, batch size, workers and prefetch as ``mimsdk pretrain --data-only``
       (:mod:`mimsdk.loader_rate`), its first batch untimed (it carries the workers' start-up), then batches
       until ``--round-seconds`` have passed (at least two). The sampler continues where the previous block of
       the same source stopped, so each block reads new samples. A round's rate is samples over seconds,
       divided by the workers; the table gives the median over rounds and the median of the per-round
       ratios shards / raw, beside the issue's targets.

       The links all point at a handful of files, which stay in the page cache: the raw rate is the cost of
       decoding and preparing, not of reading a disk. The shards are as large as the prepared data (e.g.
       every 4th video frame, uint8) and are read through the page cache where it holds them. Both favour
       nothing but the CPU work, which is what the comparison is about.

       An adapter that does not write shard sets yet (its ``prepared`` raises "does not write shard sets
       yet") gets its raw rate and a row saying so. A shard set whose estimated size exceeds
       ``--max-shard-gb`` (or half the free disk) is made of fewer samples, and the row says how many.

    2. Time to first step on a generated folder of ``--jpegs`` small JPEGs (32×32 random colours, ten class
       folders) with the images adapter and the ``quickstart`` recipe: ``measure_data(batches=2)``'s
       first-batch time (recipe loaded, folder scanned, dataset built, workers started, first batch
       delivered), and the whole command in a fresh Python process (imports included). Run twice, each in a
       new process, so that a scan cache kept on disk shows in the second.

How to run (from the repository root, with mimsdk installed; nothing else should run on the machine)
    OMP_NUM_THREADS=1 python benchmarks/bench_data.py                 # the full run: 2,000 samples, 100,000 JPEGs
    OMP_NUM_THREADS=1 python benchmarks/bench_data.py --quick         # a smoke test: tiny sizes, about a minute
    python benchmarks/bench_data.py --modalities images,video --workers 2 --rounds 7

The output is markdown: progress in HTML comments, then the machine and the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
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
import traceback
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import litdata
import numpy as np
import torch
from machine import cpu_model  # benchmarks/machine.py, beside this script
from PIL import Image
from torch.utils.data import DataLoader

import mimsdk
from mimsdk.adapter import get_adapter
from mimsdk.config import Recipe, load_recipe
from mimsdk.data import ResumableSampler, SeededDataset
from mimsdk.errors import ConfigError
from mimsdk.pretraining import measure_data, recipe_changes
from mimsdk.sharding import shard

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
NOT_DATA = {".md", ".csv", ".json"}  # notes and label tables beside the samples, not samples
GB = 1e9
MIB = 2**20
NO_SHARDS = "does not write shard sets yet"


@dataclass(frozen=True)
class Case:
    """One modality: which recipe reads which shared sample, and the issue's target for shards / raw."""

    key: str  # for --modalities
    name: str
    recipe: str
    source: str  # under the shared data folder
    changes: tuple[str, ...] = ()  # recipe overrides beyond batch size and workers: caches off
    target: float | None = None  # shards / raw at least this; None: no target set


CASES = (
    Case("images", "images", "natural-images", "images/hymenoptera", target=1.0),
    Case("medical", "medical 3D", "radiology-ct", "medical3d/nifti", ("data.options.cache=none",), target=3.0),
    # EuroSAT's 64² tiles are smaller than the GPU recipes' 96² tiles: its own CPU recipe (32² crops) reads them.
    Case("multispectral", "multispectral", "sentinel2-tiny", "multispectral/eurosat_ms"),
    Case("video", "video", "video-kinetics", "video", target=3.0),
    Case("pointcloud", "point clouds", "pointcloud-shapenet", "pointcloud/modelnet40_2048"),
    Case("documents", "documents", "documents", "documents", ("data.options.cache_mb=0",), target=1.5),
)


@dataclass
class Result:
    """What was measured of one modality (rates are samples/s per worker, one per round)."""

    case: Case
    resolution: str = ""
    source_samples: int = 0
    copies: int = 0
    samples: int = 0
    shard_samples: int = 0
    raw: list[float] = field(default_factory=list)
    shards: list[float] = field(default_factory=list)
    raw_setup_s: float = math.nan
    shards_setup_s: float = math.nan
    write_s: float = math.nan
    shard_bytes: int = 0
    note: str = ""  # why shards are missing, or how the shard set was cut down
    failed: str = ""  # an error that stopped this modality
    # per source, per round: the loader workers' CPU time / (their lifetime × workers); well under 1: contended
    cpu_share: dict[str, list[float]] = field(default_factory=lambda: {"raw": [], "shards": []})

    def ratios(self) -> list[float]:
        return [s / r for r, s in zip(self.raw, self.shards) if r > 0]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    keys = ",".join(c.key for c in CASES)
    parser.add_argument("--modalities", default=keys, help=f"comma-separated, of {keys}; 'none' for none")
    parser.add_argument("--samples", type=int, help="samples per modality, at least (default 2000; --quick 60)")
    parser.add_argument("--jpegs", type=int, help="JPEGs for the time to first step (default 100000; --quick 2000)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers while timing (rates are per worker)")
    parser.add_argument("--batch-size", type=int, help="batch size while timing (default 8; --quick 4)")
    parser.add_argument("--rounds", type=int, help="rounds of raw + shards (default 5; --quick 2)")
    parser.add_argument("--round-seconds", type=float, help="seconds each timed block lasts (default 10; --quick 1)")
    parser.add_argument("--shard-workers", type=int, help="processes writing a shard set (default 2; --quick 1)")
    parser.add_argument("--first-step-workers", type=int, default=2, help="quickstart's data.num_workers (2)")
    parser.add_argument("--max-shard-gb", type=float, default=20.0, help="largest shard set written per modality")
    parser.add_argument("--shared", type=Path, default=SHARED, help="the shared sample data (../shared/data)")
    parser.add_argument("--workdir", type=Path, help="where the copies and shards go (default: a new temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (it is removed by default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check that the script runs, not a result")
    parser.add_argument("--first-step-child", type=Path, help=argparse.SUPPRESS)  # one timed run, in its own process
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, small in [
        ("samples", 2000, 60), ("jpegs", 100_000, 2000), ("batch_size", 8, 4), ("rounds", 5, 2),
        ("round_seconds", 10.0, 1.0), ("shard_workers", 2, 1),
    ]:  # fmt: skip
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    known = {c.key: c for c in CASES}
    wanted = [] if args.modalities == "none" else [m.strip() for m in args.modalities.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in known]
    if unknown:
        parser.error(f"--modalities: unknown {unknown}; choose from {keys}")
    args.cases = [known[m] for m in wanted]
    if min(args.samples, args.batch_size, args.rounds, args.shard_workers) < 1 or args.workers < 0:
        parser.error("--samples, --batch-size, --rounds and --shard-workers must be >= 1, --workers >= 0")
    if args.jpegs < 0 or args.round_seconds <= 0:
        parser.error("--jpegs must be >= 0 (0 skips the time to first step) and --round-seconds > 0")
    return args


def say(text: str) -> None:
    """Progress, as an HTML comment: the markdown that follows stays clean."""
    print(f"<!-- {text} -->", flush=True)


# -- the machine -----------------------------------------------------------------------------------------


def ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    except (ValueError, OSError, AttributeError):
        return math.nan


def machine_description(args: argparse.Namespace, workdir: Path) -> list[str]:
    free = shutil.disk_usage(workdir).free / GB
    return [
        f"Date: {datetime.date.today().isoformat()}",
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), {ram_gb():.0f} GB RAM, {free:.0f} GB free disk at "
        f"the end; load average at the end {', '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, litdata {litdata.__version__}, "
        f"numpy {np.__version__}, Pillow {Image.__version__}, mimsdk {getattr(mimsdk, '__version__', '?')}",
        f"- Setup: {' '.join(['python', 'benchmarks/bench_data.py', *sys.argv[1:]])}; batch {args.batch_size}, "
        f"{args.workers} DataLoader worker(s) while timing, {args.rounds} rounds of {args.round_seconds:g} s per "
        f"source, shard sets written by {args.shard_workers} process(es)",
    ]


# -- the samples -------------------------------------------------------------------------------------------


def recipe_for(case: Case, path: Path, args: argparse.Namespace, workers: int) -> Recipe:
    """The case's recipe reading ``path`` with this script's batch size, workers and caches off."""
    return load_recipe(case.recipe, recipe_changes(str(path), overrides(case, args, workers), {}))


def overrides(case: Case, args: argparse.Namespace, workers: int) -> list[str]:
    return [f"data.batch_size={args.batch_size}", f"data.num_workers={workers}", *case.changes]


def resolution(recipe: Recipe) -> str:
    size = "×".join(str(s) for s in recipe.model.input_size)
    if recipe.data.modality == "pointcloud":
        return f"{recipe.model.input_size[0]} points"
    if recipe.data.modality == "video":
        return f"{recipe.model.input_size[0]} frames of {'×'.join(str(s) for s in recipe.model.input_size[1:])}"
    return size


def training_set(case: Case, path: Path, args: argparse.Namespace, workers: int) -> tuple[Any, Recipe]:
    """The training dataset of ``path`` (a folder or a shard set) as a run builds it, and its recipe."""
    cfg = recipe_for(case, path, args, workers)
    adapter = get_adapter(cfg.data.modality)
    return SeededDataset(adapter.dataset(path, cfg.data, cfg.model, train=True), args.seed), cfg


def sample_files(source: Path) -> list[Path]:
    """The files under ``source`` that may be samples (notes and label tables left out)."""
    return sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() not in NOT_DATA)


def with_copy_number(path: Path, copy: int) -> str:
    """``name.nii.gz`` -> ``name__c0003.nii.gz``: the copy keeps its folder (the class) and its suffixes."""
    stem, dot, suffixes = path.name.partition(".")
    return f"{stem}__c{copy:04d}{dot}{suffixes}"


def replicate(source: Path, dest: Path, copies: int) -> int:
    """``copies`` links to every sample file of ``source`` under ``dest``, class folders kept; the files linked."""
    files = sample_files(source)
    for copy in range(copies):
        for path in files:
            link = dest / path.relative_to(source).parent / with_copy_number(path, copy)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return len(files) * copies


def stored_bytes(value: Any) -> int:
    """Bytes a stored sample holds (arrays, tensors, bytes, nested), for the shard size estimate."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return sum(stored_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(stored_bytes(v) for v in value)
    return 8


def bytes_per_copy(case: Case, source: Path, args: argparse.Namespace) -> int:
    """What one copy of the source weighs once prepared for a shard (raises the adapter's ConfigError when it
    writes no shards)."""
    cfg = recipe_for(case, source, args, 0)
    adapter = get_adapter(cfg.data.modality)
    opts = adapter.options(cfg.data, cfg.model)
    prepared = adapter.prepared(source, cfg.data, cfg.model, opts, verify=True)
    return sum(stored_bytes(prepared[i]) for i in range(len(prepared)))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- timing ------------------------------------------------------------------------------------------------


def time_block(
    dataset: SeededDataset, batch_size: int, workers: int, seed: int, start: int, seconds: float
) -> tuple[float, int, float]:
    """One timed block: a fresh loader from global batch ``start``, its first batch untimed, then batches for
    ``seconds`` (two at least). Returns samples/s per worker, the batches taken (the next block's start), and
    the workers' CPU time over their lifetime × workers (about 1 when each had a core to itself)."""
    cpu_before, lived = os.times(), time.perf_counter()
    # As mimsdk.loader_rate.measure_loader builds it: a run's sampler, batch, workers and prefetch.
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=ResumableSampler(len(dataset), batch_size, seed, start=start),
        num_workers=workers,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )
    stream = iter(loader)
    next(stream)
    began, batches = time.perf_counter(), 0
    while True:
        next(stream)
        batches += 1
        elapsed = time.perf_counter() - began
        if batches >= 2 and elapsed >= seconds:
            break
    del stream  # its workers stop and are joined here, before the other source's block starts
    cpu, lived = os.times(), time.perf_counter() - lived
    if workers:  # joined workers count as this process's children
        used = cpu.children_user - cpu_before.children_user + cpu.children_system - cpu_before.children_system
    else:
        used = cpu.user - cpu_before.user + cpu.system - cpu_before.system
    return batches * batch_size / elapsed / max(workers, 1), batches + 1, used / lived / max(workers, 1)


def bench_case(case: Case, args: argparse.Namespace, work: Path) -> Result:
    result = Result(case)
    source = args.shared / case.source
    workers = args.workers
    raw_set, cfg = training_set(case, source, args, workers)
    result.resolution = resolution(cfg)
    result.source_samples = len(raw_set)
    result.copies = max(1, math.ceil(args.samples / len(raw_set)))

    shard_copies = result.copies
    try:
        weight = bytes_per_copy(case, source, args)
    except ConfigError as err:
        if NO_SHARDS not in str(err):
            raise
        weight, result.note = 0, f"the {cfg.data.modality} adapter {NO_SHARDS}"
    if weight:
        budget = min(args.max_shard_gb * GB, shutil.disk_usage(work).free / 2)
        if weight * shard_copies > budget:
            shard_copies = max(1, int(budget // weight))
            result.note = (
                f"shards of {shard_copies} copies: {result.copies} would store {weight * result.copies / GB:.1f} GB, "
                f"over the {budget / GB:.1f} GB allowed (--max-shard-gb, half the free disk)"
            )

    folder = work / case.key / "raw"
    replicate(source, folder, result.copies)
    say(f"{case.name}: {result.source_samples} samples in {source}, {result.copies} copies in {folder}")
    started = time.perf_counter()
    raw_set, cfg = training_set(case, folder, args, workers)
    result.raw_setup_s = time.perf_counter() - started
    result.samples = len(raw_set)
    say(f"{case.name}: raw set of {result.samples} samples built in {result.raw_setup_s:.1f} s")

    shard_set = None
    if weight:
        shard_folder = folder
        if shard_copies < result.copies:
            shard_folder = work / case.key / "raw-for-shards"
            replicate(source, shard_folder, shard_copies)
        out = work / case.key / "shards"
        say(f"{case.name}: writing shards of {shard_folder} with {args.shard_workers} process(es)")
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # litdata's progress lines: stdout stays the report
            shard(case.recipe, data=str(shard_folder), out=out, workers=args.shard_workers,
                  overrides=overrides(case, args, workers))  # fmt: skip
        result.write_s = time.perf_counter() - started
        result.shard_bytes = folder_bytes(out)
        started = time.perf_counter()
        shard_set, _ = training_set(case, out, args, workers)
        result.shards_setup_s = time.perf_counter() - started
        result.shard_samples = len(shard_set)
        say(
            f"{case.name}: {result.shard_samples} samples sharded in {result.write_s:.1f} s, "
            f"{result.shard_bytes / MIB:.0f} MiB; opened in {result.shards_setup_s:.1f} s"
        )

    sources = {"raw": (raw_set, result.raw), "shards": (shard_set, result.shards)}
    starts = dict.fromkeys(sources, 0)
    names = [name for name, (dataset, _) in sources.items() if dataset is not None]
    for done in range(args.rounds):
        for name in names if done % 2 == 0 else names[::-1]:
            dataset, rates = sources[name]
            rate, taken, share = time_block(
                dataset, args.batch_size, workers, args.seed, starts[name], args.round_seconds
            )
            starts[name] += taken
            rates.append(rate)
            result.cpu_share[name].append(share)
        text = ", ".join(
            f"{name} {sources[name][1][-1]:.1f} (CPU share {result.cpu_share[name][-1]:.2f})" for name in names
        )
        say(f"{case.name} round {done + 1}/{args.rounds}, samples/s per worker: {text}")
    return result


# -- time to first step ------------------------------------------------------------------------------------


def write_jpegs(folder: Path, count: int, seed: int) -> float:
    """``count`` 32×32 JPEGs of random colours in ten class folders; the seconds it took."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    classes = [folder / f"class{c}" for c in range(10)]
    for path in classes:
        path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        # A few colour blocks, upsampled: JPEG-like content rather than noise, which encodes unusually large.
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))
        Image.fromarray(pixels).save(classes[i % 10] / f"{i:07d}.jpg", quality=90)
    return time.perf_counter() - started


def first_step_child(folder: Path, workers: int) -> None:
    """In a fresh process: ``measure_data`` on ``folder`` for two batches; prints one JSON line."""
    started = time.perf_counter()
    rate = measure_data("quickstart", data=str(folder), batches=2, overrides=[f"data.num_workers={workers}"])
    print(json.dumps({"first_batch_s": rate.first_batch_s, "call_s": time.perf_counter() - started}))


def time_first_step(folder: Path, workers: int) -> dict[str, float]:
    """One child process timed whole: its first-batch time, its call's time, its wall time with imports."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--first-step-child", str(folder)]
    cmd += ["--first-step-workers", str(workers)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"the timed process failed:\n{proc.stderr[-3000:]}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**found, "wall_s": wall, "warnings": sum("Warning" in line for line in proc.stderr.splitlines())}


# -- the report ----------------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else math.nan


def number(value: float, digits: int = 1) -> str:
    return "—" if math.isnan(value) else f"{value:,.{digits}f}"


def rate_table(results: list[Result]) -> list[str]:
    lines = [
        "| modality | recipe (training resolution) | samples (source × copies) | raw samples/s per worker | "
        "shards samples/s per worker | shards / raw (median of rounds) | target | met | per round raw / shards | "
        "worker CPU share raw / shards |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
    ]
    for r in results:
        c = r.case
        target = ("≥ 1× (no slower)" if c.target == 1 else f"≥ {c.target:g}×") if c.target else "—"
        head = f"| {c.name} | {c.recipe} ({r.resolution}) | {r.samples:,} ({r.source_samples} × {r.copies}) |"
        if r.failed:
            lines.append(f"| {c.name} | {c.recipe} | — | failed: {r.failed} | — | — | {target} | — | — | — |")
            continue
        ratio = median(r.ratios())
        met = "—" if not c.target or math.isnan(ratio) else ("yes" if ratio >= c.target else "no")
        pairs = zip(r.raw, r.shards) if r.shards else ((raw,) for raw in r.raw)
        rounds = "; ".join(" / ".join(f"{rate:.1f}" for rate in pair) for pair in pairs)
        shards = number(median(r.shards)) if r.shards else r.note
        ratio_text = f"{ratio:.2f}×" if not math.isnan(ratio) else "—"
        share = " / ".join(number(median(v), 2) for v in r.cpu_share.values() if v)
        cells = f"{number(median(r.raw))} | {shards} | {ratio_text} | {target} | {met} | {rounds} | {share} |"
        lines.append(f"{head} {cells}")
    return lines


def shard_table(results: list[Result]) -> list[str]:
    lines = [
        "| modality | samples sharded | write s | written samples/s | shard set MiB | MiB per sample | "
        "raw set-up s (scan) | shards set-up s (litdata opens in the first batch) | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if r.failed:
            continue
        written = r.shard_samples / r.write_s if r.shard_samples and r.write_s else math.nan
        per = r.shard_bytes / MIB / r.shard_samples if r.shard_samples else math.nan
        lines.append(
            f"| {r.case.name} | {r.shard_samples:,} | {number(r.write_s)} | {number(written)} | "
            f"{number(r.shard_bytes / MIB, 0) if r.shard_bytes else '—'} | {number(per, 2)} | "
            f"{number(r.raw_setup_s)} | {number(r.shards_setup_s)} | {r.note} |"
        )
    return lines


def first_step_table(count: int, workers: int, generated_s: float, runs: list[dict[str, float]]) -> list[str]:
    lines = [
        f"Time to first step: {count:,} generated 32×32 JPEGs (written in {generated_s:.1f} s, ten class folders), "
        f"images adapter, quickstart recipe (batch 64), {workers} DataLoader worker(s); target: under 60 s.",
        "",
        "| run | first batch s (measure_data) | measure_data call s | whole process s (imports included) | "
        "warnings | under 60 s |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for i, run in enumerate(runs):
        name = "first (new folder)" if i == 0 else "second (same folder, new process: a scan cache shows here)"
        lines.append(
            f"| {name} | {run['first_batch_s']:.1f} | {run['call_s']:.1f} | {run['wall_s']:.1f} | "
            f"{run['warnings']:.0f} | {'yes' if run['first_batch_s'] < 60 else 'no'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.first_step_child is not None:
        first_step_child(args.first_step_child, args.first_step_workers)
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mimsdk-bench-data-"))
    work.mkdir(parents=True, exist_ok=True)
    # A remote shard set would be cached here; a local one is read in place. Either way, nothing outside `work`.
    os.environ.setdefault("LITDATA_CACHE_DIR", str(work / "litdata-cache"))
    say(f"working folder {work}")
    results: list[Result] = []
    runs: list[dict[str, float]] = []
    generated_s = math.nan
    try:
        for case in args.cases:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the shared samples' known bad files, named once per scan
                try:
                    results.append(bench_case(case, args, work))
                except Exception as err:  # noqa: BLE001 - one modality's failure is reported in its row
                    traceback.print_exc()
                    reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
                    results.append(Result(case, failed=f"{type(err).__name__}: {reason}"[:300]))
            if not args.keep:  # a video shard set alone can take tens of GB: one modality's on disk at a time
                shutil.rmtree(work / case.key, ignore_errors=True)
        if args.jpegs:
            folder = work / "jpegs"
            generated_s = write_jpegs(folder, args.jpegs, args.seed)
            say(f"{args.jpegs} JPEGs written in {generated_s:.1f} s to {folder}")
            for i in range(2):
                runs.append(time_first_step(folder, args.first_step_workers))
                say(f"time to first step, run {i + 1}: {runs[-1]}")
        print()
        print(*machine_description(args, work), sep="\n")
        if results:
            print(
                "\nData rate per loader worker, raw files and shards alternating "
                "(raw: every cache off, each sample prepared from its file):\n"
            )
            print(*rate_table(results), sep="\n")
            print(
                "\nWorker CPU share: the loader workers' CPU time over their lifetime × workers, median over rounds; "
                "well under 1 means other processes took the cores (or the workers waited on I/O)."
            )
            print("\nShard sets (written once by mimsdk.sharding.shard) and the time to build each dataset:\n")
            print(*shard_table(results), sep="\n")
        if runs:
            print()
            print(*first_step_table(args.jpegs, args.first_step_workers, generated_s, runs), sep="\n")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work}")


if __name__ == "__main__":
    main()
