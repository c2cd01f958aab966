"""The README.md written beside every export: what the folder holds, how to load it, and the data facts.

A wrong band order or a lost spacing fails silently in the library that loads the weights, so each export
says, in one table, how its inputs must be prepared: channels (or bands) in order, normalisation, spacing
and orientation, intensity scaling, frames and tubelet. The facts come from the model's metadata, the
same that ``load_model`` reads back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mimsdk.hub.card import CARD_NAME
from mimsdk.hub.describe import encoder_text, fmt, input_shape
from mimsdk.model import MaskedAutoencoder

# metadata key -> what the card calls it, in the order the table lists them
DATA_FACTS = {
    "channel_names": "channels, in order",
    "bands": "bands, in order",
    "wavelengths": "wavelengths (nm)",
    "gsd": "native GSD (m)",
    "spacing": "pixel or voxel size",
    "orientation": "orientation",
    "intensity": "intensity scaling",
    "window": "window (HU)",
    "percentiles": "percentiles",
    "mean": "mean (per channel)",
    "std": "std (per channel)",
    "frames": "frames per clip",
    "stride": "frame stride",
    "base_model": "continued from",
}


def data_facts(model: MaskedAutoencoder) -> list[tuple[str, str]]:
    """(name, value) rows for the facts the model's metadata holds, plus the input shape and patch size."""
    cfg = model.config
    rows = [("input (C×size)", input_shape(cfg)), ("patch size", "×".join(map(str, cfg.patch_size)))]
    meta: dict[str, Any] = cfg.metadata
    for key, name in DATA_FACTS.items():
        value = meta.get(key)
        if value is None or (key == "bands" and value == meta.get("channel_names")):
            continue
        rows.append((name, ", ".join(fmt(v) for v in value) if isinstance(value, list | tuple) else fmt(value)))
    return rows


def export_card(
    model: MaskedAutoencoder, library: str, how_to_load: str, notes: Sequence[str] = (), *, language: str = "python"
) -> str:
    """Markdown for an export folder: ``library`` (e.g. "MONAI"), a loading snippet, ``notes`` (one line each)."""
    cfg = model.config
    table = "\n".join(f"| {name} | {value} |" for name, value in data_facts(model))
    lines = [
        f"# A mimsdk {cfg.modality} encoder for {library}",
        "",
        f"The encoder of a masked autoencoder pre-trained with mimsdk ({encoder_text(cfg)}), exported for "
        f"{library}. The export was checked when it was written: the weights load with strict keys.",
        "",
        "## How to load it",
        "",
        f"```{language}\n{how_to_load.strip()}\n```",
        "",
        "## Prepare inputs as in pre-training",
        "",
        "| | |",
        "|---|---|",
        table,
    ]
    if notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in notes)]
    return "\n".join(lines) + "\n"


def write_export_card(directory: Path, text: str) -> Path:
    """Write ``text`` as the export folder's README.md."""
    path = Path(directory) / CARD_NAME
    path.write_text(text)
    return path
