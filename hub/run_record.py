"""What a run directory tells a model card: its recipe (local paths cut), its metrics, its curve as a picture."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import yaml


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


def read_recipe(run_dir: str | Path | None) -> dict[str, Any] | None:
    """The run's recipe.yaml as a dict, its data paths cut to their last component; None if absent or unreadable."""
    if run_dir is None or not (Path(run_dir) / "recipe.yaml").is_file():
        return None
    try:
        recipe = yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text())
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
