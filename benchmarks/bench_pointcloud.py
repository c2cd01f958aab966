"""Point-cloud throughput: grouping (FPS + kNN) as clouds grow, and training steps of the point recipes.

What it measures
    Grouping: ``farthest_point_sample`` (G = 64 centres) then ``knn_group`` (K = 32 points each),
    Point-MAE's sizes, on a batch of ``--batch`` random clouds of N = 1k, 4k and 16k points (``--points``).
    Time per cloud is the median over ``--rounds`` rounds of the batch's wall time / batch size;
    "× per 4× N" is the ratio to the previous row. FPS is G sequential steps of O(N) work and kNN
    one G×N distance matrix, so both grow about linearly in N once N is large enough that the
    per-step overheads (G small kernel launches or loop iterations) stop dominating.

    Training: a step is forward + backward + AdamW step (lr 1e-3, weight decay 0.05) on one fixed
    random batch (grouping included: the model groups its input every step) of the
    ``pointcloud-tiny`` and ``pointcloud-shapenet`` (Point-MAE-sized) recipes' models, after
    ``--warmup`` untimed steps; clouds/s is the median over rounds. ``--precision bf16`` runs the
    forward and loss under ``torch.autocast`` (weights and optimiser in fp32). On CUDA the device
    is synchronised around every timed block.

How to run (from the repository root)
    python benchmarks/bench_pointcloud.py                                   # CPU, 2 threads
    python benchmarks/bench_pointcloud.py --device cuda --precision bf16 --batch 128 --train-batch 128

Output is markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import statistics
import time
from collections.abc import Callable

import torch

from mimsdk import create_model
from mimsdk.config import load_recipe
from mimsdk.variants.point_groups import farthest_point_sample, gather_points, knn_group


def timed(fn: Callable[[], object], device: torch.device, rounds: int, warmup: int) -> list[float]:
    """Wall seconds of ``fn`` per round, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def grouping_table(args: argparse.Namespace, device: torch.device) -> str:
    rows = ["| points N | FPS ms/cloud | kNN ms/cloud | FPS + kNN ms/cloud | × per 4× N |", "|---|---|---|---|---|"]
    previous = None
    gen = torch.Generator().manual_seed(0)
    for n in args.points:
        xyz = torch.randn(args.batch, n, 3, generator=gen).to(device)
        holder: dict[str, torch.Tensor] = {}

        def fps(xyz: torch.Tensor = xyz, holder: dict = holder) -> None:
            holder["centres"] = gather_points(xyz, farthest_point_sample(xyz, args.groups))

        def knn(xyz: torch.Tensor = xyz, holder: dict = holder) -> None:
            knn_group(xyz, holder["centres"], args.group_size)

        fps_s = statistics.median(timed(fps, device, args.rounds, 1)) / args.batch
        knn_s = statistics.median(timed(knn, device, args.rounds, 1)) / args.batch
        total = fps_s + knn_s
        growth = f"{total / previous:.2f}" if previous else "–"
        rows.append(f"| {n} | {fps_s * 1e3:.3f} | {knn_s * 1e3:.3f} | {total * 1e3:.3f} | {growth} |")
        previous = total
    return "\n".join(rows)


def training_table(args: argparse.Namespace, device: torch.device) -> str:
    rows = ["| recipe | parameters | batch | steps/s | clouds/s |", "|---|---|---|---|---|"]
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()
    )
    for name in args.recipes:
        config = load_recipe(name).model
        torch.manual_seed(0)
        model = create_model(config).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        x = torch.randn(args.train_batch, config.input_size[0], 3, generator=torch.Generator().manual_seed(1))
        x = x.to(device)

        def step(model: torch.nn.Module = model, opt: torch.optim.Optimizer = opt, x: torch.Tensor = x) -> None:
            with autocast:
                loss = model(x).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        seconds = statistics.median(timed(step, device, args.rounds, args.warmup))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(
            f"| {name} | {params:.1f} M | {args.train_batch} | {1 / seconds:.2f} | {args.train_batch / seconds:.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--points", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="clouds per grouping call")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--recipes", nargs="+", default=["pointcloud-tiny", "pointcloud-shapenet"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    print(f"# Point-cloud benchmark, {datetime.date.today()}, {machine}, {args.device} {args.precision}")
    print(f"torch {torch.__version__}, {args.threads} threads\n")
    print(f"## Grouping: FPS ({args.groups} centres) + kNN ({args.group_size} points), batch {args.batch}\n")
    print(grouping_table(args, device))
    print(f"\n## Training steps ({args.precision}), median of {args.rounds} rounds after {args.warmup} warm-up\n")
    print(training_table(args, device))


if __name__ == "__main__":
    main()
