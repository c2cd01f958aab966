"""Natural images: folders of files Pillow reads, MAE's augmentation, reconstruction pictures.

Labels come from class sub-folders (``root/<class>/<file>``) or a CSV with
columns ``path,label`` (paths relative to the CSV's folder). Unreadable files
are found before training: one warning each, naming the file, and a count; in
``strict`` mode the first one is an error.
"""

from __future__ import annotations

import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms import v2

from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import DataError, normalisation
from mimsdk.labels import label_files
from mimsdk.picture import grid

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _installed_sample() -> Path:
    """The sample as installed (editable or wheel) beside the mimsdk package."""
    import mimsdk

    return Path(mimsdk.__file__).parent / "sample" / "images"


def check_image(path: Path) -> str | None:
    """None if Pillow decodes ``path`` completely, else the reason it cannot."""
    try:
        with Image.open(path) as img:
            img.load()  # decode every byte: a truncated JPEG fails here, not in verify()
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as err:
        return f"cannot be decoded ({err})"
    return None


def scan_folder(
    root: str | Path, labels_csv: str | Path | None = None, strict: bool = False
) -> tuple[list[Path], list[int], list[str]]:
    """Readable images under ``root`` with their labels (-1 when unlabelled) and the class names.

    Raises DataError for a missing or empty folder, or (``strict``) any unreadable file.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    files = (
        [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    )
    if not files:
        raise DataError(f"data folder {root} holds no files; expected images (JPEG, PNG, ...)")
    with ThreadPoolExecutor(max_workers=8) as pool:
        reasons = list(pool.map(check_image, files))
    bad = [(f, r) for f, r in zip(files, reasons) if r]
    if bad and strict:
        f, r = bad[0]
        raise DataError(f"{f}: {r} (strict mode; {len(bad)} unreadable file(s) in {root})")
    for f, r in bad:
        warnings.warn(f"skipping {f}: {r}", stacklevel=2)
    good = [f for f, r in zip(files, reasons) if not r]
    if bad:
        warnings.warn(f"skipped {len(bad)} of {len(files)} files in {root}; training on {len(good)}", stacklevel=2)
    if not good:
        raise DataError(f"data folder {root} holds no readable images ({len(bad)} unreadable files)")

    labels, classes = label_files(good, root, labels_csv)
    return good, labels, classes


class ImageDataset(torch.utils.data.Dataset):
    """Image files -> (tensor C×H×W, label). C is 3 (RGB) or 1 (grayscale)."""

    def __init__(self, files: list[Path], labels: list[int], classes: list[str], transform: Any, channels: int) -> None:
        self.files, self.labels, self.classes = files, labels, classes
        self.transform = transform
        self.mode = {1: "L", 3: "RGB"}[channels]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.files[index]
        try:
            with Image.open(path) as img:
                img = img.convert(self.mode)
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{path}: cannot be decoded ({err})") from err
        return self.transform(img), self.labels[index]


class ImagesAdapter:
    name = "images"

    def __init__(self) -> None:
        # A run asks for the training and the evaluation view of one folder: scan
        # (and warn about) its files once.
        self._scans: dict[tuple, tuple[list[Path], list[int], list[str]]] = {}

    def scan(self, path: str | Path, data: DataConfig) -> tuple[list[Path], list[int], list[str]]:
        key = (str(Path(path).resolve()), data.labels, data.strict)
        if key not in self._scans:
            self._scans[key] = scan_folder(path, data.labels, data.strict)
        return self._scans[key]

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
            steps = [
                v2.RandomResizedCrop(size, scale=tuple(data.crop_scale), interpolation=v2.InterpolationMode.BICUBIC)
            ]
            steps += [v2.RandomHorizontalFlip()] if data.hflip else []
        else:
            steps = [v2.Resize(min(size), interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(size)]
        return v2.Compose([v2.PILToTensor(), *steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def dataset(self, path: str | Path, data: DataConfig, model: ModelConfig, train: bool) -> ImageDataset:
        files, labels, classes = self.scan(path, data)
        return ImageDataset(files, labels, classes, self.transform(data, model, train), model.in_chans)

    def metadata(self, data: DataConfig, model: ModelConfig) -> dict[str, Any]:
        mean, std = self._stats(data, model)
        names = ["red", "green", "blue"] if model.in_chans == 3 else ["gray"]
        return {"channel_names": names, "mean": mean, "std": std}

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        """Rows of samples; columns original | masked | reconstruction."""
        meta = model.metadata
        mean = torch.tensor(meta.get("mean", [0.0] * model.in_chans)).view(-1, 1, 1)
        std = torch.tensor(meta.get("std", [1.0] * model.in_chans)).view(-1, 1, 1)

        def show(t: torch.Tensor, masked: torch.Tensor | None = None) -> np.ndarray:
            img = (t.detach().float().cpu() * std + mean).permute(1, 2, 0).numpy()
            if masked is not None:  # grey out masked patches
                m = masked.detach().float().cpu()[0].numpy()[..., None]
                img = img * (1 - m) + 0.5 * m
            return img[..., 0] if img.shape[2] == 1 else img

        rows = [
            [show(recon["input"][i]), show(recon["input"][i], recon["mask"][i]), show(recon["reconstruction"][i])]
            for i in range(recon["input"].shape[0])
        ]
        return grid(rows, ["original", "masked", "reconstruction"])

    def sample_path(self) -> Path:
        return _installed_sample()


ADAPTER = ImagesAdapter()
