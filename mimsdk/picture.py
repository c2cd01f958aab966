"""Pictures: lay out 2D arrays as a labelled grid PNG (modality-free)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Float H×W or H×W×3 in [0, 1] (clipped) -> uint8."""
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def grid(
    rows: list[list[np.ndarray]], titles: list[str] | None = None, min_cell: int = 96, pad: int = 2
) -> Image.Image:
    """Rows of images (H×W or H×W×3 floats in [0, 1]) -> one RGB picture.

    Small cells are enlarged by an integer factor (nearest) to at least
    ``min_cell`` pixels so 32-pixel patches stay visible. ``titles`` label columns.
    """
    cells = [[to_uint8(c if c.ndim == 3 else np.repeat(c[..., None], 3, axis=2)) for c in row] for row in rows]
    h = max(c.shape[0] for row in cells for c in row)
    w = max(c.shape[1] for row in cells for c in row)
    scale = max(1, -(-min_cell // max(h, w)))
    h, w = h * scale, w * scale
    header = 14 if titles else 0
    ncols = max(len(row) for row in cells)
    canvas = Image.new("RGB", (ncols * (w + pad) + pad, header + len(cells) * (h + pad) + pad), "white")
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            img = Image.fromarray(cell).resize((cell.shape[1] * scale, cell.shape[0] * scale), Image.NEAREST)
            canvas.paste(img, (pad + c * (w + pad), header + pad + r * (h + pad)))
    if titles:
        draw = ImageDraw.Draw(canvas)
        for c, title in enumerate(titles):
            draw.text((pad + c * (w + pad) + 2, 1), title, fill="black")
    return canvas
