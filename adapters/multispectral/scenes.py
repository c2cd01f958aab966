"""Scenes: the files one place's bands (and dates) come from, found, checked and read by window."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from mimsdk.adapter import ScanPolicy, readable_path
from mimsdk.adapters.multispectral.bands import BANDS, pick_bands
from mimsdk.adapters.multispectral.options import MultispectralOptions
from mimsdk.data import first_line
from mimsdk.errors import DataError
from mimsdk.labels import label_files

TIFF_SUFFIXES = (".tif", ".tiff")
POLICY = ScanPolicy(unit="scenes")
# Scenes above which the check before training reads headers only (no pixel): at ~5 ms a last-block decode,
# 2,000 scenes cost ~10 s on one core, about what a user waits for without a progress bar; a corpus of 10^6
# would cost an hour. A file that then fails to decode is skipped when read (SampleDataset), named once.
BIG_FOLDER = 2000
# Stored pixels keep the files' integer type when it is at most this wide (EuroSAT's uint16 reflectances: half
# the bytes of float32, exactly); wider integers and floats are stored as float32, the type training reads.
COMPACT_BYTES = 2


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
    dtype: str = ""  # the data type of its (first) file's bands
    note: str | None = None  # a word to say about a usable scene (another data type), said once by the adapter


def unreadable(err: Exception) -> str:
    """The reason rasterio gives for a file it cannot read: GDAL's own message where rasterio wraps it
    ("Read failed. See previous exception for details.")."""
    cause = err.__cause__ or err.__context__
    text = first_line(str(cause)) if cause is not None and "previous exception" in str(err) else ""
    return f"cannot be read by rasterio ({text or first_line(str(err)) or type(err).__name__})"


def crs_kind(crs: Any) -> str:
    """What a CRS measures pixels in: ``projected (metre)``, ``geographic (degrees)`` or ``none``."""
    if crs is None:
        return "none"
    if crs.is_geographic:
        return "geographic (degrees)"
    return f"projected ({crs.linear_units or 'unknown units'})"


def check_header(
    ds: Any, path: Path, opts: MultispectralOptions, indexes: list[int], headers_only: bool = False
) -> None:
    """What the header allows before the statistics pass reads every block: a grid of at most ``max_pixels``,
    and (unless ``headers_only``: a big folder) a last pixel that can be read (a truncated file loses its last
    blocks first)."""
    if ds.width * ds.height > opts.max_pixels:
        raise DataError(
            f"{path}: its header claims {ds.width}×{ds.height} pixels ({ds.width * ds.height:,}), more than "
            f"data.options.max_pixels={opts.max_pixels:,}; not read (raise data.options.max_pixels to use it)"
        )
    if headers_only:
        return
    try:
        ds.read(indexes, window=Window(ds.width - 1, ds.height - 1, 1, 1))
    except RasterioError as err:
        raise DataError(f"{path}: truncated or corrupt: its last pixel cannot be read ({unreadable(err)})") from err


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


def open_stack(path: Path, opts: MultispectralOptions, bands: list[str], headers_only: bool = False) -> Scene:
    """A one-date scene of a stack file's ``bands``; DataError if unusable."""
    try:
        with readable_path(path) as name, rasterio.open(name) as ds:
            names = band_names(ds, path, opts, bands)
            picked = pick_bands(names, bands, opts.select_bands, str(path))
            source = Source(path, [i + 1 for i in picked], list(range(len(bands))), 1.0)
            check_header(ds, path, opts, source.indexes, headers_only)
            dtype = ds.dtypes[picked[0]]
            return Scene(path, [[source]], ds.height, ds.width, ds.res[0], ds.crs, ds.transform, dtype=dtype)
    except RasterioError as err:
        raise DataError(f"{path}: {unreadable(err)}") from err


