"""Documents: PDF pages rendered by pypdfium2 and page images (PNG, JPEG, multi-page TIFF), one sample per page.

Pages keep their aspect ratio. ``fit: crop`` trains on random crops of the
full-resolution page whose aspect is that of the model's input (± ``aspect_jitter``),
so text is never stretched; ``fit: pad`` shrinks a random crop with the page's
own aspect to fit the input and fills the rest with NaN, which the model treats
as "no data" (out of the norm_pix statistics and the loss). The evaluation view
is always the whole page fitted with NaN padding, so probes see every page whole.
There are no flips: text has a direction, so ``data.hflip`` is an error here.

A PDF page is rendered at ``data.options.dpi``; a page so large that its render
would exceed ``max_pixels`` is rendered at a lower DPI instead (one warning naming
the file and page), so memory stays bounded whatever the MediaBox says.

Files are scanned before training: page counts come from the PDF's page tree
(nothing is rendered) and each image frame is decoded once. An encrypted, empty,
corrupt or undecodable file, an image whose header claims more pixels than Pillow's
limit, or a float image (TIFF) with NaN or infinite pixels gives one warning naming it
and is skipped, or with ``data.strict`` the first one is a :class:`~mimsdk.data.DataError`.
A page that fails only when training reads it is named once (per file) and replaced by the
next good page (:class:`~mimsdk.data.SampleDataset`).

Labels (:mod:`mimsdk.labels`): ``data.labels`` names a CSV of ``path`` (relative to the
CSV) and a label column (``data.options.label_column``, default ``label``), or else class
sub-folders; a PDF's label applies to all its pages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from mimsdk.adapter import Adapter, grey_out, unnormalise
from mimsdk.adapters.documents.options import DocumentOptions, check_document_options, parse_pages
from mimsdk.adapters.documents.pages import POLICY, Page, inspect_image, inspect_pdf, scan_documents
from mimsdk.adapters.documents.reading import PageCache, fit_with_padding, read_page
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import SampleDataset, normalisation
from mimsdk.errors import DataError
from mimsdk.registry import ADAPTERS

__all__ = [
    "DocumentDataset", "DocumentOptions", "DocumentsAdapter", "Page", "PageCache", "document_options",
    "fit_with_padding", "inspect_image", "inspect_pdf", "parse_pages", "read_page", "scan_documents",
]  # fmt: skip

# Padding shown in pictures: a pale blue no page is printed in.
PADDING_RGB = (0.80, 0.87, 0.95)


def document_options(data: DataConfig, model: ModelConfig) -> DocumentOptions:
    """``data.options`` (over the options stored with ``model``) checked, as the documents adapter reads them."""
    return DocumentsAdapter().options(data, model)


class DocumentDataset(SampleDataset):
    """Document pages -> (tensor C×H×W, label); NaN marks padding (``fit: pad`` and every evaluation view).

    Args:
        pages, labels, classes: from :func:`scan_documents`.
        opts: the adapter's options. size: the model's (H, W). mean, std: per-channel normalisation.
        train: random crops (training view) or the whole page fitted (deterministic evaluation view).
        crop_scale: range of the crop's area as a fraction of the page's (``data.crop_scale``).
    """

    def __init__(
        self,
        pages: list[Page],
        labels: list[int],
        classes: list[str],
        opts: DocumentOptions,
        size: tuple[int, int],
        mean: list[float],
        std: list[float],
        train: bool,
        crop_scale: tuple[float, float] = (0.2, 1.0),
    ) -> None:
        self.pages, self.labels, self.classes = pages, labels, classes
        self.opts, self.size, self.train = opts, tuple(size), train
        self.normalize = v2.Normalize(mean, std)
        self.crop_scale = tuple(crop_scale)
        self.cache = PageCache(opts.cache_mb)

    def __len__(self) -> int:
        return len(self.pages)

    def page(self, index: int) -> torch.Tensor:
        """Page ``index`` as read (uint8 C×h×w), from the cache when it holds it."""
        page = self.pages[index]
        key = (str(page.path), page.index, page.scale, self.opts.color)
        return self.cache.get(key, lambda: read_page(page, self.opts.color))

    def _crop(self, page: torch.Tensor, aspect: float) -> torch.Tensor:
        """A random crop of area fraction in ``crop_scale`` and width/height near ``aspect``
        (torchvision's RandomResizedCrop sampling, through the global RNG that SeededDataset seeds)."""
        j = 1.0 + self.opts.aspect_jitter
        top, left, h, w = v2.RandomResizedCrop.get_params(page, list(self.crop_scale), [aspect / j, aspect * j])
        return page[:, top : top + h, left : left + w]

    def source(self, index: int) -> str:
        return str(self.pages[index].path)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        page = self.page(index)
        height, width = self.size
        if self.train and self.opts.fit == "crop":
            crop = TF.resize(self._crop(page, width / height), list(self.size), antialias=True)
            return self.normalize(crop.float().div_(255.0)), self.labels[index]
        if self.train:  # fit: pad, on a crop shaped like the page
            page = self._crop(page, page.shape[2] / page.shape[1])
        return fit_with_padding(page, self.size, self.normalize), self.labels[index]


@ADAPTERS.register("documents")
class DocumentsAdapter(Adapter):
    """Document pages C×H×W (C = 1 gray or 3 rgb), aspect kept: random crops or NaN-padded fits."""

    name = "documents"
    Options = DocumentOptions
    uses = ("crop_scale", "mean", "std")  # no hflip: text has a direction
    # How pages were read: ``embed``, ``probe`` and ``reconstruct`` render them alike.
    stored = ("dpi", "color", "fit", "max_pixels")
    legacy_options_key = "document_options"
    policy = POLICY

    def check_options(self, opts: DocumentOptions, model: ModelConfig | None) -> DocumentOptions:
        if model is None:
            raise TypeError("the documents adapter checks data.options against the model (color and in_chans)")
        return check_document_options(opts, model)

    def scan(self, path: str | Path, data: DataConfig, opts: DocumentOptions) -> tuple:
        return self.remember(path, data, repr(opts), lambda: scan_documents(path, opts, data.labels, data.strict))

    def _stats(self, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        # Ink on paper: [0, 1] maps to [-1, 1]. With norm_pix targets this only conditions the encoder's input.
        return normalisation(data.mean, data.std, model.in_chans, [0.5] * model.in_chans, [0.5] * model.in_chans)

    def build(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: DocumentOptions, train: bool
    ) -> DocumentDataset:
        if len(model.input_size) != 2:
            raise DataError(f"model.input_size {model.input_size} is not 2D (height, width) as pages need")
        mean, std = self._stats(data, model)
        pages, labels, classes = self.scan(path, data, opts)
        size = (model.input_size[0], model.input_size[1])
        return DocumentDataset(pages, labels, classes, opts, size, mean, std, train, self.crop_scale(data))

    def describe(self, data: DataConfig, model: ModelConfig, opts: DocumentOptions) -> dict[str, Any]:
        mean, std = self._stats(data, model)
        names = ["gray"] if opts.color == "gray" else ["red", "green", "blue"]
        # "document_options" repeats the stored options for readers of older metadata.
        return {"channel_names": names, "mean": mean, "std": std, "document_options": self.kept(opts)}

    def picture_rows(self, recon: dict[str, torch.Tensor], model: ModelConfig, index: int) -> list[list[np.ndarray]]:
        """One row per page: original | masked | reconstruction. Padding is pale blue, masked patches grey."""
        fill = torch.tensor(PADDING_RGB).view(3, 1, 1)
        padding = torch.isnan(recon["input"][index].detach().cpu()).any(dim=0, keepdim=True)

        def show(t: torch.Tensor, masked: torch.Tensor | None = None) -> np.ndarray:
            img = unnormalise(torch.nan_to_num(t), model).clamp(0.0, 1.0).expand(3, -1, -1)
            if masked is not None:
                img = grey_out(img, masked.detach().float().cpu()[:1])
            return torch.where(padding, fill, img).permute(1, 2, 0).numpy()

        masked = show(recon["masked"][index], recon["mask"][index])
        return [[show(recon["input"][index]), masked, show(recon["reconstruction"][index])]]
