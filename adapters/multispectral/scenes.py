"""Scenes: the files one place's bands (and dates) come from, found, checked and read by window."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from mimsdk.adapter import ScanPolicy
from mimsdk.adapters.multispectral.bands import BANDS, pick_bands
from mimsdk.adapters.multispectral.options import MultispectralOptions
from mimsdk.errors import DataError
from mimsdk.labels import label_files

TIFF_SUFFIXES = (".tif", ".tiff")
POLICY = ScanPolicy(unit="scenes")


@dataclass
class Source:
    """Bands read from one file: ``indexes`` (1-based, in the file) fill ``positions`` of the output."""

    path: Path
    indexes: list[int]
    positions: list[int]
    scale: float  # the file's pixels per pixel of the scene grid (0.5 for a 20 m band on a 10 m grid)


@dataclass
class Scene:
    """One place: ``dates`` lists, per date, the files its bands come from; the grid is the finest file's."""

    path: Path
    dates: list[list[Source]]
    height: int
    width: int
    spacing: float
    crs: Any = None  # rasterio CRS of the grid
    transform: Any = None  # affine pixel -> map transform of the grid
    label: int = -1


def unreadable(err: Exception) -> str:
    """The reason rasterio gives for a file it cannot read."""
    return f"cannot be read by rasterio ({str(err).strip() or type(err).__name__})"


def band_names(ds: Any, path: Path, opts: MultispectralOptions, bands: list[str]) -> list[str]:
    """Band names of open ``ds``: its descriptions, else ``file_bands``, else the recipe's when the counts match."""
    described = [d for d in ds.descriptions if d in BANDS]
    if len(described) == ds.count:
        return list(ds.descriptions)
    if opts.file_bands:
        if len(opts.file_bands) != ds.count:
            raise DataError(
                f"{path} has {ds.count} bands but data.options.file_bands names {len(opts.file_bands)} "
                f"({', '.join(opts.file_bands)})"
            )
        return list(opts.file_bands)
    if ds.count == len(bands):
        return list(bands)
    raise DataError(
        f"{path} has {ds.count} bands; the recipe names {len(bands)} ({', '.join(bands)}) and the file's band "
        "descriptions name none of them: name the file's bands in data.options.file_bands "
        "(and set data.options.select_bands: true to take the recipe's bands from them)"
    )


def open_stack(path: Path, opts: MultispectralOptions, bands: list[str]) -> Scene:
    """A one-date scene of a stack file's ``bands``; DataError if unusable."""
    try:
        with rasterio.open(path) as ds:
            names = band_names(ds, path, opts, bands)
            picked = pick_bands(names, bands, opts.select_bands, str(path))
            source = Source(path, [i + 1 for i in picked], list(range(len(bands))), 1.0)
            return Scene(path, [[source]], ds.height, ds.width, ds.res[0], ds.crs, ds.transform)
    except RasterioError as err:
        raise DataError(f"{path}: {unreadable(err)}") from err


def band_file_scene(folder: Path, files: list[Path], bands: list[str]) -> Scene:
    """A scene from one single-band file per band, named ``*_<band>.tif``; the finest file sets the grid."""
    by_band = {b: f for b in bands for f in files if f.stem.upper().endswith("_" + b)}
    missing = [b for b in bands if b not in by_band]
    if missing:
        raise DataError(f"{folder} has no file for bands {', '.join(missing)} (expected *_<band>.tif for each)")
    grids = {}
    for band in bands:
        try:
            with rasterio.open(by_band[band]) as ds:
                if ds.count != 1:
                    raise DataError(f"{by_band[band]} has {ds.count} bands; a band file holds one ({band})")
                grids[band] = (ds.width, ds.height, ds.res[0], ds.crs, ds.transform)
        except RasterioError as err:
            raise DataError(f"{by_band[band]}: {unreadable(err)}") from err
    width, height, res, crs, transform = max(grids.values(), key=lambda g: g[0])
    sources = [Source(by_band[b], [1], [i], grids[b][0] / width) for i, b in enumerate(bands)]
    return Scene(folder, [sources], height, width, res, crs, transform)


def find_scenes(root: Path, opts: MultispectralOptions, bands: list[str], frames: int, strict: bool) -> list[Scene]:
    """Every usable scene under ``root``: a stack file each, or (``band_files``, ``series``) a folder each.

    Each unusable scene is a warning naming it, or with ``strict`` an error (:class:`~mimsdk.adapter.ScanPolicy`).
    """
    files = POLICY.walk(root, "GeoTIFF (.tif, .tiff) files", lambda p: p.suffix.lower() in TIFF_SUFFIXES)
    if opts.layout == "stack":
        groups = [(f, [f]) for f in files]
    else:
        folders: dict[Path, list[Path]] = {}
        for f in files:
            folders.setdefault(f.parent, []).append(f)
        groups = sorted(folders.items())

    def probe(group: tuple[Path, list[Path]]) -> Scene:
        key, members = group
        if opts.layout == "band_files":
            return band_file_scene(key, members, bands)
        if opts.layout == "series" and len(members) < frames:
            raise DataError(f"{key} holds {len(members)} dates (GeoTIFFs); model.input_size asks for {frames}")
        dates = [open_stack(f, opts, bands) for f in members[:frames]]
        sizes = {(d.height, d.width) for d in dates}
        if len(sizes) > 1:
            raise DataError(f"{key}: its dates differ in size {sorted(sizes)}; a series needs one grid")
        first = dates[0]
        first.path, first.dates = key, [d.dates[0] for d in dates]
        return first

    return [scene for _, scene in POLICY.check(root, groups, probe, strict)]


def read_window(scene: Scene, window: Window, nodata: float | None = None) -> np.ndarray:
    """Pixels of ``window`` (on the scene's grid) of every band and date: T×C×h×w float32, NaN where no data."""
    h, w = int(window.height), int(window.width)
    channels = sum(len(s.positions) for s in scene.dates[0])
    out = np.empty((len(scene.dates), channels, h, w), dtype=np.float32)
    for t, sources in enumerate(scene.dates):
        for src in sources:
            win = window if src.scale == 1.0 else Window(*(v * src.scale for v in window.flatten()))
            try:
                with rasterio.open(src.path) as ds:
                    data = ds.read(
                        src.indexes, window=win, out_shape=(len(src.indexes), h, w), masked=True,
                        out_dtype="float32", resampling=Resampling.bilinear,
                    )  # fmt: skip
            except RasterioError as err:
                raise DataError(f"{src.path}: {unreadable(err)} at window {window}") from err
            values = np.ma.filled(data, np.nan)
            if nodata is not None:
                values[values == nodata] = np.nan
            out[t, src.positions] = values
    return out


def attach_labels(scenes: list[Scene], root: Path, labels_csv: str | None) -> list[str]:
    """Set each scene's label from a CSV (``path,label``, relative to the CSV) or class sub-folders."""
    labels, classes = label_files([s.path for s in scenes], root, labels_csv)
    for scene, label in zip(scenes, labels):
        scene.label = label
    return classes