def band_file_scene(
    folder: Path,
    files: list[Path],
    bands: list[str],
    opts: MultispectralOptions | None = None,
    headers_only: bool = False,
) -> Scene:
    """A scene from one single-band file per band, named ``*_<band>.tif``; the finest file sets the grid."""
    by_band = {b: f for b in bands for f in files if f.stem.upper().endswith("_" + b)}
    missing = [b for b in bands if b not in by_band]
    if missing:
        raise DataError(f"{folder} has no file for bands {', '.join(missing)} (expected *_<band>.tif for each)")
    grids = {}
    opts = opts or MultispectralOptions()
    for band in bands:
        try:
            with readable_path(by_band[band]) as name, rasterio.open(name) as ds:
                if ds.count != 1:
                    raise DataError(f"{by_band[band]} has {ds.count} bands; a band file holds one ({band})")
                check_header(ds, by_band[band], opts, [1], headers_only)
                grids[band] = (ds.width, ds.height, ds.res[0], ds.crs, ds.transform, ds.dtypes[0])
        except RasterioError as err:
            raise DataError(f"{by_band[band]}: {unreadable(err)}") from err
    width, height, res, crs, transform, _ = max(grids.values(), key=lambda g: g[0])
    dtype = np.result_type(*[g[5] for g in grids.values()]).name  # one type holds every band's values
    sources = [Source(by_band[b], [1], [i], grids[b][0] / width) for i, b in enumerate(bands)]
    return Scene(folder, [sources], height, width, res, crs, transform, dtype=dtype)


def find_scenes(
    root: Path,
    opts: MultispectralOptions,
    bands: list[str],
    frames: int,
    strict: bool,
    tile: tuple[int, int] | None = None,
) -> list[Scene]:
    """Every usable scene under ``root``: a stack file each, or (``band_files``, ``series``) a folder each.

    Each unusable scene is a warning naming it, or with ``strict`` an error (:class:`~mimsdk.adapter.ScanPolicy`):
    unreadable, a header over ``max_pixels``, a last pixel that cannot be read (truncated), smaller than the
    ``tile`` (height, width), or a CRS of another kind than most scenes' (degrees among metres). A scene whose
    data type differs from most scenes' is named in a warning (an error with ``strict``) and kept: the
    statistics pass judges its values. Above :data:`BIG_FOLDER` scenes, headers only are read (no last pixel).
    """
    files = POLICY.walk(root, "GeoTIFF (.tif, .tiff) files", lambda p: p.suffix.lower() in TIFF_SUFFIXES)
    if opts.layout == "stack":
        groups = [(f, [f]) for f in files]
    else:
        folders: dict[Path, list[Path]] = {}
        for f in files:
            folders.setdefault(f.parent, []).append(f)
        groups = sorted(folders.items())
    headers_only = len(groups) > BIG_FOLDER

    def probe(group: tuple[Path, list[Path]]) -> Scene:
        key, members = group
        if opts.layout == "band_files":
            scene = band_file_scene(key, members, bands, opts, headers_only)
        else:
            if opts.layout == "series" and len(members) < frames:
                raise DataError(f"{key} holds {len(members)} dates (GeoTIFFs); model.input_size asks for {frames}")
            dates = [open_stack(f, opts, bands, headers_only) for f in members[:frames]]
            sizes = {(d.height, d.width) for d in dates}
            if len(sizes) > 1:
                raise DataError(f"{key}: its dates differ in size {sorted(sizes)}; a series needs one grid")
            scene = dates[0]
            scene.path, scene.dates = key, [d.dates[0] for d in dates]
            scene.dtype = np.result_type(*[d.dtype for d in dates]).name
        if tile is not None and (scene.height < tile[0] or scene.width < tile[1]):
            raise DataError(
                f"{key}: {scene.height}×{scene.width} pixels, smaller than the {tile[0]}×{tile[1]} tile "
                "(model.input_size)"
            )
        return scene

    results = POLICY.probe(groups, probe)
    problems = [str(r) if isinstance(r, DataError) else None for r in results]
    usable = [r for r in results if isinstance(r, Scene)]
    kinds = Counter(crs_kind(s.crs) for s in usable)
    dtypes = Counter(s.dtype for s in usable)
    if len(kinds) > 1:
        usual, count = kinds.most_common(1)[0]
        for i, r in enumerate(results):
            if isinstance(r, Scene) and crs_kind(r.crs) != usual:
                problems[i] = (
                    f"{r.path}: its CRS ({r.crs}) is {crs_kind(r.crs)}, where {count} of {len(usable)} scenes are "
                    f"{usual}; its pixel size ({r.spacing:g}) would be read in other units"
                )
    kept = [results[i] for i in POLICY.settle(root, problems, strict)]
    if len(dtypes) > 1:
        usual, count = dtypes.most_common(1)[0]
        for scene in kept:
            if scene.dtype != usual:
                note = f"its bands are {scene.dtype}, where {count} of {len(usable)} scenes are {usual}"
                if strict:
                    raise DataError(f"{scene.path}: {note} (strict mode: scenes of one data type only)")
                scene.note = note  # said by the adapter once, with what the statistics pass finds in it
    return kept


