"""Multispectral throughput: windowed GeoTIFF reading (tiles/s) and group-channel training steps/s.

What it measures
    Reading: the script writes one large 10-band uint16 GeoTIFF twice with rasterio, once tiled
    (256×256 blocks, as a Cloud-Optimised GeoTIFF is) and once striped (one row per strip, GDAL's
    default), ``--scene`` pixels square, DEFLATE-compressed. A ``MultispectralDataset`` in training
    mode draws random ``--tile``-pixel windows from it (``rasterio.windows.Window``; the file is
    opened per tile and never read whole), normalises them and flips them; a DataLoader with 0, 1
    or 2 worker processes (``--workers``) batches them by 32. Tiles/s is the median of ``--rounds``
    rounds of ``--batches`` batches each, after one untimed batch.

    Training: one step is forward + backward + AdamW on a fixed random batch of the model's input
    (``--batch``), for the ``sentinel2-tiny`` recipe's model (32², 3 band groups, ~0.5 M parameters)
    and the ``sentinel2`` recipe's SatMAE-sized model (ViT-Large, 96², patch 8, 432 tokens), after
    ``--warmup`` untimed steps; steps/s is the median over ``--rounds`` rounds of ``--steps`` steps.
    ``--precision bf16`` runs forward and loss under autocast (weights and optimiser stay fp32).

How to run (repository root)
    python benchmarks/bench_multispectral.py                              # CPU, both parts
    python benchmarks/bench_multispectral.py --device cuda --precision bf16 --batch 64
The output is markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torch.utils.data import DataLoader

from mimsdk import create_model
from mimsdk.adapter import get_adapter
from mimsdk.config import DataConfig, load_recipe

BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]


def write_scene(path: Path, size: int, tiled: bool) -> Path:
    """A size×size 10-band uint16 GeoTIFF with band descriptions, written row block by row block."""
    profile = dict(driver="GTiff", width=size, height=size, count=10, dtype="uint16", crs="EPSG:32632",
                   transform=from_origin(500000, 5600000, 10, 10), compress="deflate")  # fmt: skip
    profile.update(dict(tiled=True, blockxsize=256, blockysize=256) if tiled else dict(tiled=False, blockysize=1))
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as ds:
        for i, name in enumerate(BANDS):
            ds.set_band_description(i + 1, name)
        for top in range(0, size, 512):
            rows = min(512, size - top)
            block = rng.integers(0, 4000, size=(10, rows, size), dtype=np.uint16)
            ds.write(block, window=rasterio.windows.Window(0, top, size, rows))
    return path


def reading(path: Path, tile: int, workers: int, batches: int, rounds: int) -> float:
    data = DataConfig(modality="multispectral", path=str(path), options={"bands": BANDS, "tiles_per_scene": 100000},
                      mean=[2000.0] * 10, std=[1000.0] * 10)  # fmt: skip
    model = load_recipe("sentinel2-tiny", {"model": {"input_size": [tile, tile]}}).model
    dataset = get_adapter("multispectral").dataset(path, data, model, train=True)
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    rates = []
    for _ in range(rounds):
        it = iter(loader)
        next(it)
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        rates.append(batches * 32 / (time.perf_counter() - start))
    return statistics.median(rates)


def training(recipe: str, device: str, precision: str, batch: int, steps: int, warmup: int, rounds: int) -> float:
    cfg = load_recipe(recipe).model
    torch.manual_seed(0)
    model = create_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    x = torch.randn(batch, cfg.in_chans, *cfg.input_size, device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    def step() -> None:
        with autocast:
            loss = model(x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(rounds):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--scene", type=int, default=4096, help="pixels per side of the written GeoTIFF")
    p.add_argument("--tile", type=int, default=96)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--batch", type=int, default=16, help="training batch")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--recipes", nargs="+", default=["sentinel2-tiny", "sentinel2"])
    p.add_argument("--skip-reading", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{datetime.date.today()} · {platform.processor() or platform.machine()} · {os.cpu_count()} CPUs · "
          f"torch {torch.__version__} · rasterio {rasterio.__version__} · {args.threads} threads\n")  # fmt: skip
    if not args.skip_reading:
        print(f"### Windowed reading: random {args.tile}² tiles of a {args.scene}² 10-band uint16 GeoTIFF (deflate)\n")
        print("| layout | workers | tiles/s |\n|---|---:|---:|")
        with tempfile.TemporaryDirectory() as tmp:
            for tiled in (True, False):
                path = write_scene(Path(tmp) / f"scene_{'tiled' if tiled else 'striped'}.tif", args.scene, tiled)
                for workers in args.workers:
                    rate = reading(path, args.tile, workers, args.batches, args.rounds)
                    layout = "tiled 256² (COG-like)" if tiled else "striped (1 row/strip)"
                    print(f"| {layout} | {workers} | {rate:.0f} |", flush=True)
        print()
    print(f"### Training steps/s ({args.device}, {args.precision}, batch {args.batch})\n")
    print("| recipe | model | tokens | parameters | steps/s | samples/s |\n|---|---|---:|---:|---:|---:|")
    for recipe in args.recipes:
        cfg = load_recipe(recipe).model
        model = create_model(cfg)
        params, tokens = sum(p.numel() for p in model.parameters()) / 1e6, model.num_tokens
        dim, depth, _ = cfg.width
        del model
        rate = training(recipe, args.device, args.precision, args.batch, args.steps, args.warmup, args.rounds)
        print(f"| {recipe} | ViT {dim}×{depth}, {cfg.input_size[-1]}², patch {cfg.patch_size[-1]} | "
              f"{tokens} | {params:.1f} M | {rate:.2f} | {rate * args.batch:.1f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
