"""The project's one GPU check: run it once on a lent GPU and append what it prints to benchmarks/RESULTS.md.

How to run (from the repository root, with mimsdk and transformers installed: ``pip install -e ".[dev]"``, or on
a machine that already has PyTorch, transformers and timm, ``pip install --no-deps -e .``)
    python benchmarks/gpu_check.py                  # one CUDA GPU: planned for under 8 minutes on an H100/H200
    python benchmarks/gpu_check.py --device cpu     # tiny sizes, fp32, in seconds: CI runs it (tests/test_gpu_check.py)

Run it as one process (not under torchrun). It prints progress as HTML comments while it runs, then a header
(date, device, software, setup) and ONE markdown table. Every part is a row of that table:

- **MAE step, ViT-B/16 at 224² (bf16)**, with MAE's own 512 wide × 8 deep decoder, mask 0.75, norm_pix,
  AdamW, one fixed batch and mask: mimsdk; transformers' ViTMAEForPreTraining holding the same weights; mimsdk
  decoding 50 % and 25 % of the masked tokens (partial decoding); mimsdk with each block compiled
  (``mimsdk.parallel.prepare_blocks``); mimsdk under FSDP2 in one process (``mimsdk.parallel.parallelize``).
  All of them are timed round-robin in one run (``benchmarks/bench_train.py``'s ``time_rounds``: warm-up,
  then rounds of steps of each in turn, the order reversed every other round), and each row gives the
  median of its per-round ratio to plain mimsdk.
- **Activation checkpointing, ViT-L/16 at 224²**: without and with, alternating: images/s and peak memory.
- **Image loader**: images/s the ``images`` adapter's training view (decode, RandomResizedCrop, flip,
  normalise) delivers through a DataLoader with 16 workers, on 2,000 generated 224² JPEGs.
- **Data wait**: what ``mimsdk.throughput.TimedBatches`` counts as waiting for data when the GPU still has
  work queued (it should count only the GPU's idle time) and when it has none.

Model FLOPs per image come from ``torch.utils.flop_counter.FlopCounterMode`` on one step (forward and
backward; the optimiser's elementwise work is not counted). A row that computes the same model as another
(compiled, FSDP, activation checkpointing) uses that row's count: MFU counts model FLOPs, not recomputation.
MFU = images/s × FLOPs per image / the GPU's dense bf16 peak (H100 SXM and H200: 989 TFLOP/s; A100:
312; H100 PCIe: 756); another GPU prints "unknown GPU: no MFU".

On CUDA the device is synchronised around every timed block; peak step memory is
``torch.cuda.max_memory_allocated`` over the timed steps (after ``reset_peak_memory_stats``) minus what was
allocated before them (every model's weights and AdamW moments); resident is the row's own weights and moments.

A part that fails (out of memory, a compiler error) becomes a row saying so, its traceback a comment, and the
check goes on. ``--budget`` (seconds, default 420 on CUDA) skips the parts not yet started once it is spent.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import gc
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import bench_train as bench
import numpy as np
import timm
import torch
import torch.distributed as dist
import transformers
from PIL import Image
from torch.utils import flop_counter
from torch.utils.data import DataLoader

import mimsdk
from mimsdk import create_model
from mimsdk.adapter import get_adapter
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.distributed import Processes, init_processes
from mimsdk.parallel import parallelize, prepare_blocks
from mimsdk.throughput import TimedBatches, count_cpu_attention, dense_bf16_peak

MAE_DECODER = {"decoder_dim": 512, "decoder_depth": 8, "decoder_heads": 16}  # He et al. 2022, Table 1
LETTERS = {"tiny": "Ti", "small": "S", "base": "B", "large": "L", "huge": "H"}
MIB = 2**20
FACTS: list[str] = []  # lines the parts add to the header
ORDER = [  # the MAE-step part's contenders; the first is the reference
    "mimsdk",
    "transformers ViTMAE, same weights",
    "mimsdk, decode 50 % of masked",
    "mimsdk, decode 25 % of masked",
    "mimsdk, blocks compiled",
    "mimsdk, FSDP2, 1 process",
]


@dataclass(frozen=True)
class Plan:
    """Sizes and budgets for one device kind."""

    dtype: str  # bf16: torch.autocast; fp32: none
    image: int
    patch: int
    base: dict  # create_model keywords of the model of the MAE-step part
    large: dict  # ... of the activation-checkpointing part
    decoder: dict
    batch: int
    large_batch: int
    warmup: int
    steps: int
    rounds: int
    jpegs: int
    workers: int
    loader_batch: int
    loader_epochs: int  # timed epochs, after one untimed epoch that starts the workers
    compile: bool
    budget: float  # seconds; 0: none

    @property
    def tokens(self) -> int:
        return (self.image // self.patch) ** 2


PLANS = {
    "cuda": Plan(
        dtype="bf16", image=224, patch=16, base={"size": "base"}, large={"size": "large"}, decoder=MAE_DECODER,
        batch=256, large_batch=256, warmup=3, steps=10, rounds=5, jpegs=2000, workers=16, loader_batch=64,
        loader_epochs=3, compile=True, budget=420.0,
    ),
    "cpu": Plan(
        dtype="fp32", image=32, patch=4, base={"size": "tiny", "depth": 2}, large={"size": "small", "depth": 2},
        decoder={"decoder_dim": 64, "decoder_depth": 2, "decoder_heads": 2}, batch=4, large_batch=4, warmup=1,
        steps=2, rounds=1, jpegs=64, workers=2, loader_batch=16, loader_epochs=1, compile=False, budget=0.0,
    ),
}  # fmt: skip

COLUMNS = [
    ("part", "---"),
    ("model", "---"),
    ("contender", "---"),
    ("images/s (median)", "---:"),
    ("per round", "---"),
    ("vs reference (median ratio)", "---:"),
    ("peak step MiB", "---:"),
    ("resident MiB", "---:"),
    ("model GFLOP/image", "---:"),
    ("MFU", "---:"),
]


@dataclass
class Row:
    part: str
    model: str
    contender: str
    cells: dict[str, str] = field(default_factory=dict)  # column name: text; missing ones print as "—"

    def markdown(self) -> str:
        values = [self.part, self.model, self.contender] + [self.cells.get(name, "—") for name, _ in COLUMNS[3:]]
        return "| " + " | ".join(values) + " |"


class Clock:
    """Seconds since the start, and whether the budget is spent."""

    def __init__(self, budget: float) -> None:
        self.start, self.budget = time.perf_counter(), budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def spent(self) -> bool:
        return self.budget > 0 and self.elapsed() > self.budget


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--batch", type=int, help="images per step of the ViT-B part (CUDA default 256)")
    parser.add_argument("--large-batch", type=int, help="images per step of the ViT-L part (CUDA default 256)")
    parser.add_argument("--rounds", type=int, help="timed rounds per part (CUDA default 5)")
    parser.add_argument("--budget", type=float, help="seconds after which parts not yet started are skipped")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], help="bf16 autocast or fp32 (CUDA default bf16, CPU fp32)")
    parser.add_argument("--compile-on-cpu", action="store_true", help="on the CPU, also time compiled blocks")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False (use --device cpu)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        parser.error("run the check as one process, not under torchrun")
    plan = PLANS[args.device]
    changes = {"batch": args.batch, "large_batch": args.large_batch, "rounds": args.rounds, "budget": args.budget}
    changes["dtype"] = args.dtype
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.compile_on_cpu and args.device == "cpu":
        changes["compile"] = True
    args.plan = replace(plan, **changes)
    args.command = " ".join(["python benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    return args


def note(text: str) -> None:
    """A progress line: an HTML comment, so the output can be appended to RESULTS.md as it is."""
    print(f"<!-- {text.replace('--', '- -')} -->", flush=True)


def failed(row: Row, err: BaseException) -> Row:
    note(f"{row.part}, {row.contender} failed:\n{traceback.format_exc()}")
    first = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
    row.cells["images/s (median)"] = f"failed: {type(err).__name__}" + (f": {first}" if first else "")
    return row


def model_name(plan: Plan, model: dict) -> str:
    """ViT-B/16, 224², decoder 512×8 (with "2 blocks" when the depth is not the size's)."""
    depth = f" ({model['depth']} blocks)" if "depth" in model else ""
    decoder = f"decoder {plan.decoder['decoder_dim']}×{plan.decoder['decoder_depth']}"
    return f"ViT-{LETTERS[model['size']]}/{plan.patch}{depth}, {plan.image}², {decoder}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- FLOPs and MFU ----------------------------------------------------------------------------------------


def flops_per_image(c: bench.Contender, x: torch.Tensor, noise: torch.Tensor, autocast: Callable) -> float:
    """Model FLOPs of one training step's forward and backward, per image, counted by PyTorch."""
    c.optimizer.zero_grad(set_to_none=True)
    counter = flop_counter.FlopCounterMode(display=False)
    with counter:
        with autocast():
            loss = c.loss_fn(x, noise)
        loss.backward()
    c.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / x.shape[0]


def peak_tflops(device: torch.device, dtype: str) -> tuple[float | None, str]:
    """The GPU's dense peak for the check's precision (None when not known) and a sentence saying which."""
    if device.type != "cuda":
        return None, "CPU: no MFU"
    name = torch.cuda.get_device_name(device)
    peak = dense_bf16_peak(name) if dtype == "bf16" else None
    if peak is None:
        return None, f"unknown GPU: no MFU ({name}, {dtype})"
    return peak, f"MFU against {name}'s dense bf16 peak, {peak:.0f} TFLOP/s"


# -- timing parts --------------------------------------------------------------------------------------------


def rounds_args(plan: Plan) -> argparse.Namespace:
    """What bench_train.time_rounds reads; no CPU-contention retries (a CI machine is shared)."""
    return argparse.Namespace(
        dtype=plan.dtype, warmup=plan.warmup, steps=plan.steps, rounds=plan.rounds,
        min_cpu_share=0.0, max_discards=0, retry_wait=0.0,
    )  # fmt: skip


def inputs(plan: Plan, batch: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One fixed batch and one fixed masking noise, shared by every contender of a part."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, plan.image, plan.image, generator=gen).to(device)
    return x, torch.rand(batch, plan.tokens, generator=gen).to(device)


def try_contender(
    name: str, model: torch.nn.Module, call: torch.nn.Module, x: torch.Tensor, noise: torch.Tensor, autocast: Callable
) -> bench.Contender:
    """A contender whose first step (compiling, sharding) has run once: raises here, not mid-round."""

    def loss_fn(images: torch.Tensor, mask_noise: torch.Tensor) -> torch.Tensor:
        return call(images, noise=mask_noise).loss

    c = bench.Contender(name, model, loss_fn, bench.make_optimizer(model))
    c.step(x, noise, autocast)
    c.optimizer.zero_grad(set_to_none=True)
    return c


def timed_rows(
    part: str,
    model: str,
    contenders: list[bench.Contender],
    flops: dict[str, float | None],
    device: torch.device,
    peak: float | None,
) -> list[Row]:
    """One row per contender, each against the first (the reference)."""
    reference = contenders[0]
    rows = []
    for c in contenders:
        relative = "1 (reference)" if c is reference else f"{bench.ratio_median(c, reference):.2f}"
        cells = {
            "images/s (median)": f"{statistics.median(c.rates):.1f}",
            "per round": ", ".join(f"{r:.1f}" for r in c.rates),
            "vs reference (median ratio)": relative,
        }
        if device.type == "cuda":
            cells["peak step MiB"] = f"{c.peak_mib:.0f}"
            cells["resident MiB"] = f"{c.state_mib:.0f}"
        per_image = flops.get(c.name)
        if per_image:
            cells["model GFLOP/image"] = f"{per_image / 1e9:.1f}" if per_image >= 1e9 else f"{per_image / 1e9:.3f}"
            if peak:
                cells["MFU"] = f"{statistics.median(c.rates) * per_image / (peak * 1e12):.1%}"
        rows.append(Row(part, model, c.name, cells))
    return rows


def mae_step_part(plan: Plan, device: torch.device, stats: bench.RoundStats, peak: float | None) -> list[Row]:
    """ViT-B: mimsdk, transformers with the same weights, partial decoding, compiled blocks, FSDP in one process."""
    part, name = "MAE step", model_name(plan, plan.base)
    autocast = bench.autocast_for(plan.dtype, device)
    note(f"{part}: building {name}, batch {plan.batch}")
    settings = model_kwargs(plan, plan.base)
    built = bench.build(settings.pop("size"), device, False, 0, (0.5, 0.25), **settings)
    for c, label in zip(built, ORDER):
        c.name = label
    x, noise = inputs(plan, plan.batch, device)
    check = bench.check_losses(built, x, noise)
    note(f"{part}: {check}")
    FACTS.append(f"{part} {check}")
    mim = built[0].model
    contenders, rows = list(built), []

    if plan.compile:
        twin = copy.deepcopy(mim)
        prepare_blocks(twin, activation_checkpointing=False, compile_blocks=True)
        start = time.perf_counter()
        try:
            contenders.append(try_contender(ORDER[4], twin, twin, x, noise, autocast))
            note(f"{part}: compiled the blocks in {time.perf_counter() - start:.0f} s (first step)")
        except Exception as err:  # a compiler error is a finding, not the end of the check
            rows.append(failed(Row(part, name, ORDER[4]), err))
    else:
        cells = {"images/s (median)": "skipped on the CPU (--compile-on-cpu times it)"}
        rows.append(Row(part, name, ORDER[4], cells))

    try:
        init_processes(device, group=True)  # a group of one, over an in-memory store
        twin = copy.deepcopy(mim)
        compute = torch.bfloat16 if plan.dtype == "bf16" else None
        spread = parallelize(twin, "fsdp", Processes(), device, compute)
        contenders.append(try_contender(ORDER[5], twin, spread.module, x, noise, autocast))
    except Exception as err:
        rows.append(failed(Row(part, name, ORDER[5]), err))

    note(f"{part}: {len(contenders)} contenders, {plan.warmup} warm-up steps, {plan.rounds} rounds of {plan.steps}")
    bench.time_rounds(part, contenders, x, noise, rounds_args(plan), device, stats)
    flops: dict[str, float | None] = {}
    for c in built:  # the others compute mimsdk's own model
        flops[c.name] = flops_per_image(c, x, noise, autocast)
    flops[ORDER[4]] = flops[ORDER[5]] = flops[ORDER[0]]
    rows += timed_rows(part, name, contenders, flops, device, peak)
    return sorted(rows, key=lambda row: ORDER.index(row.contender))


def model_kwargs(plan: Plan, model: dict) -> dict:
    """create_model keywords over bench_train's setup: this plan's input, patch and decoder."""
    return {**model, "input_size": [plan.image, plan.image], "patch_size": plan.patch, **plan.decoder}


def checkpointing_part(plan: Plan, device: torch.device, stats: bench.RoundStats, peak: float | None) -> list[Row]:
    """ViT-L with and without activation checkpointing, alternating: images/s and peak memory."""
    part, name = "activation checkpointing", model_name(plan, plan.large)
    autocast = bench.autocast_for(plan.dtype, device)
    note(f"{part}: building {name}, batch {plan.large_batch}")
    torch.manual_seed(0)
    plain = create_model(**model_kwargs(plan, plan.large), target="norm_pix", mask_ratio=bench.MASK_RATIO)
    plain.to(device).train()
    again = copy.deepcopy(plain)
    prepare_blocks(again, activation_checkpointing=True, compile_blocks=False)
    x, noise = inputs(plan, plan.large_batch, device)
    contenders = [
        try_contender("without", plain, plain, x, noise, autocast),
        try_contender("with (each block recomputed in backward)", again, again, x, noise, autocast),
    ]
    bench.time_rounds(part, contenders, x, noise, rounds_args(plan), device, stats)
    count = flops_per_image(contenders[0], x, noise, autocast)
    return timed_rows(part, name, contenders, dict.fromkeys((c.name for c in contenders), count), device, peak)


def write_jpegs(folder: Path, count: int, side: int) -> None:
    """``count`` smooth random JPEGs of side² pixels (about the size of a photo's JPEG, not of noise)."""
    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        rng = np.random.default_rng(i)
        small = Image.fromarray(rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8))
        small.resize((side, side), Image.Resampling.BICUBIC).save(folder / f"{i:05d}.jpg", quality=90)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(count)))


