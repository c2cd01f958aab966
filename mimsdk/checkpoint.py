"""A run's checkpoint: everything an exact resume needs, written so a kill never leaves it half-written.

``checkpoint.pt`` holds the resolved recipe, model, optimiser and scaler state, the step, the logged
history and every random generator's state. A resumed run may change only its length and how often
it logs, saves and looks (``RESUMABLE``): the rest of the recipe made the checkpoint.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch

from mimsdk.atomic import atomic_write, remove_stale
from mimsdk.config import Recipe
from mimsdk.errors import ConfigError

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
# The folders of a run directory that mimsdk writes with atomic writes: the run directory itself
# (checkpoint.pt, metrics.csv), the model directory and the reconstruction pictures.
WRITTEN_FOLDERS = ("", "model", "recon")
# What a resumed run may change: its length, and how often it logs, saves and looks.
RESUMABLE = {"train.max_steps", "train.log_every", "train.ckpt_every", "train.recon_every", "train.probe_every"}


def save_checkpoint(run_dir: Path, recipe: Recipe, step: int, history: list[dict[str, float]], **state: Any) -> Path:
    """Write ``run_dir/checkpoint.pt`` (``state``: the model's, optimiser's and scaler's state dicts) atomically."""
    state = {
        "recipe": recipe.to_dict(),
        **state,
        "step": step,
        "history": history,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "rng_python": list(random.getstate()),
    }
    path = run_dir / CHECKPOINT
    atomic_write(path, lambda p: torch.save(state, p))
    return path


def read_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The checkpoint of ``run_dir``, tensors on the CPU; nothing but tensors and plain data is unpickled."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {CHECKPOINT} to resume from")
    return torch.load(path, map_location="cpu", weights_only=True)


def remove_stale_writes(run_dir: str | Path) -> list[Path]:
    """Remove what killed writes left in ``run_dir``, ``run_dir/model`` and ``run_dir/recon``; returns it.

    A run killed outright while writing (``kill -9``, out of memory, a power cut) leaves its hidden
    temporary (``.checkpoint.pt.<random>.tmp``, as large as a checkpoint) beside the file it was
    replacing; the file itself is whole, old or new. Only :mod:`mimsdk.atomic`'s own temporary names are
    removed (:func:`mimsdk.atomic.remove_stale`), and in ``model/``, which only mimsdk writes, also those
    of safetensors' ``save_file`` (``.tmpXXXXXX``). Call it only while no other process writes to the
    run: when a run is resumed, before it writes anything.
    """
    run_dir = Path(run_dir)
    removed = [p for folder in WRITTEN_FOLDERS for p in remove_stale(run_dir / folder, writers=folder == "model")]
    if removed:
        log.info(
            "removed %d leftover temporary file(s) of killed writes: %s",
            len(removed),
            ", ".join(str(p.relative_to(run_dir)) for p in removed),
        )
    return removed


def restore_random_state(state: dict[str, Any]) -> None:
    """Put torch's, CUDA's and Python's generators back where the checkpoint found them."""
    torch.set_rng_state(state["rng_cpu"])
    if torch.cuda.is_available() and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    random.setstate((state["rng_python"][0], tuple(state["rng_python"][1]), state["rng_python"][2]))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "metadata" and not key.endswith("options"):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resumable(saved: Recipe, asked: Recipe, step: int) -> Recipe:
    """``asked`` if it differs from the checkpoint's ``saved`` recipe only in RESUMABLE keys, with a length
    of at least the steps done; a ConfigError naming the first other key and both values otherwise."""
    before, after = _flat(saved.to_dict()), _flat(asked.to_dict())
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key) and key not in RESUMABLE:
            raise ConfigError(
                f"resume cannot change {key} (the run was trained with {before.get(key)!r}, asked {after.get(key)!r}); "
                f"only {', '.join(sorted(RESUMABLE))} may change. To train a changed model from this one, start a "
                "new run with --init RUN_DIR"
            )
    if asked.train.max_steps is not None and asked.train.max_steps < step:
        raise ConfigError(f"train.max_steps {asked.train.max_steps} is below the {step} steps the run has done")
    return asked
