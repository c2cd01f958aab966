"""Model cards: README.md with the Hub's YAML metadata, what the model is, how to load it, how it was trained.

The facts are gathered once (:func:`card_facts`, a :class:`CardFacts`) from the model's config and,
when a run directory is given, its ``recipe.yaml``, ``metrics.csv`` and ``recon/latest.png``; each
section of the card is a small function of those facts returning markdown. The text names the
model's real parts (:mod:`mimsdk.hub.describe`): its tokenizer, masker and target by their recipe
names, and the encoder's width and depth as built (``ViT-Tiny`` only when the model has ViT-Tiny's
width, depth and heads). What a run directory holds is read by :mod:`mimsdk.hub.run_record`.

Local paths in the recipe are cut to their last component; nothing else from the machine (and never
a token) goes in. ``huggingface_hub``'s ``ModelCard`` writes the file.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mimsdk.config import ModelConfig
from mimsdk.hub.describe import (
    blocks,
    encoder_text,
    fmt,
    input_shape,
    masking_text,
    options_text,
    target_text,
    tokens_text,
)
from mimsdk.hub.run_record import plot_curve, read_history, read_recipe
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import is_encoder_only

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

CARD_NAME = "README.md"
CURVE_NAME = "training_curve.png"
RECON_NAME = "reconstruction.png"
LIBRARY_NAME = "mimsdk"
LICENSE = "apache-2.0"
TAGS = ["masked-autoencoder", "mimsdk"]
PIPELINE_TAGS = {"images": "image-feature-extraction"}


@dataclass(frozen=True)
class CardFacts:
    """Everything the card says, gathered once; the section functions only format these."""

    config: ModelConfig  # the model's own: tokenizer, masker, target and their options, by recipe name
    name: str  # the card's title
    where: str  # the repo id, or a placeholder, for the snippets
    num_tokens: int
    params: int
    encoder_only: bool
    license: str
    datasets: list[str] = field(default_factory=list)
    recipe: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    curve: str | None = None  # file names of pictures beside the card
    reconstruction: str | None = None

    @property
    def dims(self) -> int:
        return len(self.config.input_size)

    @property
    def decoder(self) -> str | None:
        """``width 512, 8 blocks, 16 heads``; None for an encoder-only checkpoint."""
        c = self.config
        if self.encoder_only:
            return None
        return f"width {c.decoder_dim}, {blocks(c.decoder_depth)}, {c.decoder_heads} heads"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# -- gathering the facts ----------------------------------------------------------------------------


def card_facts(
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
) -> CardFacts:
    """The card's facts: the model as built, plus the run directory's recipe and curve when given."""
    run_dir = Path(run_dir) if run_dir is not None else None
    if history is None and run_dir is not None:
        history = read_history(run_dir)
    recipe = read_recipe(run_dir)
    return CardFacts(
        config=model.config,
        name=repo_id.split("/")[-1] if repo_id else (recipe or {}).get("name", "mimsdk model"),
        where=repo_id or "path/to/this/folder",
        num_tokens=model.num_tokens,
        params=sum(p.numel() for p in model.parameters()),
        encoder_only=encoder_only or is_encoder_only(model),
        license=license or LICENSE,
        datasets=list(datasets or []),
        recipe=recipe,
        history=list(history or []),
        curve=curve,
        reconstruction=reconstruction,
    )


# -- sections ---------------------------------------------------------------------------------------


def summary_section(f: CardFacts) -> str:
    c = f.config
    sentence = (
        f"A masked autoencoder (MAE) for **{c.modality}** ({f.dims}D), pre-trained with mimsdk: a ViT encoder "
        f"({encoder_text(c)}) over {tokens_text(c, f.num_tokens)}"
    )
    if f.encoder_only:
        sentence += f". It was trained with {c.mask_ratio:.0%} of tokens {masking_text(c)}."
        kind = (
            "**Encoder only**: this repository holds the tokenizer, positions and encoder (config.json has "
            "`encoder_only: true`). `encode()` and `features()` work; `forward()` raises, as there is no decoder."
        )
    else:
        share = f"{c.decoder_fraction:.0%} of " if c.decoder_fraction < 1 else ""  # partial decoding
        sentence += (
            f", and a {c.decoder_depth}-block decoder (width {c.decoder_dim}) that predicts the {target_text(c)} "
            f"of {share}the {c.mask_ratio:.0%} of tokens {masking_text(c)}."
        )
        kind = (
            "This is a **full checkpoint**: encoder and decoder weights, with the masking, target and "
            "normalisation settings in `config.json`, so pre-training can continue from it "
            f"(`mimsdk pretrain RECIPE --init {f.where}`)."
        )
    return f"# {f.name}\n\n{sentence}\n\n{kind}"


def usage_section(f: CardFacts) -> str:
    normalised = ", normalised with the mean and std below" if "mean" in f.config.metadata else ""
    snippet = "\n".join([
        "```python",
        "from mimsdk import load_model",
        f'model = load_model("{f.where}")',
        f"features = model.features(x)  # x: {input_shape(f.config)}{normalised}; B×{f.config.width[0]} out",
        "```",
    ])  # fmt: skip
    tools = f"`mimsdk pull {f.where} DIR` copies the repository."
    if f.config.tokenizer == "patch" and f.dims == 2:  # the exports take 2D patch models only
        tools += f" `mimsdk export timm {f.where} OUT` writes the encoder for timm's `VisionTransformer`"
        if not f.encoder_only:
            tools += f", `mimsdk export transformers {f.where} OUT` the MAE for transformers' `ViTMAEForPreTraining`"
        tools += "."
    return (
        f"## Use it\n\n{snippet}\n\n`load_model` takes this repository's id, or a local copy of it. Only "
        f"`config.json` and `model.safetensors` are read (safetensors: nothing is unpickled). {tools}"
    )


def model_section(f: CardFacts) -> str:
    c = f.config
    rows = [
        ["encoder", f"{encoder_text(c)}, MLP ×{c.mlp_ratio:g}"],
        ["tokens", tokens_text(c, f.num_tokens)],
        ["positions", c.pos_embed if c.tokenizer != "point_groups" else "learned, from each group's centre"],
        ["masking", f"{c.masker}, ratio {c.mask_ratio:g}{options_text(c.masker_options)}"],
        ["target", f"{c.target}{options_text(c.target_options)}"],
        ["decoder", f.decoder or "absent (encoder only)"],
        ["parameters", f"{f.params / 1e6:.2f} M"],
    ]
    return "## Model\n\n" + _table(["", ""], rows)


def data_section(f: CardFacts) -> str:
    data = (f.recipe or {}).get("data") or {}
    meta = f.config.metadata
    facts = [f"- modality: {f.config.modality}"]
    if f.datasets:
        facts.append(f"- data sets: {', '.join(f.datasets)}")
    if data.get("path"):
        held = f", held out: `{data['eval_path']}`" if data.get("eval_path") else ""
        facts.append(f"- training data: `{data['path']}`{held}")
    facts += [f"- {key.replace('_', ' ')}: {fmt(value)}" for key, value in meta.items() if key != "base_model"]
    if isinstance(meta.get("base_model"), str):
        facts.append(f"- continued from: `{meta['base_model']}`")
    if f.history:
        batch = data.get("batch_size")
        accum = ((f.recipe or {}).get("train") or {}).get("accum_steps", 1)
        seen = f" (batch {batch} per process × {accum} accumulation)" if batch else ""
        facts.append(f"- optimiser steps: {f.history[-1]['step']:.0f}{seen}")
    return "## Data\n\n" + "\n".join(facts)


def recipe_section(f: CardFacts) -> str:
    if f.recipe is None:
        return ""
    return (
        f"## Recipe\n\n`{f.recipe.get('name', 'custom')}` as run (local paths shortened to their last component):"
        f"\n\n```yaml\n{yaml.safe_dump(f.recipe, sort_keys=False).strip()}\n```"
    )


def _curve_table(history: list[dict[str, float]], at_most: int = 12) -> str:
    picked = (
        history
        if len(history) <= at_most
        else [history[round(i * (len(history) - 1) / (at_most - 1))] for i in range(at_most)]
    )
    return _table(["step", "loss"], [[f"{r['step']:.0f}", f"{r['loss']:.4f}"] for r in picked if "loss" in r])


def training_section(f: CardFacts) -> str:
    """The final loss and the curve (a picture, or a table without matplotlib), then held-out results."""
    if not f.history:
        return ""
    last = f.history[-1]
    parts = [
        "## Training",
        f"Final masked-patch loss {last.get('loss', math.nan):.4f} after {last['step']:.0f} steps.",
        f"![training curve]({f.curve})" if f.curve else _curve_table(f.history),
    ]
    measured = [r for r in f.history if "knn_acc" in r or "eval_loss" in r]
    if measured:
        rows = [[f"{r['step']:.0f}", fmt(r.get("eval_loss", "–")), fmt(r.get("knn_acc", "–"))] for r in measured]
        parts += [
            "## Evaluation",
            "Measured during training on held-out data: masked-patch loss and kNN accuracy (k=20, cosine) "
            "of frozen mean-pooled features.",
            _table(["step", "held-out loss", "kNN accuracy"], rows),
        ]
    return "\n\n".join(parts)


def pictures_section(f: CardFacts) -> str:
    if not f.reconstruction:
        return ""
    return (
        "## Reconstructions\n\nOriginal | masked | reconstruction, on held-out samples at the end of training:"
        f"\n\n![reconstructions]({f.reconstruction})"
    )


def files_section(f: CardFacts) -> str:
    weights = "encoder weights" if f.encoder_only else "encoder and decoder weights"
    return (
        "## Files\n\n- `config.json`: format version, the whole model configuration and the adapter's metadata\n"
        f"- `model.safetensors`: {weights}"
    )


SECTIONS = [
    summary_section,
    usage_section,
    model_section,
    data_section,
    recipe_section,
    training_section,
    pictures_section,
    files_section,
]


def front_matter(f: CardFacts) -> str:
    """The Hub's YAML metadata: library, license, tags, data sets, pipeline, base model."""
    from huggingface_hub import ModelCardData

    modality = f.config.modality
    tags = [*TAGS, modality, f"{f.dims}d"] + (["encoder-only"] if f.encoder_only else [])
    base_model = f.config.metadata.get("base_model")
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=f.license,
        tags=list(dict.fromkeys(tags)),
        datasets=f.datasets or None,
        pipeline_tag=PIPELINE_TAGS.get(modality) if f.dims == 2 else None,
        base_model=base_model if isinstance(base_model, str) else None,
    )
    return f"---\n{data.to_yaml()}\n---"


def model_card(model: MaskedAutoencoder, **facts: Any) -> ModelCard:
    """The card as a ``huggingface_hub.ModelCard``; keywords as :func:`card_facts`."""
    from huggingface_hub import ModelCard

    f = card_facts(model, **facts)
    body = "\n\n".join(text for text in (section(f) for section in SECTIONS) if text)
    return ModelCard(f"{front_matter(f)}\n\n{body}\n")


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
