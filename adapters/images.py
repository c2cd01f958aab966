"""Natural images: folders of files Pillow reads, MAE's augmentation, reconstruction pictures.

Labels come from class sub-folders (``root/<class>/<file>``) or a CSV with
columns ``path,label`` (paths relative to the CSV's folder). Unreadable files
are found before training: one warning each, naming the file, and a count; in
``strict`` mode the first one is an error. Each file's header is read before it is
decoded: one that claims more pixels than Pillow's limit (``PIL.Image.MAX_IMAGE_PIXELS``
× 2, about 179 million; a decompression bomb) is not decoded. A float image (TIFF mode
``F``) with NaN or infinite pixels is unusable. A file that fails only later, while
training reads it, is named once and replaced (:class:`~mimsdk.data.SampleDataset`).
"""

from __future__ import annotations

import io
import re
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from mimsdk.adapter import Adapter, ScanPolicy, grey_out, unnormalise
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import PreparedDataset, normalisation
from mimsdk.errors import DataError
from mimsdk.labels import label_files
from mimsdk.registry import ADAPTERS
from mimsdk.scan import FULL_CHECK_LIMIT, VerdictCache

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
POLICY = ScanPolicy(unit="files", unusable="unreadable", threads=8)


def _installed_sample() -> Path:
    """The sample as installed (editable or wheel) beside the mimsdk package.

    Found through importlib's resources rather than ``import mimsdk``: an adapter never imports the
    application layer that reaches it.
    """
    return Path(str(resources.files("mimsdk"))) / "sample" / "images"


def too_large(err: Exception) -> str:
    """The reason for Pillow's DecompressionBombError: the size the header claims and the limit."""
    numbers = re.findall(r"\d+", str(err))
    if len(numbers) >= 2:
        return (
            f"its header claims {int(numbers[0]):,} pixels, more than the {int(numbers[1]):,} Pillow decodes "
            "(a decompression bomb?); not decoded. Raise PIL.Image.MAX_IMAGE_PIXELS to read it"
        )
    return f"too large to decode safely ({err})"


def check_image(path: Path, decode: bool = True) -> str | None:
    """None if Pillow decodes ``path`` completely (or, without ``decode``, reads its header), else the reason.

    The header is read first: a size over Pillow's limit is refused before any pixel is decoded.
    """
    try:
        with Image.open(path) as img:  # reads the header only; refuses a claimed size over the limit
            if not decode:
                return None
            img.load()  # decode every byte: a truncated JPEG fails here, not in verify()
            if img.mode == "F":  # a float TIFF: NaN or infinity would enter the model as is
                values = np.asarray(img)
                bad = int((~np.isfinite(values)).sum())
                if bad:
                    return f"{bad} of {values.size} pixels are NaN or infinite (a float image)"
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except Image.DecompressionBombError as err:
        return too_large(err)
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        return f"cannot be decoded ({err})"
    return None


def scan_folder(
    root: str | Path, labels_csv: str | Path | None = None, strict: bool = False
) -> tuple[list[Path], list[int], list[str]]:
    """Readable images under ``root`` with their labels (-1 when unlabelled) and the class names.

    Every file is decoded once, or on a folder of more than ``FULL_CHECK_LIMIT`` files its header is read
    (:mod:`mimsdk.scan`); verdicts are cached by path, size and mtime. Raises DataError for a missing or
    empty folder, or (``strict``) any unreadable file.
    """
    root = Path(root)
    files = POLICY.walk(root, "files; expected images (JPEG, PNG, ...)")
    decode = len(files) <= FULL_CHECK_LIMIT
    verdicts = VerdictCache(root, "images-full" if decode else "images-header")
    reasons = verdicts.check(files, lambda path: check_image(path, decode), POLICY.threads)
    problems = [f"{path}: {reason}" if reason else None for path, reason in zip(files, reasons)]
    good = [files[i] for i in POLICY.settle(root, problems, strict)]
    labels, classes = label_files(good, root, labels_csv)
    return good, labels, classes