def stored_dtype(scene: Scene) -> np.dtype:
    """The type a scene's pixels are stored in: its integer type up to :data:`COMPACT_BYTES` wide when no band
    is resampled (exact), else float32 (what a resampled band, a float or a wider integer is read as today)."""
    dtype = np.dtype(scene.dtype or "float32")
    resampled = any(src.scale != 1.0 for sources in scene.dates for src in sources)
    if dtype.kind in "ui" and dtype.itemsize <= COMPACT_BYTES and not resampled:
        return dtype
    return np.dtype("float32")


def read_stored(scene: Scene, window: Window, nodata: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of ``window`` (on the scene's grid) of every band and date as stored (T×C×h×w, in
    :func:`stored_dtype`) and where they are data (T×C×h×w bool: not the file's nodata or mask, not ``nodata``,
    finite). A float array holds NaN where no data too; an integer one keeps the file's value there."""
    h, w = int(window.height), int(window.width)
    channels = sum(len(s.positions) for s in scene.dates[0])
    dtype = stored_dtype(scene)
    out = np.empty((len(scene.dates), channels, h, w), dtype=dtype)
    valid = np.empty(out.shape, dtype=bool)
    for t, sources in enumerate(scene.dates):
        for src in sources:
            win = window if src.scale == 1.0 else Window(*(v * src.scale for v in window.flatten()))
            try:
                with readable_path(src.path) as name, rasterio.open(name) as ds:
                    data = ds.read(
                        src.indexes, window=win, out_shape=(len(src.indexes), h, w), masked=True,
                        out_dtype=dtype, resampling=Resampling.bilinear,
                    )  # fmt: skip
            except RasterioError as err:
                raise DataError(f"{src.path}: {unreadable(err)} at window {window}") from err
            values = np.ma.getdata(data)
            good = ~np.ma.getmaskarray(data)
            if dtype.kind == "f":
                good &= np.isfinite(values)  # ±inf (or a value float32 cannot hold) is no data too
            if nodata is not None:
                good &= values != nodata
            out[t, src.positions] = values
            valid[t, src.positions] = good
    if dtype.kind == "f":
        out[~valid] = np.nan
    return out, valid


def read_window(scene: Scene, window: Window, nodata: float | None = None) -> np.ndarray:
    """Pixels of ``window`` (on the scene's grid) of every band and date: T×C×h×w float32, NaN where no data
    (nodata, and any value that is not finite)."""
    pixels, valid = read_stored(scene, window, nodata)
    values = pixels.astype(np.float32)
    values[~valid] = np.nan
    return values


def attach_labels(scenes: list[Scene], root: Path, labels_csv: str | None) -> list[str]:
    """Set each scene's label from a CSV (``path,label``, relative to the CSV) or class sub-folders."""
    labels, classes = label_files([s.path for s in scenes], root, labels_csv)
    for scene, label in zip(scenes, labels):
        scene.label = label
    return classes
