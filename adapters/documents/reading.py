"""Reading pages: rendering (PDF) or decoding (images), a per-process cache, and ``finish``: a stored page to the
model's input (a random crop, or the page fitted with NaN padding), normalised."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from mimsdk.adapters.documents.options import DocumentOptions
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
                if src.mode == "F":  # a float TIFF: checked here too, as a big folder's scan reads headers only
                    _check_finite(page, np.asarray(src))
                if page.scale < 1.0:
                    # JPEG decodes straight at 1/2, 1/4 or 1/8 size: the full frame never sits in memory.
                    src.draft(mode, page.pixels)
                img = src.convert(mode)
                if img.size != page.pixels:
                    img = img.resize(page.pixels, Image.Resampling.BOX)
    except DataError:
        raise
    except (pdfium.PdfiumError, OSError, ValueError, EOFError) as err:
        raise DataError(f"{page.path}: page {page.index + 1} cannot be read ({err})") from err
    array = np.asarray(img)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    # Contiguous C×H×W, as a shard stores it: the same bytes in the same layout give the same crops and resizes.
    return torch.from_numpy(np.array(array, order="C"))  # a copy: Pillow's buffer may be read-only


def _check_finite(page: Page, values: np.ndarray) -> None:
    """NaN or infinity in a float frame has no ink value: DataError naming the file and frame."""
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise DataError(
            f"{page.path}: frame {page.index + 1}: {bad} of {values.size} pixels are NaN or infinite (float image)"
        )


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


class FinishPage:
    """A stored page (uint8 C×h×w) -> tensor C×H×W: a random crop resized to the input (``fit: crop``, training),
    or a crop shaped like the page (``fit: pad``, training) or the whole page (evaluation) fitted with NaN around
    it; scaled to [0, 1] and normalised.

    The crops draw from torch's global generator (torchvision's RandomResizedCrop sampling), which
    :class:`~mimsdk.data.SeededDataset` seeds per (seed, epoch, index): a page drawn from a folder or from its
    shards is cropped alike.

    Args:
        opts: the adapter's options. size: the model's (H, W). mean, std: per-channel normalisation.
        train: the random view. crop_scale: range of the crop's area as a fraction of the page's.
    """

    def __init__(
        self,
        opts: DocumentOptions,
        size: tuple[int, int],
        mean: list[float],
        std: list[float],
        train: bool,
        crop_scale: tuple[float, float] = (0.2, 1.0),
    ) -> None:
        self.opts, self.size, self.train, self.crop_scale = opts, (size[0], size[1]), train, tuple(crop_scale)
        self.normalize = v2.Normalize(mean, std)

    def crop(self, page: torch.Tensor, aspect: float) -> torch.Tensor:
        """A random crop C×h×w of area fraction in ``crop_scale`` and width/height near ``aspect``."""
        j = 1.0 + self.opts.aspect_jitter
        top, left, h, w = v2.RandomResizedCrop.get_params(page, list(self.crop_scale), [aspect / j, aspect * j])
        return page[:, top : top + h, left : left + w]

    def __call__(self, sample: dict[str, Any]) -> torch.Tensor:
        page = sample["page"]
        page = page if isinstance(page, torch.Tensor) else torch.from_numpy(np.asarray(page))
        if page.dtype != torch.uint8 or page.ndim != 3:
            raise DataError(f"a stored page of {page.dtype} {tuple(page.shape)}; expected uint8 C×H×W")
        height, width = self.size
        if self.train and self.opts.fit == "crop":
            crop = TF.resize(self.crop(page, width / height), list(self.size), antialias=True)
            return self.normalize(crop.float().div_(255.0))
        if self.train:  # fit: pad, on a crop shaped like the page
            page = self.crop(page, page.shape[2] / page.shape[1])
        return fit_with_padding(page, self.size, self.normalize)
