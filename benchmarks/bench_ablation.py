"""Masking and target ablation: the same pre-training budget for each masker and target, then probes.

What it measures
    For each configuration (a ``model.masker`` with the ``norm_pix`` target, or a
    ``model.target`` with random masking; ``random`` is MAE's own: random masking,
    ``norm_pix``) and each seed, one ViT-Tiny-width encoder (the quickstart model:
    6 blocks, 32×32 input, 4×4 patches: 64 tokens,
    a 128-wide 2-block decoder, mask 0.75) is pre-trained for ``--steps`` optimiser
    steps on the CIFAR-10 sample's 500 training images (HOG then uses one 4-pixel
    cell per patch), then scored on the sample's 200 test images
    by a linear probe on frozen mean-pooled features and by end-to-end fine-tuning
    (``mimsdk.cli.probe_model``: the library's own probes, with their defaults).
    A randomly initialised encoder is scored the same way as the floor.

    Every configuration sees the same images, the same seeds, the same step
    budget and the same optimiser; only what is masked, or what is predicted,
    changes. The table gives the mean and the sample standard deviation over
    seeds, and each seed's value, so a difference can be set against the spread.

How to run (repository root)
    python benchmarks/bench_ablation.py --device cpu --steps 200 --seeds 0,1,2 --finetune-epochs 10
    python benchmarks/bench_ablation.py --configs random,block --seeds 0   # a subset

Each finished run is printed at once as an HTML comment and appended as a JSON
line to ``--log``; ``--table LOG`` prints the markdown table from such a log.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mimsdk import create_model, pretrain
from mimsdk.cli import probe_model

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "cifar10"

CONFIGS = {
    # name: model fields that differ from the common recipe below
    "random": {},
    "block": {"masker": "block"},
    "colored (red)": {"masker": "colored", "masker_options": {"color": "red"}},
    "hpm": {"masker": "hpm"},
    "pixels": {"target": "pixels"},
    "hog": {"target": "hog"},
    "ema latent": {"target": "ema_latent"},
    "pixels l1": {"target": "pixels_l1"},
}

MODEL = {
    "size": "tiny",
    "depth": 6,
    "input_size": [32, 32],
    "patch_size": 4,
    "decoder_dim": 128,
    "decoder_depth": 2,
    "decoder_heads": 4,
    "mask_ratio": 0.75,
    "target": "norm_pix",
}


def recipe(name: str, steps: int, batch: int, seed: int, device: str) -> dict:
    return {
        "name": f"ablation-{name}",
        "model": {**MODEL, **CONFIGS[name]},
        "data": {"modality": "images", "batch_size": batch, "num_workers": 2, "crop_scale": [0.2, 1.0]},
        "train": {
            "max_steps": steps,
            "warmup_steps": steps // 10,
            "lr": 1.0e-3,
            "weight_decay": 0.05,
            "seed": seed,
            "device": device,
            "precision": "fp32",
            "log_every": 50,
            "ckpt_every": 0,
            "recon_every": 0,
        },
    }


def run(name: str, seed: int, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    if name == "random init":
        torch.manual_seed(seed)
        model = create_model(**MODEL).to(args.device)
    else:
        with tempfile.TemporaryDirectory() as out:
            model = pretrain(recipe(name, args.steps, args.batch, seed, args.device), data=args.train, out=out).model
    pretrain_s = time.perf_counter() - started
    scores = probe_model(model, args.train, args.test, None, ["linear", "finetune"], args.finetune_epochs, seed)
    return {
        "config": name, "seed": seed, "steps": 0 if name == "random init" else args.steps,
        **scores, "pretrain_s": pretrain_s, "total_s": time.perf_counter() - started,
    }  # fmt: skip


def welch_t(a: list[float], b: list[float]) -> float:
    """Welch's t for mean(a) − mean(b): how many standard errors apart the two seed samples are."""
    se = (statistics.variance(a) / len(a) + statistics.variance(b) / len(b)) ** 0.5
    return (statistics.mean(a) - statistics.mean(b)) / se if se > 0 else float("nan")


def table(rows: list[dict], reference: str = "random") -> str:
    """Markdown: mean ± sample sd over seeds, each seed, and the difference from ``reference`` with Welch's t."""

    def scores(name: str, key: str) -> list[float]:
        return [100 * r[key] for r in sorted((r for r in rows if r["config"] == name), key=lambda r: r["seed"])]

    lines = [
        f"| configuration | linear % mean ± sd | per seed | Δ vs {reference} (t) "
        f"| fine-tune % mean ± sd | per seed | Δ vs {reference} (t) | pre-train s |",
        "| --- | ---: | --- | ---: | ---: | --- | ---: | ---: |",
    ]
    for name in ["random init", *CONFIGS]:
        if not scores(name, "linear"):
            continue
        cells = []
        for key in ("linear", "finetune"):
            values, base = scores(name, key), scores(reference, key)
            sd = statistics.stdev(values) if len(values) > 1 else float("nan")
            delta = (
                ""
                if name == reference or len(base) < 2 or len(values) < 2
                else (f"{statistics.mean(values) - statistics.mean(base):+.1f} ({welch_t(values, base):+.1f})")
            )
            cells += [f"{statistics.mean(values):.1f} ± {sd:.1f}", ", ".join(f"{v:.1f}" for v in values), delta]
        seconds = statistics.mean(r["pretrain_s"] for r in rows if r["config"] == name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {seconds:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(["random init", *CONFIGS]))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train", default=str(CIFAR / "train"))
    parser.add_argument("--test", default=str(CIFAR / "test"))
    parser.add_argument("--log", default="ablation.jsonl")
    parser.add_argument("--table", help="print the table from this JSON-lines log and stop")
    args = parser.parse_args(argv)
    if args.table:
        logged = [json.loads(line) for line in Path(args.table).read_text().splitlines() if line.strip()]
        latest = {(r["config"], r["seed"]): r for r in logged}  # a re-run replaces its earlier line
        print(table(list(latest.values())))
        return
    names = args.configs.split(",")
    for name in names:
        if name != "random init" and name not in CONFIGS:
            raise SystemExit(f"unknown configuration {name!r}; expected one of random init, {', '.join(CONFIGS)}")
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):  # seed-major: a cut-short run still covers every config
        for name in names:
            row = run(name, seed, args)
            rows.append(row)
            print(f"<!-- {json.dumps(row)} -->", flush=True)
            with open(args.log, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