def loader_part(plan: Plan, device: torch.device) -> list[Row]:
    """images/s of the images adapter's training view through a DataLoader, as the trainer builds it."""
    part = "image loader"
    contender = f"DataLoader, {plan.workers} workers, batch {plan.loader_batch}"
    model = f"images adapter, {plan.jpegs:,} generated 224² JPEGs → 224²"
    row = Row(part, model, contender)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        start = time.perf_counter()
        write_jpegs(Path(tmp) / "jpegs", plan.jpegs, 224)
        note(f"{part}: wrote {plan.jpegs} JPEGs in {time.perf_counter() - start:.1f} s")
        data = DataConfig(modality="images", batch_size=plan.loader_batch, num_workers=plan.workers)
        config = ModelConfig(size="base", input_size=[224, 224], patch_size=16)
        start = time.perf_counter()
        dataset = get_adapter("images").dataset(Path(tmp) / "jpegs", data, config, train=True)
        note(f"{part}: the adapter scanned {len(dataset)} files in {time.perf_counter() - start:.1f} s")
        loader = DataLoader(
            dataset, batch_size=plan.loader_batch, shuffle=True, num_workers=plan.workers,
            pin_memory=device.type == "cuda", prefetch_factor=4 if plan.workers else None,
            persistent_workers=plan.workers > 0, generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        start = time.perf_counter()
        for _ in loader:  # the untimed epoch: workers start, files reach the page cache
            pass
        note(f"{part}: first epoch (workers starting) {time.perf_counter() - start:.1f} s")
        rates = []
        for _ in range(plan.loader_epochs):  # each epoch starts with no batch prepared
            start, images = time.perf_counter(), 0
            for batch, _labels in loader:
                images += batch.shape[0]
            rates.append(images / (time.perf_counter() - start))
        del loader
    row.cells["images/s (median)"] = f"{statistics.median(rates):.0f}"
    row.cells["per round"] = ", ".join(f"{r:.0f}" for r in rates) + " (one epoch each)"
    return [row]


def data_wait_part(device: torch.device) -> list[Row]:
    """What ``TimedBatches`` (the ``data_wait`` column) counts on a GPU: a loader that takes 20 ms a batch
    while about 60 ms of queued work still runs should cost (almost) nothing; with nothing queued, the 20 ms."""
    row = Row("data wait", "TimedBatches, 10 batches of a 20 ms loader", "GPU busy 60 ms / GPU idle")
    if device.type != "cuda":
        row.cells["per round"] = "CUDA only: on a CPU the wall time inside next is the wait"
        return [row]

    def loader():
        while True:
            time.sleep(0.02)
            yield None

    a = torch.randn(4096, 4096, device=device)
    a @ a  # cuBLAS's first call sets itself up: not part of a matmul's time
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ a
    sync(device)
    per_matmul = (time.perf_counter() - start) / 10
    counted = {}
    for case, matmuls in (("busy", max(1, round(0.06 / per_matmul))), ("idle", 0)):
        batches, wall = TimedBatches(loader(), device), 0.0
        for _ in range(10):
            for _ in range(matmuls):
                a @ a
            start = time.perf_counter()
            next(batches)
            wall += time.perf_counter() - start
        sync(device)
        counted[case] = (batches.take(), wall)
    (busy, busy_wall), (idle, idle_wall) = counted["busy"], counted["idle"]
    row.cells["per round"] = (
        f"counted {busy:.3f} s of {busy_wall:.3f} s spent in next with the GPU busy, {idle:.3f} s of "
        f"{idle_wall:.3f} s with it idle"
    )
    return [row]


# -- output --------------------------------------------------------------------------------------------------


def header(plan: Plan, device: torch.device, mfu_note: str, args: argparse.Namespace) -> list[str]:
    lines = [f"Date: {datetime.date.today().isoformat()}"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        driver = ""
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"--id={device.index or 0}"]
            driver = subprocess.run(query, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
        lines.append(
            f"- GPU: {torch.cuda.get_device_name(device)}, {props.total_memory / MIB:,.0f} MiB, "
            f"{props.multi_processor_count} SMs, CUDA {torch.version.cuda}" + (f", driver {driver}" if driver else "")
        )
    lines.append(
        f"- CPU: {bench.cpu_model()} ({os.cpu_count()} logical CPUs), torch threads {torch.get_num_threads()}, "
        f"load average at the end {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    lines.append(
        f"- Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"timm {timm.__version__}, mimsdk {getattr(mimsdk, '__version__', '?')}"
    )
    lines.append(
        f"- Setup: `{args.command}`; {plan.dtype}" + (" autocast" if plan.dtype == "bf16" else "")
        + f"; mask {bench.MASK_RATIO}, norm_pix, AdamW; MAE step batch {plan.batch}, activation checkpointing "
        f"batch {plan.large_batch}; {plan.warmup} warm-up step(s), then {plan.rounds} round(s) of {plan.steps} steps "
        f"of each contender of a part, alternating; {mfu_note}"
    )  # fmt: skip
    lines += [f"- {fact}" for fact in FACTS]
    return lines


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan: Plan = args.plan
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock, stats = Clock(plan.budget), bench.RoundStats()
    count_cpu_attention()
    peak, mfu_note = peak_tflops(device, plan.dtype)
    parts: list[tuple[str, str, str, Callable[[], list[Row]]]] = [
        # the loader first: its workers fork before CUDA holds memory
        ("image loader", "images adapter", f"DataLoader, {plan.workers} workers", lambda: loader_part(plan, device)),
        ("data wait", "TimedBatches", "GPU busy / GPU idle", lambda: data_wait_part(device)),
        ("MAE step", model_name(plan, plan.base), "mimsdk", lambda: mae_step_part(plan, device, stats, peak)),
        (
            "activation checkpointing", model_name(plan, plan.large), "without and with",
            lambda: checkpointing_part(plan, device, stats, peak),
        ),
    ]  # fmt: skip
    rows: list[Row] = []
    try:
        for part, model, contender, run in parts:
            if clock.spent():
                cells = {"images/s (median)": f"skipped: the {plan.budget:.0f} s budget was spent"}
                rows.append(Row(part, model, contender, cells))
                continue
            start = time.perf_counter()
            try:
                rows += run()
            except Exception as err:  # one part's failure (out of memory, say) is a row; the others still run
                rows.append(failed(Row(part, model, contender), err))
            free_memory(device)
            note(f"{part}: {time.perf_counter() - start:.0f} s (at {clock.elapsed():.0f} s)")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    order = ["MAE step", "activation checkpointing", "image loader", "data wait"]
    rows.sort(key=lambda row: order.index(row.part))
    print()
    print(*header(plan, device, mfu_note, args), sep="\n")
    print()
    print("| " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("| " + " | ".join(align for _, align in COLUMNS) + " |")
    for row in rows:
        print(row.markdown())
    note(f"gpu_check took {clock.elapsed():.0f} s")


if __name__ == "__main__":
    main()
