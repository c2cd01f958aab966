"""Documents: PDF pages rendered by pypdfium2 and page images (PNG, JPEG, multi-page TIFF), one sample per page.

Pages keep their aspect ratio. ``fit: crop`` trains on random crops of the
full-resolution page whose aspect is that of the model's input (± ``aspect_jitter``),
so text is never stretched; ``fit: pad`` shrinks a random crop with the page's
own aspect to fit the input and fills the rest with NaN, which the model treats
as "no data" (out of the norm_pix statistics and the loss). The evaluation view
is always the whole page fitted with NaN padding, so probes see every page whole.
There are no flips (``data.hflip`` is ignored): text has a direction.

A PDF page is rendered at ``data.options.dpi``; a page so large that its render
would exceed ``max_pixels`` is rendered at a lower DPI instead (one warning naming
the file and page), so memory stays bounded whatever the MediaBox says.

Files are scanned before training: page counts come from the PDF's page tree
(nothing is rendered) and each image frame is decoded once. An encrypted, empty,
corrupt or undecodable file gives one warning naming it and is skipped, or with
``data.strict`` the first one is a :class:`~mimsdk.data.DataError`.

Labels (:mod:`mimsdk.labels`): ``data.labels`` names a CSV of ``path`` (relative to the
CSV) and a label column (``data.options.label_column``, default ``label``), or else class
sub-folders; a PDF's label applies to all its pages.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import warnings
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from mimsdk.config import ConfigError, DataConfig, ModelConfig, adapter_options, choice
from mimsdk.data import DataError, normalisation
from mimsdk.labels import label_files
from mimsdk.picture import grid

log = logging.getLogger(__name__)

PDF_SUFFIXES = {".pdf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
POINTS_PER_INCH = 72.0
# Padding shown in pictures: a pale blue no page is printed in.
PADDING_RGB = (0.80, 0.87, 0.95)


@dataclass
class DocumentOptions:
    """``data.options`` keys of the documents adapter.

    Attributes:
        dpi: resolution PDF pages are rendered at (page images are used at their own resolution).
        color: ``gray`` or ``rgb``; ``auto`` follows ``model.in_chans`` (1 or 3).
        pages: which pages of each file: ``all`` or 1-based numbers and ranges, e.g. ``"1"``, ``"1-3,7"``.
        fit: ``crop`` (random crops of the full-resolution page) or ``pad`` (whole page fitted, NaN padding).
        aspect_jitter: training crops' aspect may differ from the target aspect by this factor (0.1: ±10 %).
        max_pixels: cap on a rendered or decoded page's width × height; larger pages are scaled down.
        cache_mb: rendered pages kept in memory per process (least recently used out first); 0 turns it off.
        label_column: the column of ``data.labels`` holding the label.
    """

    dpi: float = 150.0
    color: str = choice("auto", "auto", "gray", "rgb")
    pages: str = "all"
    fit: str = choice("crop", "crop", "pad")
    aspect_jitter: float = 0.1
    max_pixels: int = 25_000_000
    cache_mb: int = 512
    label_column: str = "label"


def parse_pages(spec: str) -> list[tuple[int, int]] | None:
    """``"all"`` -> None; ``"1-3,7"`` -> [(0, 3), (6, 7)], 0-based half-open ranges. Raises ConfigError."""
    if spec.strip().lower() == "all":
        return None
    ranges = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        first, last = (int(m[1]), int(m[2] or m[1])) if m else (0, 0)
        if not m or first < 1 or last < first:
            raise ConfigError(
                f"data.options.pages: {spec!r} is not a page selection; expected 'all' or 1-based pages and "
                "ranges such as '1', '1-3,7'"
            )
        ranges.append((first - 1, last))
    return ranges


def document_options(data: DataConfig, model: ModelConfig) -> DocumentOptions:
    """``data.options`` checked, or the options stored with the model when the data section sets none."""
    raw = data.options or model.metadata.get("document_options", {})
    opts = adapter_options(DocumentOptions, DataConfig(options=dict(raw)))
    checks = {
        "dpi": opts.dpi > 0,
        "aspect_jitter": 0.0 <= opts.aspect_jitter < 1.0,
        "max_pixels": opts.max_pixels >= 64 * 64,
        "cache_mb": opts.cache_mb >= 0,
    }
    rules = {"dpi": "> 0", "aspect_jitter": "in [0, 1)", "max_pixels": ">= 4096", "cache_mb": ">= 0"}
    for key, ok in checks.items():
        if not ok:
            raise ConfigError(f"data.options.{key}: {getattr(opts, key)!r} is not allowed; expected {rules[key]}")
    parse_pages(opts.pages)
    channels = {"gray": 1, "rgb": 3}
    if opts.color == "auto":
        if model.in_chans not in (1, 3):
            raise DataError(f"model.in_chans is {model.in_chans}; document pages have 1 (gray) or 3 (rgb) channels")
        opts.color = "gray" if model.in_chans == 1 else "rgb"
    elif channels[opts.color] != model.in_chans:
        raise ConfigError(
            f"data.options.color: {opts.color!r} gives {channels[opts.color]} channel(s) but model.in_chans is "
            f"{model.in_chans}"
        )
    return opts


# -- scanning --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One sample: page ``index`` (0-based) of ``path``, read at ``scale``.

    For a PDF ``size`` is the page's width and height in points and ``scale`` pixels per point;
    for an image ``size`` is the frame's width and height in pixels and ``scale`` the factor (≤ 1)
    it is shrunk by to respect ``max_pixels``.
    """

    path: Path
    index: int
    is_pdf: bool
    size: tuple[float, float]
    scale: float

    @property
    def pixels(self) -> tuple[int, int]:
        """Width and height of the page as read, in pixels."""
        w, h = self.size
        return max(1, math.ceil(w * self.scale)), max(1, math.ceil(h * self.scale))


