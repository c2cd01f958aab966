"""Video: does decoding keep up with training, and what does VideoMAE V2's decoder masking buy?

What it measures
    Decoding: clips/s that the video adapter's training view produces from the
    clips in ``--data`` (random windows, RandomResizedCrop, normalisation), with
    decord using 1 and 2 threads per open file, called in the process; and
    through a ``DataLoader`` with 0 and 2 workers (1 decord thread each).
    Training: clips/s and steps/s a training step (forward, backward, AdamW)
    consumes for each model config asked for (``--configs``): ``tiny`` is the
    video-tiny recipe (8×64², tubelets 2×8×8, 4 blocks 192 wide); ``small`` and
    ``base`` are VideoMAE's ViT-S and ViT-B (16×224², tubelets 2×16×16, decoder
    4 blocks 384 wide), each with the decoder predicting every masked tubelet
    (``decoder_fraction`` 1.0) and half of them chosen by running cells (0.5,
    VideoMAE V2's dual masking). Tube masking at 0.9 throughout.

    Contenders of one kind are timed round-robin: every round times each in
    turn, the order reversed every other round, so machine noise falls on all;
    the table gives the median over ``--rounds`` rounds, and for the decoder
    masking the median of the per-round ratio. Training uses one fixed real
    batch from the clips (decoding is out of the timing); on CUDA the device is
    synchronised around each timed block. "CPU share" is the process's CPU time
    over wall time × torch threads for the training rows: well under 1 means
    other processes took the cores during the measurement. "Steps per CPU-s"
    divides by the process's CPU time instead of wall time: on a shared CPU it is
    the steadier measure of the work a step costs (with ``--threads 1`` it is what
    one dedicated core would do); it means little on CUDA.

How to run (from the repository root)
    python benchmarks/bench_video.py                                   # CPU, tiny, a few minutes
    python benchmarks/bench_video.py --device cuda --precision bf16 --configs tiny,small,base --batch 16

The output is markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

import mimsdk
from mimsdk import DataConfig, ModelConfig, create_model
from mimsdk.adapters.video import VideoAdapter
from mimsdk.data import SeededDataset
from mimsdk.optim import param_groups

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {
    # name: model fields, decord short side
    "tiny": (
        dict(
            size="tiny",
            depth=4,
            input_size=[8, 64, 64],
            patch_size=[2, 8, 8],
            decoder_dim=128,
            decoder_depth=2,
            decoder_heads=4,
        ),
        80,
    ),  # fmt: skip
    "small": (
        dict(
            size="small",
            input_size=[16, 224, 224],
            patch_size=[2, 16, 16],
            decoder_dim=192,
            decoder_depth=4,
            decoder_heads=3,
        ),
        256,
    ),  # fmt: skip
    "base": (
        dict(
            size="base",
            input_size=[16, 224, 224],
            patch_size=[2, 16, 16],
            decoder_dim=384,
            decoder_depth=4,
            decoder_heads=6,
        ),
        256,
    ),  # fmt: skip
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: torch.autocast")
    parser.add_argument("--configs", default="tiny", help="comma-separated: tiny, small, base")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "video"))
    parser.add_argument("--batch", type=int, default=8, help="clips per training step and per DataLoader batch")
    parser.add_argument("--clips", type=int, default=12, help="clips decoded per timed decoding block")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per contender per round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per contender first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--stride", type=int, default=4)
    return parser.parse_args(argv)


def data_config(short_side: int, threads: int, stride: int, workers: int = 0) -> DataConfig:
    options = {"stride": stride, "threads": threads, "short_side": short_side, "clips_per_video": 64}
    return DataConfig(modality="video", num_workers=workers, crop_scale=[0.33, 1.0], options=options)


def time_in_process(dataset: SeededDataset, clips: int, start: int) -> float:
    """Clips/s of ``clips`` items decoded one after another in this process."""
    began = time.perf_counter()
    for i in range(start, start + clips):
        dataset[(0, i % len(dataset))]
    return clips / (time.perf_counter() - began)


def loader_rate(dataset: SeededDataset, batch: int, workers: int, batches: int, start: int) -> float:
    """Clips/s through a DataLoader, worker start-up included (with prefetching, timing after a
    first batch would only time the queue)."""
    keys = [(0, i % len(dataset)) for i in range(start, start + batch * batches)]
    began = time.perf_counter()
    loader = DataLoader(dataset, batch_size=batch, sampler=keys, num_workers=workers)
    for _ in loader:
        pass
    return batch * batches / (time.perf_counter() - began)


def decoding(args: argparse.Namespace, model: ModelConfig, short_side: int) -> dict[str, float]:
    adapter = VideoAdapter()
    sets = {
        threads: SeededDataset(
            adapter.dataset(args.data, data_config(short_side, threads, args.stride), model, train=True), seed=0
        )  # fmt: skip
        for threads in (1, 2)
    }
    rates: dict[str, list[float]] = {}
    batches = max(2, -(-args.clips // args.batch))
    for r in range(args.rounds):
        names = [1, 2] if r % 2 == 0 else [2, 1]
        for threads in names:
            rate = time_in_process(sets[threads], args.clips, start=r * args.clips)
            rates.setdefault(f"decord threads={threads}, in process", []).append(rate)
        for workers in [0, 2] if r % 2 == 0 else [2, 0]:
            rate = loader_rate(sets[1], args.batch, workers, batches, start=r * args.batch * batches)
            rates.setdefault(f"DataLoader workers={workers} (1 decord thread)", []).append(rate)
    return {name: statistics.median(values) for name, values in rates.items()}


def per_source(args: argparse.Namespace, model: ModelConfig, short_side: int) -> list[tuple[str, str, float]]:
    """Median seconds per clip for each source file (1 decord thread, in process): resolution decides it."""
    ds = VideoAdapter().dataset(args.data, data_config(short_side, 1, args.stride), model, train=True)
    seeded, count = SeededDataset(ds, seed=1), len(ds.videos)
    rows = []
    for v, info in enumerate(ds.videos):
        times = []
        for clip in range(args.rounds):
            began = time.perf_counter()
            seeded[(0, clip * count + v)]
            times.append(time.perf_counter() - began)
        rows.append((info.path.name, f"{info.width}×{info.height}", statistics.median(times)))
    return rows


def training(args: argparse.Namespace, model_config: ModelConfig, short_side: int) -> dict[str, tuple]:
    device = torch.device(args.device)
    view = VideoAdapter().dataset(args.data, data_config(short_side, 1, args.stride), model_config, train=False)
    x = torch.stack([view[i % len(view)][0] for i in range(args.batch)]).to(device)
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.precision == "bf16" else (
        contextlib.nullcontext)  # fmt: skip
    contenders = {}
    for fraction in (1.0, 0.5):
        torch.manual_seed(0)
        model = create_model(model_config, decoder_fraction=fraction, decoder_masking="running_cell").to(device)
        groups = param_groups(model, 0.05, model.no_weight_decay())
        optimizer = torch.optim.AdamW(groups, lr=1.5e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
        contenders[fraction] = (model, optimizer)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def steps(fraction: float, count: int, r: int) -> None:
        model, optimizer = contenders[fraction]
        gen = torch.Generator(device=device).manual_seed(r)
        for _ in range(count):
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = model(x, generator=gen).loss
            loss.backward()
            optimizer.step()

    for fraction in contenders:
        steps(fraction, args.warmup, 0)
    rates: dict[float, list[float]] = {f: [] for f in contenders}
    shares: dict[float, list[float]] = {f: [] for f in contenders}
    per_cpu: dict[float, list[float]] = {f: [] for f in contenders}  # steps per CPU-second of this process
    for r in range(args.rounds):
        for fraction in (1.0, 0.5) if r % 2 == 0 else (0.5, 1.0):
            sync()
            began, cpu = time.perf_counter(), time.process_time()
            steps(fraction, args.steps, r + 1)
            sync()
            wall = time.perf_counter() - began
            rates[fraction].append(args.steps / wall)
            cpu = time.process_time() - cpu
            shares[fraction].append(cpu / (wall * torch.get_num_threads()))
            per_cpu[fraction].append(args.steps / cpu)
    ratio = statistics.median(a / b for a, b in zip(rates[0.5], rates[1.0]))
    cpu_ratio = statistics.median(a / b for a, b in zip(per_cpu[0.5], per_cpu[1.0]))
    tokens = {f: getattr(contenders[f][0].decoding, "num_decode", None) for f in contenders}
    return {
        f: (
            statistics.median(rates[f]),
            statistics.median(shares[f]),
            statistics.median(per_cpu[f]),
            tokens[f],
            (ratio, cpu_ratio) if f == 0.5 else None,
        )
        for f in contenders
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# bench_video: {datetime.date.today()}, mimsdk {mimsdk.__version__}, torch {torch.__version__}")
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "none"
    print(f"device {args.device} ({gpu}), {os.cpu_count()} logical CPUs ({cpu}), torch threads {args.threads}, "
          f"precision {args.precision}, batch {args.batch}, rounds {args.rounds}, data {args.data}\n")  # fmt: skip
    for name in args.configs.split(","):
        fields, short_side = CONFIGS[name]
        model = ModelConfig(**fields, masker="tube", mask_ratio=0.9, modality="video")
        frames, height, width = model.input_size
        print(f"## {name}: {frames}×{height}×{width}, tubelets {'×'.join(map(str, model.patch_size))}, "
              f"stride {args.stride}, decoded at short side {short_side}\n")  # fmt: skip
        decode = decoding(args, model, short_side)
        train = training(args, model, short_side)
        print("| what | clips/s | steps/s | steps per CPU-s | decoder tokens predicted | CPU share | note |")
        print("|---|---:|---:|---:|---:|---:|---|")
        for label, rate in decode.items():
            print(f"| decode: {label} | {rate:.1f} | | | | | |")
        for fraction, (steps, share, cpu_rate, tokens, ratio) in train.items():
            note = (
                f"×{ratio[0]:.2f} wall, ×{ratio[1]:.2f} CPU time of fraction 1.0 (medians of rounds)" if ratio else ""
            )
            print(f"| train: decoder_fraction {fraction} | {steps * args.batch:.1f} | {steps:.2f} | {cpu_rate:.2f} | "
                  f"{tokens or 'all masked'} | {share:.2f} | {note} |")  # fmt: skip
        print("\n| source | size | s per clip (1 thread) |\n|---|---|---:|")
        for source, size, seconds in per_source(args, model, short_side):
            print(f"| {source} | {size} | {seconds:.3f} |")
        need = max(train[f][0] for f in train) * args.batch
        best = max(decode.values())
        print(f"\nFastest decoding gives {best:.1f} clips/s; the fastest training step consumes {need:.1f} clips/s "
              f"({best / need:.2f}× headroom; under 1 means the loader starves the model).\n")  # fmt: skip


if __name__ == "__main__":
    main()
