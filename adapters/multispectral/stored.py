"""The stored half of the multispectral preparation: scenes cut into chips, each read as stored, and tiled.

A stored sample is one chip of one scene (:func:`chip_grid`): every recipe band and date, in the recipe's order,
coarse bands resampled onto the scene's grid, in the files' own integer type where that is exact
(:func:`~mimsdk.adapters.multispectral.scenes.stored_dtype`) with the places that are no data packed as bits
beside it. A shard holds exactly that; a folder gives the same sample, read window by window where no band is
resampled (a window of a file is bit for bit the same part of the chip read whole), so a folder and its shards
train alike. :class:`Tiles` then says which window of which chip each item of an epoch is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio.windows import Window

from mimsdk.adapters.multispectral.options import MultispectralOptions
from mimsdk.adapters.multispectral.scenes import Scene, read_stored, read_window
from mimsdk.data import Prepared
from mimsdk.errors import DataError

CENTER = "center"  # an item's corner: the chip's centre window (evaluation)


def chip_grid(height: int, width: int, side: int) -> list[tuple[int, int, int, int]]:
    """Chips ``(row, col, height, width)`` of a height×width scene, row-major: along an axis of at least
    ``2 * side`` pixels, pieces of ``side`` with the last taking the rest (``side`` to ``2 * side - 1``), so
    no chip is smaller than ``side`` and none overlaps; a shorter axis is whole."""

    def cuts(n: int) -> list[tuple[int, int]]:
        k = max(1, n // side)
        return [(i * side, side if i < k - 1 else n - i * side) for i in range(k)]

    return [(r, c, h, w) for r, h in cuts(height) for c, w in cuts(width)]


def pack_valid(valid: np.ndarray) -> np.ndarray:
    """T×C×h×w bool (True: data) -> 1-D uint8: empty when every value is data (most scenes), else packed bits."""
    return np.zeros(0, np.uint8) if valid.all() else np.packbits(valid.ravel())


def unpack_valid(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """:func:`pack_valid` undone: bool of ``shape``."""
    if packed.size == 0:
        return np.ones(shape, dtype=bool)
    return np.unpackbits(packed, count=int(np.prod(shape))).astype(bool).reshape(shape)


class ArrayChip:
    """A stored chip in memory (a shard's sample): ``shape`` T×C×H×W, windows cut from its arrays."""

    def __init__(self, pixels: np.ndarray, valid: np.ndarray) -> None:
        self.pixels, self.valid, self.shape = pixels, valid, tuple(pixels.shape)

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """T×C×height×width float32 of the window at (row, col), NaN where no data."""
        values = self.pixels[..., row : row + height, col : col + width].astype(np.float32)
        values[~self.valid[..., row : row + height, col : col + width]] = np.nan
        return values


class WindowChip:
    """A chip of a scene on disk (a folder's sample), read window by window: what :class:`ArrayChip` of the
    chip read whole gives, without reading the rest of the chip (a 96² tile of a 512² chip: 1/28 of it)."""

    def __init__(self, scene: Scene, window: tuple[int, int, int, int], nodata: float | None) -> None:
        self.scene, self.nodata = scene, nodata
        self.row, self.col, height, width = window
        self.shape = (len(scene.dates), sum(len(s.positions) for s in scene.dates[0]), height, width)

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        return read_window(self.scene, self.where(row, col, height, width), self.nodata)

    def where(self, row: int, col: int, height: int, width: int) -> Window:
        """The window on the scene's grid, for messages and reading."""
        return Window(self.col + col, self.row + row, width, height)


def source_bytes(path: Path) -> bytes:
    """A scene's path as bytes: litdata stores a ``str`` naming an existing .tif as the file itself (a media
    file), which would put every band of the file into each shard sample."""
    return str(path).encode("utf-8", "surrogateescape")


def source_name(sample: dict[str, Any]) -> str:
    """:func:`source_bytes` undone, for messages."""
    source = sample.get("source", b"a stored sample")
    if isinstance(source, (bytes, memoryview)):  # litdata gives bytes back as a memoryview
        return bytes(source).decode("utf-8", "surrogateescape")
    return str(source)


def resampled(scene: Scene) -> bool:
    """Whether some band of ``scene`` is read onto a finer grid (its windows then differ from the chip's parts)."""
    return any(src.scale != 1.0 for sources in scene.dates for src in sources)


class SceneChips:
    """Scenes -> stored samples, one per chip, scenes in order (a :class:`~mimsdk.data.Prepared`).

    Sample: ``pixels`` T×C×h×w (stored type), ``valid`` (:func:`pack_valid`), ``label``, ``source`` (the scene's
    path, :func:`source_bytes`), ``window`` int64 [row, col, h, w] of the chip in the scene, ``transform``
    float64[6] (the chip's affine pixel -> map) and ``crs`` (its string; "" without one). ``lazy`` (a folder
    read for training): a chip with no resampled band gives ``chip``, a :class:`WindowChip`, in place of
    ``pixels`` and ``valid``.
    ``verify`` (writing shards): a chip that is all nodata is an error naming its scene, never stored.
    """

    def __init__(
        self,
        scenes: list[Scene],
        classes: list[str],
        root: Path,
        opts: MultispectralOptions,
        verify: bool = False,
        lazy: bool = False,
    ) -> None:
        self.scenes, self.classes, self.root, self.nodata = scenes, classes, root, opts.nodata
        self.verify, self.lazy = verify, lazy
        self.chips = [(i, *c) for i, s in enumerate(scenes) for c in chip_grid(s.height, s.width, opts.chip_size)]

    def __len__(self) -> int:
        return len(self.chips)

    def source(self, index: int) -> str:
        return str(self.scenes[self.chips[index][0]].path)

    def sizes(self) -> list[tuple[int, int]]:
        """(height, width) of every chip, in order."""
        return [(h, w) for _, _, _, h, w in self.chips]

    def __getitem__(self, index: int) -> dict[str, Any]:
        s, row, col, height, width = self.chips[index]
        scene = self.scenes[s]
        window = Window(col, row, width, height)
        t = scene.transform or Affine.identity()  # the chip's own: the scene's, moved to the chip's corner
        transform = [t.a, t.b, t.c + col * t.a + row * t.b, t.d, t.e, t.f + col * t.d + row * t.e]
        sample = {
            "label": scene.label,
            "source": source_bytes(scene.path),
            "window": np.array([row, col, height, width], np.int64),
            "transform": np.array(transform, np.float64),
            "crs": scene.crs.to_string() if scene.crs else "",
        }
        if self.lazy and not resampled(scene):
            return {**sample, "chip": WindowChip(scene, (row, col, height, width), self.nodata)}
        pixels, valid = read_stored(scene, window, self.nodata)
        if self.verify and not valid.any():
            raise DataError(f"{scene.path}: every pixel of the chip at {window} is nodata; not stored")
        return {**sample, "pixels": pixels, "valid": pack_valid(valid)}


def chip_of(sample: dict[str, Any]) -> ArrayChip | WindowChip:
    """The chip a stored sample holds (a shard's arrays, or a folder's window reader)."""
    if "chip" in sample:
        return sample["chip"]
    pixels = sample["pixels"]
    return ArrayChip(pixels, unpack_valid(sample["valid"], tuple(pixels.shape)))


class Tiles:
    """The items of an epoch over stored chips (a :class:`~mimsdk.data.Prepared`): item -> the chip's sample
    with ``corner``, the window's top-left (row, col) in the chip, :data:`CENTER`, or None (drawn by finish).

    Modes: ``train``, ``repeat`` (tiles_per_scene) items per chip, windows drawn at random; ``center``, one per
    chip, its centre window; ``grid``, every whole ``tile`` window of each chip (``sizes``), row-major.
    The index is arithmetic, never a list of items: a chip of a 10980² scene times 10^5 tiles costs nothing.
    """

    def __init__(
        self,
        prepared: Prepared,
        mode: str,
        repeat: int = 1,
        sizes: list[tuple[int, int]] | None = None,
        tile: tuple[int, int] = (1, 1),
    ) -> None:
        self.prepared, self.mode, self.repeat, self.tile = prepared, mode, repeat, tile
        self.classes = list(prepared.classes)
        if mode == "grid":
            if sizes is None or len(sizes) != len(prepared):
                raise ValueError("a grid of tiles needs the size of every chip")
            self.columns = np.array([w // tile[1] for _, w in sizes], np.int64)
            counts = np.array([h // tile[0] for h, _ in sizes], np.int64) * self.columns
            self.starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        if self.mode == "grid":
            return int(self.starts[-1])
        return len(self.prepared) * (self.repeat if self.mode == "train" else 1)

    def locate(self, index: int) -> tuple[int, Any]:
        """(chip, corner) of item ``index``."""
        if self.mode == "train":
            return index // self.repeat, None
        if self.mode != "grid":
            return index, CENTER
        chip = int(np.searchsorted(self.starts, index, side="right")) - 1
        row, col = divmod(index - int(self.starts[chip]), int(self.columns[chip]))
        return chip, (row * self.tile[0], col * self.tile[1])

    def source(self, index: int) -> str:
        return self.prepared.source(self.locate(index)[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        chip, corner = self.locate(index)
        return {**self.prepared[chip], "corner": corner}


def run_lengths(sizes: list[tuple[int, int]]) -> list[list[int]]:
    """[(h, w), ...] -> [[h, w, repeats], ...]: a shard set of 10^6 equal chips keeps one entry."""
    runs: list[list[int]] = []
    for h, w in sizes:
        if runs and runs[-1][:2] == [h, w]:
            runs[-1][2] += 1
        else:
            runs.append([h, w, 1])
    return runs
