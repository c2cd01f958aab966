"""Pictures of video reconstructions: frame strips per clip (original, masked, reconstruction) and animated GIFs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from mimsdk.adapter import COLUMNS, grey_out, unnormalise
from mimsdk.config import ModelConfig
from mimsdk.picture import grid

PICTURE_SAMPLES = 4  # clips in a reconstruction picture: each takes three rows
PICTURE_FRAMES = 8  # frames per row at most
MIN_CELL = 96  # frames are enlarged to at least this many pixels so tubelets stay visible


def picture(recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
    """For each clip (up to 4), three rows: original, masked and reconstruction; columns are frames.

    One frame per tubelet time step is shown (every other frame with 2-frame
    tubelets), at most 8, evenly spread.
    """
    strips = _strips(recon, model)
    rows: list[list[np.ndarray]] = []
    for i, (original, masked, rebuilt) in enumerate(strips["rows"][:PICTURE_SAMPLES]):
        h, w = original[0].shape[:2]
        rows.append([_label(f"clip {i}\n{COLUMNS[0]}", h, w), *original])
        rows += [[_label(title, h, w), *strip] for title, strip in zip(COLUMNS[1:], (masked, rebuilt))]
    return grid(rows, ["", *[f"frame {t}" for t in strips["times"]]], min_cell=MIN_CELL)


def _strips(recon: dict[str, torch.Tensor], model: ModelConfig, every_frame: bool = False) -> dict[str, Any]:
    """Denormalised, enlarged H×W×3 frames per clip: original, masked (grey), reconstruction."""
    frames = recon["input"].shape[2]
    step = model.patch_size[0]
    times = list(range(frames)) if every_frame else list(range(0, frames, step))
    if not every_frame and len(times) > PICTURE_FRAMES:
        times = [times[round(i * (len(times) - 1) / (PICTURE_FRAMES - 1))] for i in range(PICTURE_FRAMES)]
    height, width = recon["input"].shape[3:]
    scale = max(1, -(-MIN_CELL // max(height, width)))

    def show(clip: torch.Tensor, hidden: torch.Tensor | None = None) -> list[np.ndarray]:
        video = unnormalise(clip, model).permute(1, 2, 3, 0).numpy()  # T×H×W×C
        if hidden is not None:  # T×H×W×1, the same plane in every step
            video = grey_out(video, hidden.detach().float().cpu()[0].numpy()[..., None])
        video = video.repeat(scale, axis=1).repeat(scale, axis=2)
        return [video[t] for t in times]

    rows = [
        (show(recon["input"][i]), show(recon["input"][i], recon["mask"][i]), show(recon["reconstruction"][i]))
        for i in range(recon["input"].shape[0])
    ]
    return {"rows": rows, "times": times}


def _label(text: str, height: int, width: int) -> np.ndarray:
    """A white height×width×3 cell with ``text`` in black, to name a row of the grid."""
    cell = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(cell).multiline_text((4, height // 2 - 12), text, fill="black")
    return np.asarray(cell, dtype=np.float32) / 255.0


def save_gif(recon: dict[str, torch.Tensor], model: ModelConfig, path: str | Path, duration_ms: int = 160) -> Path:
    """An animated GIF of ``model.reconstruct`` output: one frame per time step, each a grid with
    a row per clip (up to 4) and columns original | masked | reconstruction. Returns ``path``."""
    strips = _strips(recon, model, every_frame=True)
    pictures = []
    for t in range(len(strips["times"])):
        rows = [[original[t], masked[t], rebuilt[t]] for original, masked, rebuilt in strips["rows"][:PICTURE_SAMPLES]]
        pictures.append(grid(rows, COLUMNS, min_cell=MIN_CELL))
    path = Path(path)
    pictures[0].save(path, format="GIF", save_all=True, append_images=pictures[1:], duration=duration_ms, loop=0)
    return path
