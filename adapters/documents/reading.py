"""Reading pages: rendering (PDF) or decoding (images), a per-process cache, fitting into the model's input."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from mimsdk.adapters.documents.pages import Page
from mimsdk.errors import DataError


def read_page(page: Page, color: str) -> torch.Tensor:
    """The page as uint8 C×H×W (C = 1 gray, 3 rgb), H×W = ``page.pixels``. Raises DataError naming the file."""
    mode = "L" if color == "gray" else "RGB"
    try:
        if page.is_pdf:
            pdf = pdfium.PdfDocument(page.path)
            try:
                bitmap = pdf[page.index].render(scale=page.scale, grayscale=color == "gray")
                img = bitmap.to_pil().convert(mode)
            finally:
                pdf.close()
        else:
            with Image.open(page.path) as src:
                src.seek(page.index)
                if page.scale < 1.0:
                    # JPEG decodes straight at 1/2, 1/4 or 1/8 size: the full frame never sits in memory.
                    src.draft(mode, page.pixels)
                img = src.convert(mode)
                if img.size != page.pixels:
                    img = img.resize(page.pixels, Image.Resampling.BOX)
    except (pdfium.PdfiumError, OSError, ValueError, EOFError) as err:
        raise DataError(f"{page.path}: page {page.index + 1} cannot be read ({err})") from err
    array = np.asarray(img)
    return torch.from_numpy(array.copy()).reshape(array.shape[0], array.shape[1], -1).permute(2, 0, 1)


class PageCache:
    """Least-recently-used rendered pages, bounded in bytes. One per process (DataLoader workers each copy it)."""

    def __init__(self, megabytes: int) -> None:
        self.budget = megabytes * 2**20
        self.used = 0
        self.pages: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    def get(self, key: tuple, load: Any) -> torch.Tensor:
        if key in self.pages:
            self.pages.move_to_end(key)
            return self.pages[key]
        value = load()
        size = value.numel() * value.element_size()
        if size <= self.budget:
            self.pages[key] = value
            self.used += size
            while self.used > self.budget:
                _, old = self.pages.popitem(last=False)
                self.used -= old.numel() * old.element_size()
        return value


def fit_with_padding(page: torch.Tensor, size: tuple[int, int], normalize: Any) -> torch.Tensor:
    """uint8 C×h×w -> float C×H×W: resized (antialiased) to fit inside ``size`` with its aspect kept,
    scaled to [0, 1] and ``normalize``d, centred, NaN around it."""
    c, h, w = page.shape
    big_h, big_w = size
    s = min(big_h / h, big_w / w)
    new_h, new_w = max(1, min(big_h, round(h * s))), max(1, min(big_w, round(w * s)))
    # torchvision's uint8 path: antialiased resizing of a whole page is 2-3x faster than in float.
    small = normalize(TF.resize(page, [new_h, new_w], antialias=True).float().div_(255.0))
    out = torch.full((c, big_h, big_w), float("nan"))
    top, left = (big_h - new_h) // 2, (big_w - new_w) // 2
    out[:, top : top + new_h, left : left + new_w] = small
    return out