class ImageFiles:
    """Image files -> stored samples ``{"image": the file's bytes, "label": int}``: for natural images the
    stored half of the preparation is the file itself (decoding is the work; re-encoding would add loss and
    no speed). With ``verify`` each file is also decoded whole, so a shard never stores one that cannot be."""

    def __init__(self, files: list[Path], labels: list[int], classes: list[str], verify: bool = False) -> None:
        self.files, self.labels, self.classes, self.verify = files, labels, classes, verify

    def __len__(self) -> int:
        return len(self.files)

    def source(self, index: int) -> str:
        return str(self.files[index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        if self.verify and (reason := check_image(path)):
            raise DataError(f"{path}: {reason}")
        try:
            return {"image": path.read_bytes(), "label": self.labels[index]}
        except OSError as err:
            raise DataError(f"{path}: cannot be read ({err})") from err


class FinishImage:
    """A stored image -> tensor C×H×W: decoded by Pillow to RGB or grayscale, then ``transform``."""

    def __init__(self, transform: Any, channels: int) -> None:
        self.transform, self.mode = transform, {1: "L", 3: "RGB"}[channels]

    def __call__(self, sample: dict[str, Any]) -> torch.Tensor:
        try:
            with Image.open(io.BytesIO(sample["image"])) as img:
                img = img.convert(self.mode)
        except Image.DecompressionBombError as err:
            raise DataError(too_large(err)) from err
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError) as err:
            raise DataError(f"cannot be decoded ({err})") from err
        return self.transform(img)


@ADAPTERS.register("images")
class ImagesAdapter(Adapter):
    """Natural images: RGB (``model.in_chans`` 3) or grayscale (1), MAE's random resized crop and flip."""

    name = "images"
    uses = ("crop_scale", "hflip", "mean", "std")
    policy = POLICY

    def scan(self, path: str | Path, data: DataConfig) -> tuple[list[Path], list[int], list[str]]:
        return self.remember(path, data, None, lambda: scan_folder(path, data.labels, data.strict))

    def _stats(self, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        if model.in_chans not in (1, 3):
            raise DataError(
                f"model.in_chans is {model.in_chans}; natural images have 1 (grayscale) or 3 (RGB) channels"
            )
        rgb = model.in_chans == 3
        return normalisation(
            data.mean, data.std, model.in_chans, IMAGENET_MEAN if rgb else [0.5], IMAGENET_STD if rgb else [0.25]
        )

    def transform(self, data: DataConfig, model: ModelConfig, train: bool) -> v2.Compose:
        if len(model.input_size) != 2:
            raise DataError(f"model.input_size {model.input_size} is not 2D (height, width) as images need")
        mean, std = self._stats(data, model)
        size = list(model.input_size)
        if train:
            bicubic = v2.InterpolationMode.BICUBIC
            steps = [v2.RandomResizedCrop(size, scale=self.crop_scale(data), interpolation=bicubic)]
            steps += [v2.RandomHorizontalFlip()] if self.hflip(data) else []
        else:
            steps = [v2.Resize(min(size), interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(size)]
        return v2.Compose([v2.PILToTensor(), *steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def build(self, path: Path, data: DataConfig, model: ModelConfig, opts: None, train: bool) -> PreparedDataset:
        return PreparedDataset(self.prepared(path, data, model, opts), self.finish(data, model, opts, train))

    def prepared(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: None, verify: bool = False
    ) -> ImageFiles:
        files, labels, classes = self.scan(path, data)
        return ImageFiles(files, labels, classes, verify)

    def finish(self, data: DataConfig, model: ModelConfig, opts: None, train: bool) -> FinishImage:
        return FinishImage(self.transform(data, model, train), model.in_chans)

    def describe(self, data: DataConfig, model: ModelConfig, opts: None) -> dict[str, Any]:
        mean, std = self._stats(data, model)
        names = ["red", "green", "blue"] if model.in_chans == 3 else ["gray"]
        return {"channel_names": names, "mean": mean, "std": std}

    def picture_rows(self, recon: dict[str, torch.Tensor], model: ModelConfig, index: int) -> list[list[np.ndarray]]:
        """One row per sample: original | masked (grey patches) | reconstruction."""

        def show(t: torch.Tensor, masked: torch.Tensor | None = None) -> np.ndarray:
            img = unnormalise(t, model).permute(1, 2, 0).numpy()
            if masked is not None:
                img = grey_out(img, masked.detach().float().cpu()[0].numpy()[..., None])
            return img[..., 0] if img.shape[2] == 1 else img

        x = recon["input"][index]
        return [[show(x), show(x, recon["mask"][index]), show(recon["reconstruction"][index])]]

    def sample_path(self) -> Path:
        return _installed_sample()
