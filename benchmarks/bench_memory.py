"""Activation checkpointing and compiled blocks against plain blocks: step speed and activation memory.

What it measures
    One MAE training step (forward, backward, AdamW) of the same model three ways, alternating round by
    round so machine noise falls on all of them: plain blocks; ``train.activation_checkpointing``
    (each block's activations recomputed in the backward pass); ``train.compile`` (each block compiled
    with torch.compile; its compile time is reported apart and not timed as steps).

    Memory: the bytes of every tensor autograd saves for the backward pass during one forward
    (``torch.autograd.graph.saved_tensors_hooks``), which is what activation checkpointing trades away;
    on CUDA also ``torch.cuda.max_memory_allocated`` over one step. Tensors saved twice (a view and its
    base) are counted once, by storage.

How to run (from the repository root)
    python benchmarks/bench_memory.py                                   # CPU: ViT-B/16, 224², batch 8, fp32
    python benchmarks/bench_memory.py --device cuda --dtype bf16 --batch 64 --size large
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable

import torch

from mimsdk import create_model
from mimsdk.parallel import prepare_blocks


def build(size: str, compile_blocks: bool, checkpointing: bool, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(size=size, input_size=[224, 224], patch_size=16, decoder_dim=512, decoder_depth=8)
    model = model.to(device).train()
    prepare_blocks(model, activation_checkpointing=checkpointing, compile_blocks=compile_blocks)
    return model


def activation_bytes(model: torch.nn.Module, forward: Callable[[], torch.Tensor]) -> tuple[int, torch.Tensor]:
    """Bytes autograd keeps for the backward pass while ``forward()`` runs (each storage once, the weights
    left out), and what ``forward`` returned."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(size for ptr, size in storages.items() if ptr not in weights), out


def saved_bytes(model: torch.nn.Module, x: torch.Tensor, noise: torch.Tensor, dtype: torch.dtype | None) -> int:
    """Activation bytes of one forward, then its backward (the warm-up)."""

    def forward() -> torch.Tensor:
        with torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            return model(x, noise=noise).loss

    size, loss = activation_bytes(model, forward)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return size


def step_time(model, optimizer, x, noise, dtype, steps: int) -> float:
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        with torch.autocast(x.device.type, dtype, enabled=dtype is not None):
            loss = model(x, noise=noise).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", default="base")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true", help="leave the compiled variant out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = torch.bfloat16 if args.dtype == "bf16" else None
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch, 3, 224, 224, generator=gen).to(args.device)
    noise = torch.rand(args.batch, 196, generator=gen).to(args.device)
    variants = {"plain": (False, False), "activation checkpointing": (False, True)}
    if not args.no_compile:
        variants["compiled blocks"] = (True, False)
    models, memory, peaks, compile_s = {}, {}, {}, {}
    for name, (compiled, checkpointing) in variants.items():
        started = time.perf_counter()
        model = build(args.size, compiled, checkpointing, args.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        memory[name] = saved_bytes(model, x, noise, dtype)  # also the warm-up (and the compile)
        peaks[name] = torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None
        compile_s[name] = time.perf_counter() - started
        models[name] = (model, optimizer)
    times: dict[str, list[float]] = {name: [] for name in models}
    for r in range(args.rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))
        for name in order:
            times[name].append(step_time(*models[name], x, noise, dtype, args.steps))
        print(f"<!-- round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f} s/step" for n in models) + " -->")
    plain = statistics.median(times["plain"])
    print(f"\nDate: {datetime.date.today()}; {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.device}, {torch.get_num_threads()} threads, {args.dtype}; ViT-{args.size}/16 MAE at 224², decoder "
          f"512×8, batch {args.batch}; {args.rounds} alternating rounds of {args.steps} steps\n")  # fmt: skip
    print("| variant | s/step (median) | per round | speed vs plain | activations saved for backward | set-up s |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for name in models:
        median = statistics.median(times[name])
        peak = f" (peak {peaks[name] / 2**30:.2f} GiB)" if peaks[name] else ""
        rounds = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"| {name} | {median:.3f} | {rounds} | {plain / median:.2f}x | {memory[name] / 2**20:.0f} MiB{peak} "
              f"| {compile_s[name]:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
