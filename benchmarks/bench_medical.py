"""Medical adapter benchmarks: the loading pipeline with and without MONAI's caches, and the 3D MAE's training step
against MONAI's ``MaskedAutoEncoderViT`` in the same configuration.

What it measures
    (a) Loading. The shared NIfTI volumes (``../shared/data/medical3d/nifti``: four brain MR and head CT
        volumes, 54-189 voxels a side) go through the medical adapter's training view: NIfTI decoding, RAS,
        resampling to ``--spacing``, percentile scaling, then a random ``--crop``³ crop and flip. Three caches:
        ``none`` (MONAI ``Dataset``: every item decodes and resamples again), ``memory`` (``CacheDataset``) and
        ``disk`` (``PersistentDataset``, in a temporary folder). For each, the first pass (building the
        dataset, which checks every file, and for the caches fills them) is timed once, then volumes/s over
        ``--epochs`` epochs; the caches are timed round-robin, the order reversed every other epoch, and the
        median epoch rate is reported.
    (b) Training step. mimsdk's ``create_model`` and MONAI's ``MaskedAutoEncoderViT`` built with the same
        input (``--input``³, one channel), patch (``--patch``³), width, depth, heads and MLP ratio 4, the same
        decoder (width, depth, heads, MLP ratio 4) and mask ratio 0.75. A step is forward, MSE on the masked
        patches, backward and AdamW (lr 1.5e-4, betas (0.9, 0.95)), on one fixed random batch. MONAI's model
        returns predictions and a mask only, so its loss is computed here on its masked tokens against the
        patchified input (MONAI draws its own mask each step, on the CPU, as it does in use). After
        ``--warmup`` untimed steps each, ``--rounds`` rounds time ``--steps`` steps of each in turn (order
        reversed every other round; CUDA synchronised around each block); reported: median steps/s and the
        median per-round ratio mimsdk / MONAI.

How to run (repository root; mimsdk[medical] installed)
    python benchmarks/bench_medical.py                                  # CPU, small 3D model, a few minutes
    python benchmarks/bench_medical.py --device cuda --precision bf16 --input 96 --patch 16 --width 768 \\
        --depth 12 --heads 12 --decoder-width 384 --decoder-depth 8 --decoder-heads 12 --batch 8 --steps 20

MONAI's 3D sin-cos positions need widths divisible by 6 (so a 384-wide decoder rather than MAE's 512).
``--precision bf16`` runs forward and loss under ``torch.autocast`` (weights and optimiser in fp32). Output is
markdown.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import monai
import torch
import torch.nn.functional as F
from monai.networks.nets import MaskedAutoEncoderViT

import mimsdk
from mimsdk import DataConfig, ModelConfig, create_model
from mimsdk.adapters.medical import MedicalAdapter

NIFTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "medical3d" / "nifti"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--skip", choices=["loading", "training"], help="run only the other part")
    p.add_argument("--data", default=str(NIFTI), help="folder of NIfTI volumes for (a)")
    p.add_argument("--spacing", type=float, default=1.5, help="(a) isotropic target spacing, mm")
    p.add_argument("--crop", type=int, default=64, help="(a) crop size per side")
    p.add_argument("--epochs", type=int, default=3, help="(a) timed epochs per cache")
    p.add_argument("--input", type=int, default=64, help="(b) input size per side")
    p.add_argument("--patch", type=int, default=16)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--decoder-width", type=int, default=96)
    p.add_argument("--decoder-depth", type=int, default=2)
    p.add_argument("--decoder-heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3, help="(b) timed steps per model per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch.cuda.is_available() is False")
    if args.width % 6 or args.decoder_width % 6:
        p.error("--width and --decoder-width must be divisible by 6: MONAI's 3D sin-cos positions need it")
    return args


def bench_loading(args: argparse.Namespace) -> None:
    model = ModelConfig(size="tiny", input_size=[args.crop] * 3, patch_size=16, in_chans=1)
    base = {"kind": "mri", "spacing": [args.spacing] * 3, "pad": True}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sets = {}
        for cache in ("none", "memory", "disk"):
            data = DataConfig(options={**base, "cache": cache, "cache_dir": tmp}, num_workers=1)
            start = time.perf_counter()
            sets[cache] = MedicalAdapter().dataset(args.data, data, model, train=True)
            rows[cache] = {"first": time.perf_counter() - start, "rates": []}
        for epoch in range(args.epochs):
            order = list(sets) if epoch % 2 == 0 else list(sets)[::-1]
            for cache in order:
                ds = sets[cache]
                start = time.perf_counter()
                for i in range(len(ds)):
                    ds[i]
                rows[cache]["rates"].append(len(ds) / (time.perf_counter() - start))
    n = len(sets["none"])
    names = {"none": "Dataset (no cache)", "memory": "CacheDataset (memory)", "disk": "PersistentDataset (disk)"}
    none_rate = statistics.median(rows["none"]["rates"])
    print(f"\n### (a) Loading: {n} NIfTI volumes, RAS + {args.spacing} mm + percentiles + {args.crop}³ crop\n")
    print("| pipeline | first pass (check + fill), s | volumes/s after | vs no cache |\n|---|---|---|---|")
    for cache, row in rows.items():
        rate = statistics.median(row["rates"])
        print(f"| {names[cache]} | {row['first']:.2f} | {rate:.1f} | {rate / none_rate:.1f}x |")


def mimsdk_step(model: torch.nn.Module):
    def loss(x: torch.Tensor) -> torch.Tensor:
        return model(x).loss

    return loss


def monai_step(model: MaskedAutoEncoderViT, patchify):
    def loss(x: torch.Tensor) -> torch.Tensor:
        pred, mask = model(x)
        per_token = F.mse_loss(pred.float(), patchify(x), reduction="none").mean(-1)
        return (per_token * mask).sum() / mask.sum()

    return loss


def bench_training(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = dict(
        size="tiny", input_size=[args.input] * 3, patch_size=args.patch, in_chans=1, embed_dim=args.width,
        depth=args.depth, num_heads=args.heads, decoder_dim=args.decoder_width, decoder_depth=args.decoder_depth,
        decoder_heads=args.decoder_heads, mask_ratio=0.75, target="pixels",
    )  # fmt: skip
    ours = create_model(**cfg).to(device)
    theirs = MaskedAutoEncoderViT(
        in_channels=1, img_size=args.input, patch_size=args.patch, hidden_size=args.width, mlp_dim=4 * args.width,
        num_layers=args.depth, num_heads=args.heads, masking_ratio=0.75, decoder_hidden_size=args.decoder_width,
        decoder_mlp_dim=4 * args.decoder_width, decoder_num_layers=args.decoder_depth,
        decoder_num_heads=args.decoder_heads, spatial_dims=3,
    ).to(device)  # fmt: skip
    contenders = {
        "mimsdk MaskedAutoencoder": (ours, mimsdk_step(ours)),
        "MONAI MaskedAutoEncoderViT": (theirs, monai_step(theirs, ours.tokenizer.patchify)),
    }
    optims = {k: torch.optim.AdamW(m.parameters(), lr=1.5e-4, betas=(0.9, 0.95)) for k, (m, _) in contenders.items()}
    x = torch.randn(args.batch, 1, *[args.input] * 3, device=device)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if args.precision == "bf16"
        else contextlib.nullcontext
    )

    def run(name: str, steps: int) -> float:
        model, loss_fn = contenders[name]
        model.train()
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            optims[name].zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(x)
            loss.backward()
            optims[name].step()
        sync()
        return steps / (time.perf_counter() - start)

    for name in contenders:
        run(name, args.warmup)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.rounds):
        order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
        for name in order:
            rates[name].append(run(name, args.steps))
    ratios = [a / b for a, b in zip(*rates.values())]
    tokens = (args.input // args.patch) ** 3
    print(
        f"\n### (b) Training step: {args.input}³ input, {args.patch}³ patches ({tokens} tokens), width {args.width}, "
        f"depth {args.depth}, heads {args.heads}, decoder {args.decoder_width}×{args.decoder_depth} "
        f"({args.decoder_heads} heads), mask 0.75, batch {args.batch}, {args.precision}\n"
    )
    print("| model | params (M) | steps/s (median) | volumes/s | per-round steps/s |\n|---|---|---|---|---|")
    for name, (model, _) in contenders.items():
        med = statistics.median(rates[name])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        each = ", ".join(f"{v:.2f}" for v in rates[name])
        print(f"| {name} | {params:.2f} | {med:.2f} | {med * args.batch:.1f} | {each} |")
    print(f"\nmimsdk / MONAI, median of per-round ratios: {statistics.median(ratios):.2f} "
          f"(rounds: {', '.join(f'{v:.2f}' for v in ratios)})")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(
        f"# bench_medical.py, {datetime.date.today()}: {args.device} ({device}), {args.threads} threads, "
        f"torch {torch.__version__}, MONAI {monai.__version__}, mimsdk {mimsdk.__version__}"
    )
    if args.skip != "loading":
        bench_loading(args)
    if args.skip != "training":
        bench_training(args)


if __name__ == "__main__":
    main()
