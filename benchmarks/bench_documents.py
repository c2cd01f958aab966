"""Document pages: how fast pages are read, and how fast a documents-tiny-like model trains.

What it measures
    Reading: every PDF page under ``--data`` rendered by pypdfium2 at ``--dpi`` (150 by default), gray
    and RGB, and every page image decoded by Pillow, in 1 and 2 worker processes (pdfium is not
    thread-safe, so a DataLoader reads pages in processes too). Each worker reads the whole list of
    pages ``--repeats`` times; pages/s is the total over the wall time, median of ``--rounds`` rounds.
    A third row reads pages the way a training epoch does after the first: the adapter's training
    view (random 64x64 crop) from its in-memory page cache.

    Training: the ``documents-tiny`` recipe's model (64x64 gray, patch 8, 3 blocks, blockwise masking
    40 %) or ``--recipe documents`` (ViT-B/16, 224x224), trained on one fixed batch of real page crops
    with AdamW; after ``--warmup`` steps, ``--steps`` steps are timed, median of ``--rounds`` rounds.
    ``--precision bf16`` runs forward and loss under ``torch.autocast``; on CUDA the device is
    synchronised around each timed block.

How to run (from the repository root)
    python benchmarks/bench_documents.py                                    # CPU, 2 threads
    python benchmarks/bench_documents.py --device cuda --precision bf16 --recipe documents --batch 64

The output is markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import multiprocessing
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from mimsdk import create_model, load_recipe
from mimsdk.adapters.documents import DocumentOptions, read_page, scan_documents
from mimsdk.data import SeededDataset
from mimsdk.optim import param_groups

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "documents"


def _read_all(args: tuple[list, str, int]) -> int:
    pages, color, repeats = args
    torch.set_num_threads(1)
    for _ in range(repeats):
        for page in pages:
            read_page(page, color)
    return len(pages) * repeats


def pages_per_second(pages: list, color: str, workers: int, repeats: int, rounds: int) -> float:
    """Pages read per second by ``workers`` processes, each reading every page ``repeats`` times."""
    ctx = multiprocessing.get_context("fork")
    rates = []
    with ctx.Pool(workers) as pool:
        pool.map(_read_all, [(pages[:1], color, 1)] * workers)  # start-up and imports out of the timing
        for _ in range(rounds):
            started = time.perf_counter()
            done = sum(pool.map(_read_all, [(pages, color, repeats)] * workers))
            rates.append(done / (time.perf_counter() - started))
    return statistics.median(rates)


def cached_items_per_second(data_path: Path, recipe, repeats: int, rounds: int) -> float:
    from mimsdk.adapter import get_adapter

    ds = get_adapter("documents").dataset(data_path, recipe.data, recipe.model, train=True)
    for i in range(len(ds)):
        ds[i]  # fill the cache
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            for i in range(len(ds)):
                ds[i]
        rates.append(repeats * len(ds) / (time.perf_counter() - started))
    return statistics.median(rates)


def train_steps_per_second(args: argparse.Namespace) -> tuple[float, str]:
    recipe = load_recipe(args.recipe, {"data": {"path": str(args.data)}})
    from mimsdk.adapter import get_adapter

    view = SeededDataset(get_adapter("documents").dataset(args.data, recipe.data, recipe.model, train=True), 0)
    x = torch.stack([view[(0, i % len(view))][0] for i in range(args.batch)])
    x = torch.nan_to_num(x)  # fit pad: fixed pixels, so every step costs the same
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(recipe.model).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, 0.05, model.no_weight_decay()), lr=1e-4, betas=(0.9, 0.95))
    x = x.to(device)
    gen = torch.Generator().manual_seed(0)
    noise = model.masker.noise(args.batch, model.num_tokens, gen).to(device)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()
    )

    def step() -> None:
        with autocast:
            loss = model(x, noise=noise).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    rates = []
    for _ in range(args.rounds):
        sync()
        started = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        rates.append(args.steps / (time.perf_counter() - started))
    dim, depth, _ = recipe.model.width
    what = (
        f"`{args.recipe}` model ({dim} wide, {depth} blocks, {recipe.model.input_size[0]}² × {recipe.model.in_chans}, "
        f"patch {recipe.model.patch_size[0]}, {recipe.model.masker} {recipe.model.mask_ratio:.0%}), batch {args.batch}"
    )
    return statistics.median(rates), what


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--dpi", type=float, default=150.0)
    p.add_argument("--repeats", type=int, default=3, help="reads of every page per worker per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--recipe", default="documents-tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--skip-reading", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    print(f"# Documents benchmark, {datetime.date.today()}")
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, ")
    print(f"device {args.device}, precision {args.precision}, {args.threads} threads; data {args.data}\n")
    if not args.skip_reading:
        pages = scan_documents(args.data, DocumentOptions(dpi=args.dpi))[0]
        pdf_pages = [pg for pg in pages if pg.is_pdf]
        image_pages = [pg for pg in pages if not pg.is_pdf]
        print(f"| reading ({len(pdf_pages)} PDF pages at {args.dpi:g} DPI, {len(image_pages)} page images) "
              "| 1 process | 2 processes |")  # fmt: skip
        print("|---|---|---|")
        for label, chosen, color in (
            ("pypdfium2 render, gray", pdf_pages, "gray"),
            ("pypdfium2 render, RGB", pdf_pages, "rgb"),
            ("Pillow decode (PNG/JPEG scans), gray", image_pages, "gray"),
        ):
            if not chosen:
                continue
            rates = [pages_per_second(chosen, color, w, args.repeats, args.rounds) for w in (1, 2)]
            print(f"| {label} | {rates[0]:.1f} pages/s | {rates[1]:.1f} pages/s |")
        tiny = load_recipe("documents-tiny")
        cached = cached_items_per_second(args.data, tiny, args.repeats, args.rounds)
        print(f"| training view from the page cache (64² crop), 1 process | {cached:.0f} items/s | |")
    rate, what = train_steps_per_second(args)
    print(f"\n| training | steps/s | pages/s |\n|---|---|---|\n| {what} | {rate:.2f} | {rate * args.batch:.1f} |")


if __name__ == "__main__":
    main()
