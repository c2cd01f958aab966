"""Generate the tiny labelled image sample that ships in mimsdk/sample/images.

Synthetic, so it carries no licence question: four classes of 32×32 pictures
(stripes, checkers, discs, gradients) with random colours, phases and sizes;
32 per class for training and, drawn with another seed, 16 per class held out
(mimsdk/sample/images-eval).
Run: python scripts/make_images_sample.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "mimsdk" / "sample" / "images"
HELD_OUT = OUT.with_name("images-eval")  # the held-out split training evaluates on when no data path is given
PER_CLASS = 32
PER_CLASS_HELD_OUT = 16
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


def write(root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for kind in ("stripes", "checkers", "discs", "gradients"):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(draw(kind, rng)).save(folder / f"{i:03d}.png", optimize=True)


def main() -> None:
    write(OUT, PER_CLASS, seed=0)
    write(HELD_OUT, PER_CLASS_HELD_OUT, seed=1)


if __name__ == "__main__":
    main()
