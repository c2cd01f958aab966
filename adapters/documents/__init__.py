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
(nothing is rendered) and each image frame is decoded once (in a folder of more than
``pages.FULL_CHECK_UP_TO`` files only its header is read); what the scan found is cached by path,
size and mtime. An encrypted, empty,
corrupt or undecodable file, an image whose header claims more pixels than Pillow's
limit, or a float image (TIFF) with NaN or infinite pixels gives one warning naming it
and is skipped, or with ``data.strict`` the first one is a :class:`~mimsdk.data.DataError`.
A page that fails only when training reads it is named once (per file) and replaced by the
next good page (:class:`~mimsdk.data.SampleDataset`).

Labels (:mod:`mimsdk.labels`): ``data.labels`` names a CSV of ``path`` (relative to the
CSV) and a label column (``data.options.label_column``, default ``label``), or else class
sub-folders; a PDF's label applies to all its pages.

Shard sets (``mimsdk shard``): the stored half of a sample is the page as read, uint8 C×H×W (a PDF page
rendered at ``dpi`` by pdfium, an image frame decoded, either capped at ``max_pixels``), with its label, file
and page number (:class:`DocumentPages`); the random crop or the padded fit and the normalisation come after,
in ``finish`` (:class:`~mimsdk.adapters.documents.reading.FinishPage`). A folder goes through the same two
halves, so it trains exactly as the shards made from it; a shard set made with another DPI, colour, page
selection, pixel cap or label column is refused, naming the key and both values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimsdk.adapter import Adapter, grey_out, unnormalise
from mimsdk.adapters.documents.options import DocumentOptions, check_document_options, parse_pages
from mimsdk.adapters.documents.pages import POLICY, Page, inspect_image, inspect_pdf, scan_documents
from mimsdk.adapters.documents.reading import FinishPage, PageCache, fit_with_padding, read_page
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import PreparedDataset, normalisation
from mimsdk.errors import DataError
from mimsdk.registry import ADAPTERS

__all__ = [
    "DocumentDataset", "DocumentOptions", "DocumentPages", "DocumentsAdapter", "FinishPage", "Page", "PageCache",
    "document_options", "fit_with_padding", "inspect_image", "inspect_pdf", "parse_pages", "read_page",
    "scan_documents",
]  # fmt: skip

# Padding shown in pictures: a pale blue no page is printed in.
PADDING_RGB = (0.80, 0.87, 0.95)


def document_options(data: DataConfig, model: ModelConfig) -> DocumentOptions:
    """``data.options`` (over the options stored with ``model``) checked, as the documents adapter reads them."""
    return DocumentsAdapter().options(data, model)


class DocumentPages:
    """Pages -> stored samples ``{"page": uint8 C×H×W, "label": int, "source": bytes, "page_index": int}``.

    The stored half is deterministic: the page rendered (PDF, at its scale from ``dpi`` and ``max_pixels``) or
    decoded (image frame) in ``color``; everything random comes after, in :class:`FinishPage`. Pages read are
    kept per process (``cache_mb``), so a folder renders each page once while it fits; with ``verify`` (writing
    shards, each page read once) nothing is kept. ``source`` is the file's path under the folder, as bytes (the
    name survives whatever its encoding, and litdata would read a string naming an existing PDF as that file).

    Args:
        pages, labels, classes: from :func:`scan_documents`. root: the folder. opts: the adapter's options.
    """

    def __init__(
        self,
        pages: list[Page],
        labels: list[int],
        classes: list[str],
        root: Path,
        opts: DocumentOptions,
        verify: bool = False,
    ) -> None:
        self.pages, self.labels, self.classes, self.root, self.opts = pages, labels, classes, root, opts
        self.cache = PageCache(0 if verify else opts.cache_mb)

    def __len__(self) -> int:
        return len(self.pages)

    def source(self, index: int) -> str:
        return str(self.pages[index].path)

    def page(self, index: int) -> torch.Tensor:
        """Page ``index`` as read (uint8 C×h×w), from the cache when it holds it."""
        page = self.pages[index]
        key = (str(page.path), page.index, page.scale, self.opts.color)
        return self.cache.get(key, lambda: read_page(page, self.opts.color))

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.pages[index].path
        name = path.relative_to(self.root) if path != self.root and path.is_relative_to(self.root) else path.name
        return {
            "page": self.page(index).numpy(),
            "label": self.labels[index],
            "source": os.fsencode(name),
            "page_index": self.pages[index].index,
        }


class DocumentDataset(PreparedDataset):
    """A folder's pages -> (tensor C×H×W, label): :class:`DocumentPages` then :class:`FinishPage`; NaN marks
    padding (``fit: pad`` and every evaluation view). A page that fails when read is named once and replaced."""

    prepared: DocumentPages
    finish: FinishPage

    @property
    def pages(self) -> list[Page]:
        return self.prepared.pages

    @property
    def opts(self) -> DocumentOptions:
        return self.prepared.opts

    def page(self, index: int) -> torch.Tensor:
        """Page ``index`` as stored (uint8 C×h×w)."""
        return self.prepared.page(index)

    def _crop(self, page: torch.Tensor, aspect: float) -> torch.Tensor:
        return self.finish.crop(page, aspect)


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
        finish = self.finish(data, model, opts, train)  # the model's shape checked before any file is read
        return DocumentDataset(self.prepared(path, data, model, opts), finish)

    def prepared(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: DocumentOptions, verify: bool = False
    ) -> DocumentPages:
        pages, labels, classes = self.scan(path, data, opts)
        return DocumentPages(pages, labels, classes, Path(path), opts, verify)

    def finish(self, data: DataConfig, model: ModelConfig, opts: DocumentOptions, train: bool) -> FinishPage:
        if len(model.input_size) != 2:
            raise DataError(f"model.input_size {model.input_size} is not 2D (height, width) as pages need")
        mean, std = self._stats(data, model)
        size = (model.input_size[0], model.input_size[1])
        return FinishPage(opts, size, mean, std, train, self.crop_scale(data))

    def preparation(self, data: DataConfig, model: ModelConfig, opts: DocumentOptions) -> dict[str, Any]:
        # What the stored pages and their labels depend on; fit, aspect_jitter and crop_scale act in finish.
        keys = ("dpi", "color", "pages", "max_pixels", "label_column")
        return {key: getattr(opts, key) for key in keys}

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
