"""Generate the tiny labelled image sample that ships in mimsdk/sample/images.

Synthetic, so it carries no licence question: four classes of 32×32 pictures
(stripes, checkers, discs, gradients) with random colours, phases and sizes.
Run: python scripts/make_images_sample.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "mimsdk" / "sample" / "images"
PER_CLASS = 32
SIZE = 32


def draw(kind: str, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    if kind == "stripes":
        period, angle = rng.uniform(4, 10), rng.uniform(0, np.pi)
        t = (np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period) > 0).astype(np.float32)
    elif kind == "checkers":
        cell = rng.integers(3, 9)
        t = (((xx + rng.integers(0, cell)) // cell + (yy + rng.integers(0, cell)) // cell) % 2).astype(np.float32)
    elif kind == "discs":
        cx, cy, r = rng.uniform(8, 24), rng.uniform(8, 24), rng.uniform(5, 12)
        t = (((xx - cx) ** 2 + (yy - cy) ** 2) < r**2).astype(np.float32)
    else:  # gradients
        angle = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(angle) + yy * np.sin(angle)) / SIZE
        t = (t - t.min()) / (t.max() - t.min())
    img = t[..., None] * a + (1 - t[..., None]) * b
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(0)
    for kind in ("stripes", "checkers", "discs", "gradients"):
        folder = OUT / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(PER_CLASS):
            Image.fromarray(draw(kind, rng)).save(folder / f"{i:03d}.png", optimize=True)


if __name__ == "__main__":
    main()
