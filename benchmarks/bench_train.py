"""Training-step throughput: mimsdk's MaskedAutoencoder against transformers' ViTMAEForPreTraining.

What it measures
    For each ViT size asked for (``--sizes``), one mimsdk model is built with
    ``create_model`` (224x224 input, 16x16 patches, mask ratio 0.75, a 128-wide,
    4-deep, 4-head decoder, ``norm_pix`` target) and converted with
    ``mimsdk.hub.transformers_export.to_vitmae`` into a ``ViTMAEForPreTraining``
    holding the same weights. A third contender is the same mimsdk model with
    ``mask_ratio=0.0``: its encoder sees every token, which is what a ViT
    encoder without MAE's visible-only trick costs, so the ratio of the two
    mimsdk rows is the speed-up that encoding visible tokens only buys.

    A training step is forward + backward + ``torch.optim.AdamW.step`` (lr
    1.5e-4, betas (0.9, 0.95), weight decay 0.05 on matrices, none on norms,
    biases and tokens: the same two parameter groups for every contender), on
    one fixed random batch and one fixed masking noise shared by all contenders.
    Both MAE implementations therefore see identical weights, pixels and masks;
    the script checks first that their losses agree.

    After ``--warmup`` untimed steps each, the contenders are timed round-robin:
    every round times ``--steps`` steps of each contender in turn, the order
    reversed every other round, so that machine noise falls on all of them.
    Images/s is computed per round and the median over ``--rounds`` rounds is
    reported, with the per-round ratio's median for mimsdk / transformers. On
    CUDA the device is synchronised around each timed block, and the peak memory
    each contender allocates during its steps above what is resident (weights
    and AdamW moments of all models) is reported, plus its own resident state.

    On a shared CPU machine another process that takes a core stalls every
    multi-threaded op (threads wait for each other), which can slow a step ten
    times. So each timed block also records the process's CPU time over wall
    time x threads ("CPU share", about 1 when the cores are ours); on CPU a
    round in which any contender's share fell under ``--min-cpu-share`` is
    thrown away and redone after ``--retry-wait`` seconds, at most
    ``--max-discards`` times in all, and the output says how many were.

How to run (from the repository root, with mimsdk and transformers installed)
    python benchmarks/bench_train.py                       # CPU, tiny+small, batch 16, 2 threads
    python benchmarks/bench_train.py --device cuda --dtype bf16 --sizes base --batch 64 --steps 20 --warmup 5

``--dtype bf16`` runs forward and loss under ``torch.autocast`` (bfloat16);
weights, gradients and optimizer stay fp32. The output is markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import timm
import torch
import transformers
from machine import cpu_model  # benchmarks/machine.py, beside this script
from torch import nn

import mimsdk
from mimsdk import create_model
from mimsdk.hub.transformers_export import to_vitmae
from mimsdk.optim import param_groups

IMAGE_SIZE = 224
PATCH_SIZE = 16
MASK_RATIO = 0.75
DECODER = {"decoder_dim": 128, "decoder_depth": 4, "decoder_heads": 4}
ADAMW = {"lr": 1.5e-4, "betas": (0.9, 0.95)}
WEIGHT_DECAY = 0.05
MIB = 2**20


@dataclass
class Contender:
    """One model under test, its optimizer and what was measured of it."""

    name: str
    model: nn.Module
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    rates: list[float] = field(default_factory=list)  # images/s per round
    cpu_shares: list[float] = field(default_factory=list)  # process CPU time / (wall time x threads) per round
    peak_mib: float = 0.0  # peak allocated during its steps above the resident baseline
    state_mib: float = 0.0  # its own parameters and AdamW moments

    def step(
        self, x: torch.Tensor, noise: torch.Tensor, autocast: Callable[[], contextlib.AbstractContextManager]
    ) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = self.loss_fn(x, noise)
        loss.backward()
        self.optimizer.step()


@dataclass
class RoundStats:
    """Rounds thrown away, or kept for want of retries, because other processes took the CPU."""

    discarded: int = 0
    contended_kept: int = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sizes", default="tiny,small", help="comma-separated mimsdk sizes (tiny, small, base, ...)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per contender per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per contender before the first round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: torch.autocast")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument(
        "--full-encoding",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time mimsdk with mask_ratio=0.0 (every token encoded)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--decoder-fractions",
        default="",
        help="comma-separated shares of the masked tokens decoded (partial decoding), each timed as one more contender",
    )
    parser.add_argument(
        "--min-cpu-share",
        type=float,
        default=0.85,
        help="CPU only: redo a round in which a contender got less than this share of its threads' CPU time",
    )
    parser.add_argument("--max-discards", type=int, default=12, help="rounds redone at most, over all sizes")
    parser.add_argument("--retry-wait", type=float, default=10.0, help="seconds to wait before redoing a round")
    args = parser.parse_args(argv)
    args.sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch.cuda.is_available() is False")
    if min(args.batch, args.steps, args.rounds) < 1 or args.warmup < 0:
        parser.error("--batch, --steps and --rounds must be >= 1 and --warmup >= 0")
    return args


def machine_description(args: argparse.Namespace) -> list[str]:
    lines = []
    if args.device == "cuda":
        lines.append(f"- GPU: {torch.cuda.get_device_name()} (CUDA {torch.version.cuda})")
    lines.append(
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), torch.get_num_threads() = {torch.get_num_threads()}, "
        f"load average at the end {', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    lines.append(
        f"- Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"timm {timm.__version__}, mimsdk {getattr(mimsdk, '__version__', '?')}"
    )
    return lines


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def state_mib(model: nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """Parameters (and buffers) of ``model`` plus the optimizer's per-parameter tensors, in MiB."""
    total = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    for state in optimizer.state.values():
        total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total / MIB


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(param_groups(model, WEIGHT_DECAY, model_skip(model)), **ADAMW)