class BadFile(Exception):
    """A file that cannot be used; the message says why (the caller names the file)."""


def capped_scale(width: float, height: float, scale: float, max_pixels: int) -> float:
    """``scale``, or the largest one under which ceil(width·s) × ceil(height·s) stays ≤ ``max_pixels``."""
    if math.ceil(width * scale) * math.ceil(height * scale) <= max_pixels:
        return scale
    s = math.sqrt(max_pixels / (width * height))
    while math.ceil(width * s) * math.ceil(height * s) > max_pixels:  # ceil can add a pixel row or column
        s *= 0.999
    return s


def _pdf_failure(path: Path, err: pdfium.PdfiumError) -> str:
    """Why pdfium refused ``path``. pdfium's own codes mislead (an empty page tree reads as a
    password error), so the file's first and last megabyte, where the trailer sits, decide."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(1 << 20)
        f.seek(max(0, size - (1 << 20)))
        tail = f.read()
    text = head + tail
    if not head.lstrip().startswith(b"%PDF"):
        return "is not a PDF (no %PDF header)"
    if b"/Encrypt" in text:
        return "is encrypted (password-protected); decrypt it first (e.g. qpdf --decrypt)"
    if re.search(rb"/Count\s*0\b", text) and not re.search(rb"/Count\s*[1-9]", text):
        return "has no pages"
    return f"is damaged or truncated; pdfium cannot open it ({err})"


def inspect_pdf(path: Path, opts: DocumentOptions) -> list[Page]:
    """The selected pages of a PDF, with their size, without rendering anything. Raises BadFile."""
    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as err:
        raise BadFile(_pdf_failure(path, err)) from err
    try:
        count = len(pdf)
        if count == 0:
            raise BadFile("has no pages")
        pages = []
        for i in _selected(count, opts.pages):
            w, h = pdf.get_page_size(i)
            if w <= 0 or h <= 0:
                raise BadFile(f"page {i + 1} has an empty MediaBox ({w} × {h} pt)")
            wanted = opts.dpi / POINTS_PER_INCH
            scale = capped_scale(w, h, wanted, opts.max_pixels)
            if scale < wanted:
                warnings.warn(
                    f"{path} page {i + 1}: {w / POINTS_PER_INCH * 0.0254:.2f} m × {h / POINTS_PER_INCH * 0.0254:.2f} m"
                    f" would render to {math.ceil(w * wanted)} × {math.ceil(h * wanted)} pixels at {opts.dpi:g} DPI; "
                    f"rendering at {scale * POINTS_PER_INCH:.1f} DPI to stay within data.options.max_pixels="
                    f"{opts.max_pixels}",
                    stacklevel=3,
                )
            pages.append(Page(path, i, True, (w, h), scale))
        return pages
    finally:
        pdf.close()


def inspect_image(path: Path, opts: DocumentOptions) -> list[Page]:
    """The selected frames of an image file, each decoded once to prove it readable. Raises BadFile."""
    try:
        with Image.open(path) as img:
            count = getattr(img, "n_frames", 1)
            pages = []
            for i in _selected(count, opts.pages):
                img.seek(i)
                img.load()  # decode every byte: a truncated scan fails here, not during training
                w, h = img.size
                scale = capped_scale(w, h, 1.0, opts.max_pixels)
                if scale < 1.0:
                    warnings.warn(
                        f"{path} frame {i + 1}: {w} × {h} pixels exceed data.options.max_pixels={opts.max_pixels}; "
                        f"it is shrunk by {scale:.3f}",
                        stacklevel=3,
                    )
                pages.append(Page(path, i, False, (float(w), float(h)), scale))
            return pages
    except UnidentifiedImageError as err:
        raise BadFile("is not an image Pillow can read") from err
    except Image.DecompressionBombError as err:
        raise BadFile(f"is too large to decode safely ({err})") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadFile(f"cannot be decoded ({err})") from err


def _selected(count: int, spec: str) -> list[int]:
    ranges = parse_pages(spec)
    if ranges is None:
        return list(range(count))
    return sorted({i for first, last in ranges for i in range(first, min(last, count))})


def scan_documents(
    root: str | Path, opts: DocumentOptions, labels_csv: str | Path | None = None, strict: bool = False
) -> tuple[list[Page], list[int], list[str]]:
    """Pages of the documents under ``root`` (a folder, searched recursively, or one file), their labels
    (-1 when unlabelled) and the class names.

    Raises DataError for a missing path, no documents, or (``strict``) the first unusable file.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    files = [p for p in files if not p.name.startswith(".")]
    docs = [p for p in files if p.suffix.lower() in PDF_SUFFIXES | IMAGE_SUFFIXES]
    if len(docs) < len(files):
        log.info("%s: ignoring %d file(s) that are neither PDFs nor page images", root, len(files) - len(docs))
    if not docs:
        raise DataError(
            f"{root} holds no documents; expected PDFs or page images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )

    def inspect(path: Path) -> list[Page] | BadFile:
        try:
            return (inspect_pdf if path.suffix.lower() in PDF_SUFFIXES else inspect_image)(path, opts)
        except BadFile as bad:
            return bad

    # pdfium is not thread-safe: PDFs are read one after the other, images decoded in threads.
    pdfs = {p: inspect(p) for p in docs if p.suffix.lower() in PDF_SUFFIXES}
    images = [p for p in docs if p not in pdfs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        found = {**pdfs, **dict(zip(images, pool.map(inspect, images)))}
    bad = [(p, found[p]) for p in docs if isinstance(found[p], BadFile)]
    if bad and strict:
        path, why = bad[0]
        raise DataError(f"{path} {why} (strict mode; {len(bad)} unusable file(s) under {root})")
    for path, why in bad:
        warnings.warn(f"skipping {path}: it {why}", stacklevel=2)
    good = [p for p in docs if not isinstance(found[p], BadFile)]
    pages = [page for p in good for page in found[p]]
    if bad:
        warnings.warn(
            f"skipped {len(bad)} of {len(docs)} documents under {root}; training on {len(pages)} pages", stacklevel=2
        )
    if not pages:
        raise DataError(f"{root} holds no usable pages ({len(bad)} unusable file(s), pages={opts.pages!r})")

    labels, classes = label_files([page.path for page in pages], root, labels_csv, opts.label_column)
    return pages, labels, classes


# -- reading ---------------------------------------------------------------------------------------


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


class DocumentDataset(torch.utils.data.Dataset):
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

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        page = self.page(index)
        height, width = self.size
        if self.train and self.opts.fit == "crop":
            crop = TF.resize(self._crop(page, width / height), list(self.size), antialias=True)
            return self.normalize(crop.float().div_(255.0)), self.labels[index]
        if self.train:  # fit: pad, on a crop shaped like the page
            page = self._crop(page, page.shape[2] / page.shape[1])
        return fit_with_padding(page, self.size, self.normalize), self.labels[index]


class DocumentsAdapter:
    name = "documents"

    def __init__(self) -> None:
        # A run asks for the training and the evaluation view of one folder: scan (and warn) once.
        self._scans: dict[tuple, tuple[list[Page], list[int], list[str]]] = {}

    def scan(self, path: str | Path, data: DataConfig, opts: DocumentOptions) -> tuple:
        key = (str(Path(path).resolve()), data.labels, data.strict, repr(opts))
        if key not in self._scans:
            self._scans[key] = scan_documents(path, opts, data.labels, data.strict)
        return self._scans[key]

    def _stats(self, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        # Ink on paper: [0, 1] maps to [-1, 1]. With norm_pix targets this only conditions the encoder's input.
        return normalisation(data.mean, data.std, model.in_chans, [0.5] * model.in_chans, [0.5] * model.in_chans)

    def dataset(self, path: str | Path, data: DataConfig, model: ModelConfig, train: bool) -> DocumentDataset:
        if len(model.input_size) != 2:
            raise DataError(f"model.input_size {model.input_size} is not 2D (height, width) as pages need")
        opts = document_options(data, model)
        mean, std = self._stats(data, model)
        pages, labels, classes = self.scan(path, data, opts)
        size = (model.input_size[0], model.input_size[1])
        return DocumentDataset(pages, labels, classes, opts, size, mean, std, train, tuple(data.crop_scale))

    def metadata(self, data: DataConfig, model: ModelConfig) -> dict[str, Any]:
        opts = document_options(data, model)
        mean, std = self._stats(data, model)
        names = ["gray"] if opts.color == "gray" else ["red", "green", "blue"]
        # Stored so `mimsdk reconstruct/embed/probe` read pages as the model was trained on them.
        keep = {k: v for k, v in dataclasses.asdict(opts).items() if k in ("dpi", "color", "fit", "max_pixels")}
        return {"channel_names": names, "mean": mean, "std": std, "document_options": keep}

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        """Rows of pages; columns original | masked | reconstruction. Padding is pale blue, masked patches grey."""
        meta = model.metadata
        mean = torch.tensor(meta.get("mean", [0.0] * model.in_chans)).view(-1, 1, 1)
        std = torch.tensor(meta.get("std", [1.0] * model.in_chans)).view(-1, 1, 1)
        fill = torch.tensor(PADDING_RGB).view(3, 1, 1)

        def show(t: torch.Tensor, padding: torch.Tensor, masked: torch.Tensor | None = None) -> np.ndarray:
            img = (t.detach().float().cpu() * std + mean).clamp(0.0, 1.0).expand(3, -1, -1)
            if masked is not None:
                m = masked.detach().float().cpu()[:1]
                img = img * (1 - m) + 0.5 * m
            img = torch.where(padding, fill, img)
            return img.permute(1, 2, 0).numpy()

        rows = []
        for i in range(recon["input"].shape[0]):
            padding = torch.isnan(recon["input"][i].detach().cpu()).any(dim=0, keepdim=True)
            original = torch.nan_to_num(recon["input"][i].detach().cpu())
            rows.append(
                [
                    show(original, padding),
                    show(recon["masked"][i], padding, recon["mask"][i]),
                    show(recon["reconstruction"][i], padding),
                ]
            )
        return grid(rows, ["original", "masked", "reconstruction"])

    def sample_path(self) -> Path | None:
        return None


ADAPTER = DocumentsAdapter()
