"""Pages: what a scan finds in PDFs (from the page tree, nothing rendered) and in page images (decoded once, or in
a big folder only their headers read). What it found in a usable file is kept by path, size and mtime
(:class:`~mimsdk.scan.ScanCache`), so a folder scanned before is looked at again only where files changed."""

from __future__ import annotations

import json
import math
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
from PIL import Image, UnidentifiedImageError

from mimsdk.adapter import ScanPolicy
from mimsdk.adapters.documents.options import DocumentOptions, parse_pages
from mimsdk.errors import DataError
from mimsdk.labels import label_files
from mimsdk.scan import ScanCache

PDF_SUFFIXES = {".pdf"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}
POINTS_PER_INCH = 72.0
POLICY = ScanPolicy(unit="documents")
# pdfium is not thread-safe: PDFs are inspected one at a time, while images decode in the scan's threads.
PDFIUM = threading.Lock()
# Decoding a page image costs 4 ms for a 600×800 JPEG and 10-35 ms for a 300 DPI scan on one core here, so 2,000
# files check within about a minute at worst (less than mimsdk.scan.FULL_CHECK_LIMIT's 5,000 natural images, which
# are smaller), while a corpus of 10^5-10^6 pages would wait hours before step one. In a folder of more files than
# this, images have their headers read only (size, frames; PDFs never render at the scan), and a page that fails
# to decode is named and skipped when training reads it (mimsdk.data.SampleDataset).
FULL_CHECK_UP_TO = 2000


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


def warn_if_capped(page: Page, opts: DocumentOptions) -> Page:
    """``page``, after a warning naming it if ``max_pixels`` made it smaller than asked (a lower DPI, a shrunk
    image); said by every scan, the cached ones too."""
    w, h = page.size
    if page.is_pdf and page.scale < opts.dpi / POINTS_PER_INCH:
        wanted = opts.dpi / POINTS_PER_INCH
        warnings.warn(
            f"{page.path} page {page.index + 1}: {w / POINTS_PER_INCH * 0.0254:.2f} m × "
            f"{h / POINTS_PER_INCH * 0.0254:.2f} m would render to {math.ceil(w * wanted)} × {math.ceil(h * wanted)} "
            f"pixels at {opts.dpi:g} DPI; rendering at {page.scale * POINTS_PER_INCH:.1f} DPI to stay within "
            f"data.options.max_pixels={opts.max_pixels}",
            stacklevel=4,
        )
    elif not page.is_pdf and page.scale < 1.0:
        warnings.warn(
            f"{page.path} frame {page.index + 1}: {w:.0f} × {h:.0f} pixels exceed data.options.max_pixels="
            f"{opts.max_pixels}; it is shrunk by {page.scale:.3f}",
            stacklevel=4,
        )
    return page


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
            scale = capped_scale(w, h, opts.dpi / POINTS_PER_INCH, opts.max_pixels)
            pages.append(warn_if_capped(Page(path, i, True, (w, h), scale), opts))
        return pages
    finally:
        pdf.close()


def inspect_image(path: Path, opts: DocumentOptions, decode: bool = True) -> list[Page]:
    """The selected frames of an image file, each decoded once to prove it readable (``decode``; else from its
    header alone: size and frame count). Raises BadFile."""
    try:
        with Image.open(path) as img:
            count = getattr(img, "n_frames", 1)
            pages = []
            for i in _selected(count, opts.pages):
                img.seek(i)
                if decode:
                    img.load()  # decode every byte: a truncated scan fails here, not during training
                if decode and img.mode == "F":  # a float TIFF: NaN or infinity has no ink value
                    values = np.asarray(img)
                    bad = int((~np.isfinite(values)).sum())
                    if bad:
                        raise BadFile(f"frame {i + 1}: {bad} of {values.size} pixels are NaN or infinite (float image)")
                w, h = img.size
                scale = capped_scale(w, h, 1.0, opts.max_pixels)
                pages.append(warn_if_capped(Page(path, i, False, (float(w), float(h)), scale), opts))
            return pages
    except UnidentifiedImageError as err:
        raise BadFile("is not an image Pillow can read") from err
    except Image.DecompressionBombError as err:
        raise BadFile(
            f"is too large to decode safely: {err} (the header's size is refused before decoding; "
            "raise PIL.Image.MAX_IMAGE_PIXELS to read it)"
        ) from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadFile(f"cannot be decoded ({err})") from err


def _selected(count: int, spec: str) -> list[int]:
    ranges = parse_pages(spec)
    if ranges is None:
        return list(range(count))
    return sorted({i for first, last in ranges for i in range(first, min(last, count))})


def inspect(path: Path, opts: DocumentOptions, decode: bool = True) -> list[Page]:
    """The selected pages of one PDF or image file (images decoded with ``decode``, else their headers read);
    DataError naming it and why it cannot be used."""
    try:
        if path.suffix.lower() in PDF_SUFFIXES:
            with PDFIUM:
                return inspect_pdf(path, opts)
        return inspect_image(path, opts, decode)
    except BadFile as bad:
        raise DataError(f"{path} {bad}") from bad


def scan_documents(
    root: str | Path, opts: DocumentOptions, labels_csv: str | Path | None = None, strict: bool = False
) -> tuple[list[Page], list[int], list[str]]:
    """Pages of the documents under ``root`` (a folder, searched recursively, or one file), their labels
    (-1 when unlabelled) and the class names. Images are decoded once, or in a folder of more than
    :data:`FULL_CHECK_UP_TO` files only their headers read.

    Raises DataError for a missing path, no documents, or (``strict``) the first unusable file.
    """
    root = Path(root)
    suffixes = PDF_SUFFIXES | IMAGE_SUFFIXES
    files = POLICY.walk(
        root, f"PDFs or page images ({', '.join(sorted(suffixes))})", lambda p: p.suffix.lower() in suffixes
    )
    decode = len(files) <= FULL_CHECK_UP_TO
    # what inspect answers depends on these settings alone (fit, cache and label column do not change a page)
    settings = json.dumps([decode, opts.dpi, opts.pages, opts.max_pixels, Image.MAX_IMAGE_PIXELS])
    cache = ScanCache(
        root, f"documents-{settings}",
        save=lambda pages: [[page.index, page.is_pdf, list(page.size), page.scale] for page in pages],
        load=lambda path, saved: [warn_if_capped(Page(path, int(i), bool(pdf), (float(w), float(h)), float(scale)),
                                                 opts) for i, pdf, (w, h), scale in saved],
    )  # fmt: skip
    found = POLICY.check(root, files, cache.remembering(lambda p: inspect(p, opts, decode)), strict)
    cache.write()
    pages = [page for _, in_file in found for page in in_file]
    if not pages:
        raise DataError(f"{root} holds no usable pages (pages={opts.pages!r})")
    labels, classes = label_files([page.path for page in pages], root, labels_csv, opts.label_column)
    return pages, labels, classes
