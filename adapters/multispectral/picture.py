"""Pictures of multispectral reconstructions: true and false colour composites, and the error of each band."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from mimsdk.adapter import grey_out, unnormalise
from mimsdk.adapters.multispectral.bands import FALSE_COLOUR, TRUE_COLOUR
from mimsdk.config import ModelConfig
from mimsdk.picture import grid


def stretch(image: np.ndarray, low: float = 2.0, high: float = 98.0, reference: np.ndarray | None = None) -> np.ndarray:
    """H×W(×3) -> [0, 1] by the ``low``/``high`` percentiles of ``reference`` (default: itself), NaN as 0."""
    ref = image if reference is None else reference
    finite = ref[np.isfinite(ref)]
    if finite.size == 0:
        return np.zeros_like(image)
    lo, hi = np.percentile(finite, [low, high])
    return np.nan_to_num(np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0))


def _first_date(t: torch.Tensor) -> np.ndarray:
    """C×(T)×H×W -> C×H×W numpy, the first date of a series."""
    a = t.detach().float().cpu().numpy()
    return a[:, 0] if a.ndim == 4 else a


def picture(recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
    """Rows of samples: true colour (input, masked, reconstruction), false colour (input, reconstruction),
    then the absolute error of each band (normalised units) on the masked patches."""
    bands = list(model.metadata.get("bands") or [f"band {i}" for i in range(model.in_chans)])

    def composite(names: Sequence[str]) -> list[int]:
        return [bands.index(n) for n in names] if all(n in bands for n in names) else [0, 1, 2][: len(bands)]

    rows, titles = [], ["true colour", "masked", "reconstruction", "false colour", "reconstruction"]
    titles += [f"|err| {b}" for b in bands]
    for i in range(recon["input"].shape[0]):
        x, y, masks = (_first_date(recon[k][i]) for k in ("input", "reconstruction", "mask"))
        raw_x = _first_date(unnormalise(recon["input"][i], model))
        raw_y = _first_date(unnormalise(recon["reconstruction"][i], model))
        m = masks[composite(TRUE_COLOUR)[0]][..., None]  # groups may be masked apart: grey what the red band lost
        row = []
        for names in (TRUE_COLOUR, FALSE_COLOUR):
            idx = composite(names)
            ref = raw_x[idx].transpose(1, 2, 0)
            shown = [stretch(ref), stretch(raw_y[idx].transpose(1, 2, 0), reference=ref)]
            if names == TRUE_COLOUR:
                shown.insert(1, grey_out(shown[0], m))
            row += shown
        error = np.abs(np.nan_to_num(y - x)) * masks
        top = max(float(np.percentile(error[masks > 0], 99)) if (masks > 0).any() else 1.0, 1e-6)
        row += [np.clip(e / top, 0, 1) for e in error]
        rows.append(row)
    return grid(rows, titles)