def model_skip(model: nn.Module) -> set[str]:
    no_wd = getattr(model, "no_weight_decay", None)
    if callable(no_wd):
        return set(no_wd())
    # transformers' ViTMAE: class and mask tokens (its position tables are frozen parameters).
    return {name for name, _ in model.named_parameters() if name.endswith(("cls_token", "mask_token"))}


def build(
    size: str,
    device: torch.device,
    full_encoding: bool,
    seed: int,
    fractions: tuple[float, ...] = (),
    **model: object,
) -> list[Contender]:
    """mimsdk (mask 0.75), transformers ViTMAE with the same weights, optionally mimsdk with mask 0.0,
    and mimsdk decoding only each of ``fractions`` of the masked tokens (partial decoding).

    ``model``: ``create_model`` keywords over this script's setup (``input_size``, ``decoder_dim``, ``depth``, ...).
    """
    common = {"size": size, "input_size": [IMAGE_SIZE, IMAGE_SIZE], "patch_size": PATCH_SIZE, "target": "norm_pix"}
    common = {**common, **DECODER, **model}
    torch.manual_seed(seed)
    mim = create_model(**common, mask_ratio=MASK_RATIO)
    hf = to_vitmae(mim)
    models: list[tuple[str, nn.Module, Callable]] = [
        ("mimsdk", mim, lambda x, noise: mim(x, noise=noise).loss),
        ("transformers", hf, lambda x, noise: hf(pixel_values=x, noise=noise).loss),
    ]
    if full_encoding:
        full = create_model(**common, mask_ratio=0.0)
        full.load_state_dict(mim.state_dict())
        models.append(("mimsdk, mask 0 (all tokens encoded)", full, lambda x, noise: full(x, noise=noise).loss))
    for fraction in fractions:
        part = create_model(**common, mask_ratio=MASK_RATIO, decoder_fraction=fraction)
        part.load_state_dict(mim.state_dict())
        models.append((f"mimsdk, {fraction:.0%} of masked decoded", part, partial(_partial_loss, part)))
    contenders = []
    for name, model, loss_fn in models:
        model.to(device).train()
        contenders.append(Contender(name, model, loss_fn, make_optimizer(model)))
    return contenders


