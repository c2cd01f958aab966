"""Model cards: README.md with the Hub's YAML metadata, the recipe, the data, the training curve and pictures.

Built with ``huggingface_hub``'s ``ModelCard`` and ``ModelCardData`` (no template engine needed).
The card is made from the model's config and metadata and, when a run directory is given, its
``recipe.yaml``, ``metrics.csv`` and ``recon/latest.png``. Local paths in the recipe are cut to
their last component; nothing else from the machine (and never a token) goes in.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from typing import Any

import yaml

from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import is_encoder_only

CARD_NAME = "README.md"
CURVE_NAME = "training_curve.png"
RECON_NAME = "reconstruction.png"
PIPELINE_TAGS = {"images": "image-feature-extraction"}
TARGETS = {"norm_pix": "per-patch normalised pixels (norm_pix)", "pixels": "raw pixels"}


def _blocks(n: int) -> str:
    return f"{n} block" + ("" if n == 1 else "s")


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    """Rows of a run's metrics.csv as numbers (empty cells left out)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                try:
                    row[key] = float(value)
                except (TypeError, ValueError):
                    continue
            if "step" in row:
                rows.append(row)
    return rows


def _read_recipe(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None or not (run_dir / "recipe.yaml").is_file():
        return None
    try:
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    except yaml.YAMLError:
        return None
    if not isinstance(recipe, dict):
        return None
    data = recipe.get("data")
    if isinstance(data, dict):  # local paths say nothing to a reader and may say too much
        for key in ("path", "eval_path", "labels"):
            if data.get(key):
                data[key] = Path(str(data[key])).name
    return recipe


def plot_curve(history: list[dict[str, float]], path: Path) -> bool:
    """Loss (and held-out loss) against step as a small PNG; False if matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(6, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [r["step"] for r in history if "loss" in r]
    ax.plot(steps, [r["loss"] for r in history if "loss" in r], label="training loss")
    held = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
    if held:
        ax.plot(*zip(*held), "o-", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("masked-patch loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    return True


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _curve_table(history: list[dict[str, float]], at_most: int = 12) -> str:
    picked = (
        history
        if len(history) <= at_most
        else [history[round(i * (len(history) - 1) / (at_most - 1))] for i in range(at_most)]
    )
    return _table(["step", "loss"], [[f"{r['step']:.0f}", f"{r['loss']:.4f}"] for r in picked if "loss" in r])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _card_data(model: MaskedAutoencoder, encoder_only: bool, license: str | None, datasets: list[str] | None):
    from huggingface_hub import ModelCardData

    cfg = model.config
    base = model._hub_mixin_info.model_card_data  # library_name, tags and license declared on the class
    tags = list(base.tags or [])
    tags += [cfg.modality, f"{len(cfg.input_size)}d"] + (["encoder-only"] if encoder_only else [])
    base_model = cfg.metadata.get("base_model")
    return ModelCardData(
        library_name=base.library_name,
        license=license or base.license,
        tags=list(dict.fromkeys(tags)),
        datasets=list(datasets) if datasets else None,
        pipeline_tag=PIPELINE_TAGS.get(cfg.modality) if len(cfg.input_size) == 2 else None,
        base_model=base_model if isinstance(base_model, str) else None,
    )


def model_card(
    model: MaskedAutoencoder,
    *,
    encoder_only: bool = False,
    run_dir: str | Path | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    history: list[dict[str, float]] | None = None,
    curve: str | None = None,
    reconstruction: str | None = None,
):
    """The card as a ``huggingface_hub.ModelCard``. ``curve`` / ``reconstruction`` name pictures beside it."""
    from huggingface_hub import ModelCard

    cfg = model.config
    encoder_only = encoder_only or is_encoder_only(model)
    run_dir = Path(run_dir) if run_dir is not None else None
    if history is None and run_dir is not None:
        history = read_history(run_dir)
    history = history or []
    recipe = _read_recipe(run_dir)
    dim, depth, heads = cfg.width
    name = repo_id.split("/")[-1] if repo_id else (recipe or {}).get("name", "mimsdk model")
    where = repo_id or "path/to/this/folder"
    size = "×".join(map(str, cfg.input_size))
    patch = "×".join(map(str, cfg.patch_size))
    meta = cfg.metadata
    params = sum(p.numel() for p in model.parameters())

    parts = [f"# {name}", ""]
    parts.append(
        f"A masked autoencoder (MAE) for **{cfg.modality}** ({len(cfg.input_size)}D), pre-trained with "
        f"mimsdk: a ViT-{cfg.size} encoder ({_blocks(depth)}, width {dim}, "
        f"{heads} heads) over {cfg.in_chans}×{size} inputs cut into {patch} patches"
        + (
            "."
            if encoder_only
            else f", and a {cfg.decoder_depth}-block decoder (width {cfg.decoder_dim}) that "
            f"predicts the {TARGETS.get(cfg.target, cfg.target)} of the {cfg.mask_ratio:.0%} of patches masked "
            "at random."
        )
    )
    parts.append("")
    if encoder_only:
        parts.append(
            "**Encoder only**: this repository holds the patch embedding, positions and encoder (config.json has "
            "`encoder_only: true`). `encode()` and `features()` work; `forward()` raises, as there is no decoder."
        )
    else:
        parts.append(
            "This is a **full checkpoint**: encoder and decoder weights, with the masking, target and "
            "normalisation settings in `config.json`, so pre-training can continue from it "
            f"(`mimsdk pretrain RECIPE --init {where}`)."
        )
    shape = "×".join(map(str, [cfg.in_chans, *cfg.input_size]))
    parts += [
        "",
        "## Use it",
        "",
        "```python",
        "from mimsdk import MaskedAutoencoder",
        f'model = MaskedAutoencoder.from_pretrained("{where}")',
        f"features = model.features(x)  # x: B×{shape}, normalised with the mean and std below; B×{dim} out",
        "```",
        "",
        "Only `config.json` and `model.safetensors` are read (safetensors: nothing is unpickled). "
        f"`mimsdk pull {where} DIR` copies the repository; `mimsdk export timm DIR OUT` and "
        "`mimsdk export transformers DIR OUT` (2D images) write the weights for timm's `VisionTransformer` and "
        "transformers' `ViTMAEForPreTraining`.",
        "",
        "## Model",
        "",
    ]
    rows = [
        ["encoder", f"ViT-{cfg.size}: width {dim}, {_blocks(depth)}, {heads} heads, MLP ×{cfg.mlp_ratio:g}"],
        ["input", f"{cfg.in_chans} channels × {size}, patches {patch} ({model.num_tokens} tokens)"],
        ["positions", cfg.pos_embed],
        ["masking", f"{cfg.masker}, ratio {cfg.mask_ratio:g}"],
        ["target", cfg.target],
        [
            "decoder",
            "absent (encoder only)"
            if encoder_only
            else f"width {cfg.decoder_dim}, {_blocks(cfg.decoder_depth)}, {cfg.decoder_heads} heads",
        ],
        ["parameters", f"{params / 1e6:.2f} M"],
    ]
    parts += [_table(["", ""], rows), ""]

    parts += ["## Data", ""]
    data = (recipe or {}).get("data") or {}
    facts = [f"- modality: {cfg.modality}"]
    if datasets:
        facts.append(f"- data sets: {', '.join(datasets)}")
    if data.get("path"):
        facts.append(
            f"- training data: `{data['path']}`"
            + (f", held out: `{data['eval_path']}`" if data.get("eval_path") else "")
        )
    for key, value in meta.items():
        if key != "base_model":
            facts.append(f"- {key.replace('_', ' ')}: {_fmt(value)}")
    if isinstance(meta.get("base_model"), str):
        facts.append(f"- continued from: `{meta['base_model']}`")
    train = (recipe or {}).get("train") or {}
    if history:
        batch = data.get("batch_size")
        accum = train.get("accum_steps", 1)
        seen = f" (batch {batch} per process × {accum} accumulation)" if batch else ""
        facts.append(f"- optimiser steps: {history[-1]['step']:.0f}{seen}")
    parts += facts + [""]

    if recipe is not None:
        parts += [
            "## Recipe",
            "",
            f"`{recipe.get('name', 'custom')}` as run (local paths shortened to their last component):",
            "",
            "```yaml",
            yaml.safe_dump(recipe, sort_keys=False).strip(),
            "```",
            "",
        ]

    if history:
        last = history[-1]
        parts += ["## Training", ""]
        parts.append(f"Final masked-patch loss {last.get('loss', math.nan):.4f} after {last['step']:.0f} steps.")
        parts.append("")
        parts.append(f"![training curve]({curve})" if curve else _curve_table(history))
        parts.append("")
        measured = [r for r in history if "knn_acc" in r or "eval_loss" in r]
        if measured:
            parts += ["## Evaluation", ""]
            parts.append(
                "Measured during training on held-out data: masked-patch loss and kNN accuracy (k=20, cosine) "
                "of frozen mean-pooled features."
            )
            parts.append("")
            parts.append(
                _table(
                    ["step", "held-out loss", "kNN accuracy"],
                    [
                        [f"{r['step']:.0f}", _fmt(r.get("eval_loss", "–")), _fmt(r.get("knn_acc", "–"))]
                        for r in measured
                    ],
                )
            )
            parts.append("")

    if reconstruction:
        parts += [
            "## Reconstructions",
            "",
            "Original | masked | reconstruction, on held-out samples at the end of training:",
            "",
            f"![reconstructions]({reconstruction})",
            "",
        ]

    parts += [
        "## Files",
        "",
        "- `config.json`: format version, the whole model configuration and the adapter's metadata",
        "- `model.safetensors`: " + ("encoder weights" if encoder_only else "encoder and decoder weights"),
        "",
    ]
    data_yaml = _card_data(model, encoder_only, license, datasets).to_yaml()
    return ModelCard(f"---\n{data_yaml}\n---\n\n" + "\n".join(parts))


def write_card(
    model: MaskedAutoencoder,
    directory: Path,
    *,
    encoder_only: bool = False,
    run_dir: str | Path | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    history: list[dict[str, float]] | None = None,
) -> Path:
    """Write README.md (and training_curve.png, reconstruction.png when there is something to show)."""
    run_dir = Path(run_dir) if run_dir is not None else None
    if history is None and run_dir is not None:
        history = read_history(run_dir)
    curve = CURVE_NAME if history and plot_curve(history, directory / CURVE_NAME) else None
    recon = None
    if run_dir is not None and (run_dir / "recon" / "latest.png").is_file():
        shutil.copyfile(run_dir / "recon" / "latest.png", directory / RECON_NAME)
        recon = RECON_NAME
    card = model_card(
        model,
        encoder_only=encoder_only,
        run_dir=run_dir,
        repo_id=repo_id,
        license=license,
        datasets=datasets,
        history=history,
        curve=curve,
        reconstruction=recon,
    )
    path = directory / CARD_NAME
    card.save(path)
    return path