def _partial_loss(model: nn.Module, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    # The decoded subset is fixed like the mask, so every round times the same work.
    decoder_noise = torch.rand(noise.shape, generator=torch.Generator().manual_seed(1)).to(noise.device)
    return model(x, noise=noise, decoder_noise=decoder_noise).loss


def check_losses(contenders: list[Contender], x: torch.Tensor, noise: torch.Tensor) -> str:
    """Both MAE implementations' fp32 loss on the shared batch: they should agree to float rounding."""
    with torch.no_grad():
        losses = [c.loss_fn(x, noise).item() for c in contenders[:2]]
    return f"loss check (fp32, same batch and mask): mimsdk {losses[0]:.6f}, transformers {losses[1]:.6f}"


def bench_size(size: str, args: argparse.Namespace, device: torch.device, stats: RoundStats) -> list[Contender]:
    fractions = tuple(float(f) for f in args.decoder_fractions.split(",") if f)
    contenders = build(size, device, args.full_encoding, args.seed, fractions)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen).to(device)
    num_tokens = (IMAGE_SIZE // PATCH_SIZE) ** 2
    noise = torch.rand(args.batch, num_tokens, generator=gen).to(device)
    print(f"<!-- {size}: {check_losses(contenders, x, noise)} -->", flush=True)
    time_rounds(size, contenders, x, noise, args, device, stats)
    return contenders


def autocast_for(dtype: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """What a step runs its forward and loss under: bf16 autocast, or nothing for fp32."""

    def autocast() -> contextlib.AbstractContextManager:
        if dtype == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    return autocast


def time_rounds(
    label: str,
    contenders: list[Contender],
    x: torch.Tensor,
    noise: torch.Tensor,
    args: argparse.Namespace,
    device: torch.device,
    stats: RoundStats,
) -> None:
    """``args.warmup`` untimed steps each, then ``args.rounds`` rounds of ``args.steps`` timed steps of every
    contender in turn (order reversed every other round), filling each one's ``rates``, ``cpu_shares``,
    ``peak_mib`` and ``state_mib``. Reads ``args.dtype``, ``warmup``, ``steps``, ``rounds``, ``min_cpu_share``,
    ``max_discards`` and ``retry_wait``."""
    autocast = autocast_for(args.dtype, device)
    batch = x.shape[0]
    for c in contenders:
        for _ in range(args.warmup):
            c.step(x, noise, autocast)
        c.optimizer.zero_grad(set_to_none=True)
        c.state_mib = state_mib(c.model, c.optimizer)
    sync(device)

    done = 0
    while done < args.rounds:
        order = contenders if done % 2 == 0 else contenders[::-1]
        measured: dict[str, tuple[float, float]] = {}  # name: (images/s, CPU share)
        for c in order:
            if device.type == "cuda":
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            sync(device)
            cpu_start = time.process_time()
            start = time.perf_counter()
            for _ in range(args.steps):
                c.step(x, noise, autocast)
            sync(device)
            seconds = time.perf_counter() - start
            share = (time.process_time() - cpu_start) / (seconds * torch.get_num_threads())
            c.optimizer.zero_grad(set_to_none=True)  # free its gradients before the next contender's baseline
            if device.type == "cuda":
                c.peak_mib = max(c.peak_mib, (torch.cuda.max_memory_allocated(device) - base) / MIB)
            measured[c.name] = (batch * args.steps / seconds, share)
        text = ", ".join(f"{name} {rate:.1f} (CPU share {share:.2f})" for name, (rate, share) in measured.items())
        contended = device.type == "cpu" and min(share for _, share in measured.values()) < args.min_cpu_share
        if contended and stats.discarded < args.max_discards:
            stats.discarded += 1
            print(f"<!-- {label} round discarded, other processes took the CPU: {text} -->", flush=True)
            time.sleep(args.retry_wait)
            continue
        stats.contended_kept += contended
        done += 1
        for c in contenders:
            rate, share = measured[c.name]
            c.rates.append(rate)
            c.cpu_shares.append(share)
        print(f"<!-- {label} round {done}/{args.rounds} images/s: {text} -->", flush=True)


def ratio_median(a: Contender, b: Contender) -> float:
    """Median over rounds of a's images/s over b's (same round, so same machine state)."""
    return statistics.median(ra / rb for ra, rb in zip(a.rates, b.rates))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    stats = RoundStats()
    results = {size: bench_size(size, args, device, stats) for size in args.sizes}

    cuda = device.type == "cuda"
    print(f"\nDate: {datetime.date.today().isoformat()}")
    print(*machine_description(args), sep="\n")
    print(
        f"- Setup: {IMAGE_SIZE}x{IMAGE_SIZE}, patch {PATCH_SIZE}, mask {MASK_RATIO}, decoder "
        f"{DECODER['decoder_dim']} wide x {DECODER['decoder_depth']} deep ({DECODER['decoder_heads']} heads), "
        f"batch {args.batch}, {args.dtype}, AdamW; {args.warmup} warm-up steps, then {args.rounds} rounds of "
        f"{args.steps} steps per implementation, alternating"
    )
    first = next(iter(results.values()))
    fused = getattr(first[0].model.encoder.blocks[0].attn, "fused_attn", "?")
    attn = first[1].model.config._attn_implementation
    print(f"- Attention: mimsdk (timm Block) fused_attn={fused}; transformers attn_implementation={attn!r}")
    print()

    head = "| size | implementation | images/s (median) | best round | per round | mimsdk / transformers |"
    rule = "| --- | --- | ---: | ---: | --- | ---: |"
    if cuda:
        head += " peak step memory MiB | resident state MiB |"
        rule += " ---: | ---: |"
    else:
        head += " CPU share |"
        rule += " ---: |"
    print(head, rule, sep="\n")
    for size, (mim, hf, *_) in results.items():
        for c in (mim, hf):
            best = max(mim.rates) / max(hf.rates)
            ratio = f"{ratio_median(mim, hf):.2f} (best/best {best:.2f})" if c is mim else ""
            row = f"| {size} | {c.name} | {statistics.median(c.rates):.1f} | {max(c.rates):.1f} | "
            row += f"{', '.join(f'{r:.1f}' for r in c.rates)} | {ratio} |"
            if cuda:
                row += f" {c.peak_mib:.0f} | {c.state_mib:.0f} |"
            else:
                row += f" {statistics.median(c.cpu_shares):.2f} |"
            print(row)

    if args.full_encoding:
        print("\nVisible-only encoder (mask 0.75) against every token encoded (mask 0.0), mimsdk, same decoder:\n")
        head = "| size | mask 0.75 images/s | mask 0.0 images/s | speed-up (median / best) |"
        print(head + (" peak step MiB 0.75 / 0.0 |" if cuda else ""))
        print("| --- | ---: | ---: | ---: |" + (" ---: |" if cuda else ""))
        for size, (mim, _, full, *_) in results.items():
            row = f"| {size} | {statistics.median(mim.rates):.1f} | {statistics.median(full.rates):.1f} | "
            row += f"{ratio_median(mim, full):.2f}x / {max(mim.rates) / max(full.rates):.2f}x |"
            if cuda:
                row += f" {mim.peak_mib:.0f} / {full.peak_mib:.0f} |"
            print(row)
    partial_rows = [(size, cs[0], cs[1], c) for size, cs in results.items() for c in cs if "decoded" in c.name]
    if partial_rows:
        print("\nPartial decoding: the decoder predicts only a share of the masked tokens (same weights, mask 0.75):\n")
        print("| size | contender | images/s (median) | vs mimsdk decoding all (median / best) | vs transformers |")
        print("| --- | --- | ---: | ---: | ---: |")
        for size, mim, hf, c in partial_rows:
            row = f"| {size} | {c.name} | {statistics.median(c.rates):.1f} | "
            row += f"{ratio_median(c, mim):.2f}x / {max(c.rates) / max(mim.rates):.2f}x | {ratio_median(c, hf):.2f}x |"
            print(row)
    if not cuda:
        print(
            f"\nRounds redone because other processes took the CPU: {stats.discarded}; contended rounds kept "
            f"(retries exhausted): {stats.contended_kept}."
        )
        print(
            "\nCPU share: the process's CPU time over wall time x threads while timing (median over rounds); well "
            "under 1 means other processes took cores and the figures are not to be trusted."
        )
    if cuda:
        print(
            "\nPeak step memory: torch.cuda.max_memory_allocated during the implementation's timed steps minus what "
            "was allocated before them (all models' weights and AdamW moments); resident state: its own weights "
            "and AdamW moments."
        )


if __name__ == "__main__":
    main()
