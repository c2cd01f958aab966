"""Multispectral satellite imagery through rasterio: named bands, nodata, windows, streaming statistics.

Layouts (``data.options.layout``):

- ``stack``: one GeoTIFF or Cloud-Optimised GeoTIFF per scene holding several bands (EuroSAT-MS);
- ``band_files``: a folder per scene with one file per band, ``*_B02.tif`` ... (BigEarthNet's layout);
  bands at coarser resolution (20 m, 60 m) are resampled onto the finest band's grid on read;
- ``series``: a folder per place holding one stack per date; files sorted by name are the dates, and
  ``model.input_size`` is (T, H, W).

Bands are named (Sentinel-2 ``B01`` … ``B12``, ``B8A``; Landsat 8/9 Collection 2 ``SR_B1`` … ``SR_B7``,
``ST_B10``; see :data:`BANDS`).
A file's band names come from its band descriptions, or ``data.options.file_bands``, or, when it holds
exactly as many bands as the recipe names, the recipe's order. A file whose bands differ from the
recipe's (other count, other names, other order) is an error naming the file and the expected bands,
unless ``data.options.select_bands`` asks, explicitly, for selection and reordering by name.

Tiles are ``model.input_size`` windows read with ``rasterio.windows.Window``: a scene far larger than
memory is never read whole for one tile. Training draws ``tiles_per_scene`` random windows per scene
and epoch (torch's global RNG, so ``SeededDataset`` makes them reproducible); evaluation takes the
centre window or the grid of windows. Nodata (the file's nodata value or mask, or
``data.options.nodata``) becomes NaN, which the core leaves out of the target and the loss.

Per-band normalisation statistics are computed in one streaming pass over the files' blocks
(Chan's parallel update of count, mean and squared deviations; nodata excluded) unless
``data.mean``/``data.std`` or the model's metadata give them; they are stored with the model
together with band names, wavelengths and ground sample distances (:meth:`MultispectralAdapter.metadata`).
Use :func:`match_bands` to feed a model data whose bands are a subset or another order.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import rasterio
import torch
from PIL import Image
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from mimsdk.config import ConfigError, DataConfig, ModelConfig, adapter_options, choice
from mimsdk.data import DataError
from mimsdk.labels import label_files
from mimsdk.picture import grid

log = logging.getLogger(__name__)


class Band(NamedTuple):
    """A spectral band: centre wavelength (nm) and native ground sample distance (m)."""

    sensor: str
    wavelength: float
    gsd: float


BANDS: dict[str, Band] = {
    # Sentinel-2 MSI (ESA Sentinel-2 User Handbook; S2A central wavelengths)
    "B01": Band("sentinel2", 443, 60),
    "B02": Band("sentinel2", 490, 10),
    "B03": Band("sentinel2", 560, 10),
    "B04": Band("sentinel2", 665, 10),
    "B05": Band("sentinel2", 705, 20),
    "B06": Band("sentinel2", 740, 20),
    "B07": Band("sentinel2", 783, 20),
    "B08": Band("sentinel2", 842, 10),
    "B8A": Band("sentinel2", 865, 20),
    "B09": Band("sentinel2", 945, 60),
    "B10": Band("sentinel2", 1375, 60),
    "B11": Band("sentinel2", 1610, 20),
    "B12": Band("sentinel2", 2190, 20),
    # Landsat 8/9 Collection 2 Level-2 (USGS): surface reflectance and temperature, files *_SR_B1.TIF ...
    "SR_B1": Band("landsat8", 443, 30),
    "SR_B2": Band("landsat8", 482, 30),
    "SR_B3": Band("landsat8", 562, 30),
    "SR_B4": Band("landsat8", 655, 30),
    "SR_B5": Band("landsat8", 865, 30),
    "SR_B6": Band("landsat8", 1609, 30),
    "SR_B7": Band("landsat8", 2201, 30),
    "ST_B10": Band("landsat8", 10895, 30),  # TIRS, 100 m native, delivered resampled to 30 m
}
# EuroSAT-MS GeoTIFFs hold all 13 Sentinel-2 bands with B8A last.
EUROSAT_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"]
TRUE_COLOUR = ("B04", "B03", "B02")
FALSE_COLOUR = ("B08", "B04", "B03")
TIFF_SUFFIXES = (".tif", ".tiff")
READ_KEYS = ("file_bands", "select_bands", "layout", "nodata")


@dataclass
class MultispectralOptions:
    """``data.options`` of the multispectral adapter. Tile size is ``model.input_size``."""

    bands: list[str] = field(default_factory=list)  # the model's bands in order; []: the model's metadata bands
    file_bands: list[str] = field(default_factory=list)  # names of a file's bands in file order, if undescribed
    select_bands: bool = False  # take ``bands`` by name from files holding more bands or another order
    layout: str = choice("stack", "stack", "band_files", "series")
    nodata: float | None = None  # value meaning "no data" for files that declare none
    tiles_per_scene: int = 1  # random windows per scene and epoch in training
    eval_tiles: str = choice("center", "center", "grid")  # evaluation windows: the centre one, or all of a grid
    stats_scenes: int = 0  # scenes the statistics pass reads, evenly spaced; 0: all
    spacing: float | None = None  # metres per pixel of the tiles; None: from the files' transform


# -- statistics ----------------------------------------------------------------


class RunningStats:
    """Per-band count, mean and sum of squared deviations, merged chunk by chunk (Chan et al. 1979).

    ``update(chunk)`` takes C×N values, NaN = no data; a band's NaN never counts.
    """

    def __init__(self, channels: int) -> None:
        self.count = np.zeros(channels, dtype=np.float64)
        self.mean = np.zeros(channels, dtype=np.float64)
        self.m2 = np.zeros(channels, dtype=np.float64)

    def update(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float64).reshape(len(self.count), -1)
        valid = ~np.isnan(chunk)
        n = valid.sum(axis=1).astype(np.float64)
        if not n.any():
            return
        values = np.where(valid, chunk, 0.0)
        mean = values.sum(axis=1) / np.maximum(n, 1)
        m2 = (np.where(valid, chunk - mean[:, None], 0.0) ** 2).sum(axis=1)
        total = self.count + n
        delta = mean - self.mean
        safe = np.maximum(total, 1)
        self.mean = self.mean + delta * n / safe
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / safe
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per band."""
        return np.sqrt(self.m2 / np.maximum(self.count, 1))


# -- scenes ----------------------------------------------------------------------


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


def _reason(err: Exception) -> str:
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


def pick_bands(have: Sequence[str], want: Sequence[str], select: bool, what: str) -> list[int]:
    """Positions in ``have`` of each of ``want``; unequal lists need ``select`` and every wanted band present."""
    have, want = list(have), list(want)
    if have == want:
        return list(range(len(want)))
    missing = [b for b in want if b not in have]
    if missing:
        raise DataError(
            f"{what} lacks bands {', '.join(missing)}: it holds {', '.join(have)}; expected {', '.join(want)}"
        )
    if not select:
        extra = [b for b in have if b not in want]
        problem = f"extra bands {', '.join(extra)}" if extra else "its bands in another order"
        raise DataError(
            f"{what} holds bands {', '.join(have)} ({problem}); expected {', '.join(want)} in that order. "
            "Set data.options.select_bands: true to select and reorder them by name"
        )
    return [have.index(b) for b in want]


def open_stack(path: Path, opts: MultispectralOptions, bands: list[str]) -> Scene:
    """A one-date scene of a stack file's ``bands``; DataError if unusable."""
    try:
        with rasterio.open(path) as ds:
            names = band_names(ds, path, opts, bands)
            picked = pick_bands(names, bands, opts.select_bands, str(path))
            source = Source(path, [i + 1 for i in picked], list(range(len(bands))), 1.0)
            return Scene(path, [[source]], ds.height, ds.width, ds.res[0], ds.crs, ds.transform)
    except RasterioError as err:
        raise DataError(f"{path}: {_reason(err)}") from err


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
            raise DataError(f"{by_band[band]}: {_reason(err)}") from err
    width, height, res, crs, transform = max(grids.values(), key=lambda g: g[0])
    sources = [Source(by_band[b], [1], [i], grids[b][0] / width) for i, b in enumerate(bands)]
    return Scene(folder, [sources], height, width, res, crs, transform)


def _tiffs(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith("."))


def find_scenes(root: Path, opts: MultispectralOptions, bands: list[str], frames: int, strict: bool) -> list[Scene]:
    """Every usable scene under ``root``; each unusable one is a warning naming it (an error if ``strict``)."""
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    files = _tiffs(root)
    if not files:
        raise DataError(f"{root} holds no GeoTIFF (.tif, .tiff) files")
    scenes, bad = [], []
    if opts.layout == "stack":
        groups = [(f, [f]) for f in files]
    else:
        folders: dict[Path, list[Path]] = {}
        for f in files:
            folders.setdefault(f.parent, []).append(f)
        groups = sorted(folders.items())
    for key, members in groups:
        try:
            if opts.layout == "band_files":
                scenes.append(band_file_scene(key, members, bands))
                continue
            if opts.layout == "series" and len(members) < frames:
                raise DataError(f"{key} holds {len(members)} dates (GeoTIFFs); model.input_size asks for {frames}")
            dates = [open_stack(f, opts, bands) for f in members[:frames]]
            sizes = {(d.height, d.width) for d in dates}
            if len(sizes) > 1:
                raise DataError(f"{key}: its dates differ in size {sorted(sizes)}; a series needs one grid")
            first = dates[0]
            first.path, first.dates = key, [d.dates[0] for d in dates]
            scenes.append(first)
        except DataError as err:
            if strict:
                raise
            bad.append(err)
            warnings.warn(f"skipping {err}", stacklevel=3)
    if bad:
        warnings.warn(f"skipped {len(bad)} of {len(groups)} scenes in {root}; using {len(scenes)}", stacklevel=3)
    if not scenes:
        raise DataError(f"{root} holds no usable scene ({len(bad)} unusable)")
    return scenes


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
                raise DataError(f"{src.path}: {_reason(err)} at window {window}") from err
            values = np.ma.filled(data, np.nan)
            if nodata is not None:
                values[values == nodata] = np.nan
            out[t, src.positions] = values
    return out


def scene_statistics(scenes: Iterable[Scene], channels: int, nodata: float | None = None) -> RunningStats:
    """Per-band statistics over every pixel of ``scenes``, read block by block (never a scene whole)."""
    stats = RunningStats(channels)
    for scene in scenes:
        for sources in scene.dates:
            for src in sources:
                try:
                    with rasterio.open(src.path) as ds:
                        for _, win in ds.block_windows(1):
                            data = np.ma.filled(
                                ds.read(src.indexes, window=win, masked=True, out_dtype="float64"), np.nan
                            )
                            if nodata is not None:
                                data[data == nodata] = np.nan
                            chunk = np.full((channels, data[0].size), np.nan)
                            chunk[src.positions] = data.reshape(len(src.indexes), -1)
                            stats.update(chunk)
                except RasterioError as err:
                    raise DataError(f"{src.path}: {_reason(err)}") from err
    return stats


# -- the dataset -------------------------------------------------------------------


class MultispectralDataset(torch.utils.data.Dataset):
    """Scenes -> ``(tensor C×H×W or C×T×H×W float32, normalised, NaN at nodata, label)``.

    Training: item ``i`` is a random window of scene ``i // tiles_per_scene`` plus random flips.
    Evaluation: the centre window of each scene, or (``grid``) every whole window in row-major order.
    """

    def __init__(
        self,
        scenes: list[Scene],
        classes: list[str],
        size: tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        opts: MultispectralOptions,
        train: bool,
        flip: bool,
        series: bool,
    ) -> None:
        self.scenes, self.classes, self.size = scenes, classes, size
        self.mean = np.asarray(mean, dtype=np.float32)[None, :, None, None]
        self.std = np.asarray(std, dtype=np.float32)[None, :, None, None]
        self.opts, self.train, self.flip, self.series = opts, train, flip, series
        self.files = [s.path for s in scenes]
        h, w = size
        for s in scenes:
            if s.height < h or s.width < w:
                raise DataError(
                    f"{s.path} is {s.height}×{s.width} pixels, smaller than the {h}×{w} tile (model.input_size)"
                )
        if train:
            self.index = [(i, None) for i in range(len(scenes)) for _ in range(opts.tiles_per_scene)]
        elif opts.eval_tiles == "center":
            self.index = [(i, ((s.height - h) // 2, (s.width - w) // 2)) for i, s in enumerate(scenes)]
        else:
            self.index = [
                (i, (r * h, c * w))
                for i, s in enumerate(scenes)
                for r in range(s.height // h)
                for c in range(s.width // w)
            ]

    def __len__(self) -> int:
        return len(self.index)

    def _window(self, scene: Scene, corner: tuple[int, int] | None) -> Window:
        h, w = self.size
        if corner is None:
            corner = (
                int(torch.randint(0, scene.height - h + 1, ()).item()),
                int(torch.randint(0, scene.width - w + 1, ()).item()),
            )
        return Window(corner[1], corner[0], w, h)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i, corner = self.index[index]
        scene = self.scenes[i]
        # A random window may fall wholly outside the swath (nodata): try a few others before giving up.
        for _ in range(8 if corner is None else 1):
            window = self._window(scene, corner)
            x = read_window(scene, window, self.opts.nodata)  # T×C×h×w
            if not np.isnan(x).all():
                break
        else:
            raise DataError(f"{scene.path}: every pixel of the tile at {window} is nodata (tried 8 random windows)")
        if np.isnan(x).all():
            raise DataError(f"{scene.path}: every pixel of the tile at {window} is nodata")
        x = torch.from_numpy((x - self.mean) / self.std)
        if self.train and self.flip:
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            if torch.rand(()) < 0.5:  # overhead imagery has no up: vertical flips are as natural as horizontal
                x = x.flip(-2)
        x = x.permute(1, 0, 2, 3) if self.series else x[0]  # C×T×H×W or C×H×W
        return x.contiguous(), scene.label


# -- bands against the model ---------------------------------------------------------


def model_bands(model: Any) -> list[str]:
    """The band names a model (MaskedAutoencoder or ModelConfig) was trained on, from its metadata."""
    config = getattr(model, "config", model)
    bands = config.metadata.get("bands")
    if not bands:
        raise ValueError(
            "the model's metadata names no bands (model.metadata.bands); it was not trained on named bands"
        )
    return list(bands)


def match_bands(x: torch.Tensor, have: Sequence[str], model: Any, missing: str = "error") -> torch.Tensor:
    """Reorder and select the bands of ``x`` (B×C×..., channel axis 1, named ``have``) to the model's bands.

    Extra bands are dropped. A model band absent from ``have`` is an error naming it, unless
    ``missing="nodata"``: then it is filled with NaN, which the model reads as no data (a subset of
    the bands, explicitly). Returns B×C_model×...
    """
    want = model_bands(model)
    have = list(have)
    if x.shape[1] != len(have):
        raise ValueError(f"x has {x.shape[1]} channels but {len(have)} band names were given ({', '.join(have)})")
    unknown = [b for b in have if b not in BANDS]
    if unknown:
        raise ValueError(f"unknown band names {', '.join(unknown)}; known: {', '.join(BANDS)}")
    absent = [b for b in want if b not in have]
    if absent and missing != "nodata":
        raise ValueError(
            f"the model needs bands {', '.join(absent)} that the data lacks (data: {', '.join(have)}; model: "
            f"{', '.join(want)}); pass missing='nodata' to run on the subset"
        )
    fill = torch.full_like(x[:, :1], float("nan"))
    return torch.cat([x[:, have.index(b) : have.index(b) + 1] if b in have else fill for b in want], dim=1)


# -- labels and pictures -----------------------------------------------------------


def _labels(scenes: list[Scene], root: Path, labels_csv: str | None) -> list[str]:
    """Set each scene's label from a CSV (``path,label``, relative to the CSV) or class sub-folders."""
    labels, classes = label_files([s.path for s in scenes], root, labels_csv)
    for scene, label in zip(scenes, labels):
        scene.label = label
    return classes


def stretch(image: np.ndarray, low: float = 2.0, high: float = 98.0, reference: np.ndarray | None = None) -> np.ndarray:
    """H×W(×3) -> [0, 1] by the ``low``/``high`` percentiles of ``reference`` (default: itself), NaN as 0."""
    ref = image if reference is None else reference
    finite = ref[np.isfinite(ref)]
    if finite.size == 0:
        return np.zeros_like(image)
    lo, hi = np.percentile(finite, [low, high])
    return np.nan_to_num(np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0))


class MultispectralAdapter:
    name = "multispectral"

    def __init__(self) -> None:
        self._scans: dict[tuple, tuple[list[Scene], list[str]]] = {}
        self._stats: dict[tuple, tuple[list[float], list[float]]] = {}

    def options(self, data: DataConfig, model: ModelConfig) -> MultispectralOptions:
        """``data.options`` over the way the model's training data was read (its ``read_options`` metadata)."""
        known = model.metadata.get("read_options") or {}
        opts = adapter_options(MultispectralOptions, DataConfig(options={**known, **data.options}))
        unknown = [b for b in opts.bands + opts.file_bands if b not in BANDS]
        if unknown:
            key = "bands" if unknown[0] in opts.bands else "file_bands"
            raise ConfigError(f"data.options.{key}: unknown band {unknown[0]!r}; known bands: {', '.join(BANDS)}")
        if opts.tiles_per_scene < 1:
            raise ConfigError(f"data.options.tiles_per_scene must be at least 1, got {opts.tiles_per_scene}")
        return opts

    def bands(self, opts: MultispectralOptions, model: ModelConfig) -> list[str]:
        """The recipe's bands, checked against the model's metadata and ``model.in_chans``."""
        known = model.metadata.get("bands")
        bands = list(opts.bands or known or [])
        if not bands:
            raise ConfigError("data.options.bands: name the bands to read (e.g. [B02, B03, B04, B08])")
        if known and list(known) != bands:
            raise ConfigError(
                f"data.options.bands {', '.join(bands)} differ from the model's bands {', '.join(known)} "
                "(model.metadata.bands); read the model's bands, or reorder data with match_bands"
            )
        if len(bands) != model.in_chans:
            raise ConfigError(f"data.options.bands names {len(bands)} bands but model.in_chans is {model.in_chans}")
        return bands

    def scan(self, path: str | Path, data: DataConfig, model: ModelConfig) -> tuple[list[Scene], list[str]]:
        opts = self.options(data, model)
        bands = self.bands(opts, model)
        series = opts.layout == "series"
        if len(model.input_size) != (3 if series else 2):
            raise ConfigError(
                f"model.input_size {model.input_size}: layout {opts.layout!r} needs "
                + ("(T, H, W)" if series else "(H, W)")
            )
        key = (
            str(Path(path).resolve()),
            tuple(bands),
            str(opts),
            data.labels,
            data.strict,
            model.input_size[0],
        )
        if key not in self._scans:
            frames = model.input_size[0] if series else 1
            scenes = find_scenes(Path(path), opts, bands, frames, data.strict)
            self._scans[key] = (scenes, _labels(scenes, Path(path), data.labels))
        return self._scans[key]

    def statistics(self, path: str | Path, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        """Per-band mean and std: ``data.mean``/``data.std``, else the model's metadata, else a streaming pass."""
        opts = self.options(data, model)
        bands = self.bands(opts, model)
        meta = model.metadata
        mean = data.mean or meta.get("mean")
        std = data.std or meta.get("std")
        if mean is not None and std is not None:
            if len(mean) != len(bands) or len(std) != len(bands):
                raise ConfigError(
                    f"data.mean and data.std need {len(bands)} values each (one per band); got {mean}, {std}"
                )
            return list(mean), list(std)
        key = (str(Path(path).resolve()), tuple(bands), str(opts))
        if key not in self._stats:
            scenes, _ = self.scan(path, data, model)
            if opts.stats_scenes:
                step = max(1, len(scenes) // opts.stats_scenes)
                scenes = scenes[::step][: opts.stats_scenes]
            stats = scene_statistics(scenes, len(bands), opts.nodata)
            empty = [b for b, n in zip(bands, stats.count) if n == 0]
            if empty:
                raise DataError(
                    f"{path}: bands {', '.join(empty)} hold no valid pixel (all nodata) in {len(scenes)} scenes"
                )
            log.info("band statistics from %d pixels of %d scenes", int(stats.count.min()), len(scenes))
            self._stats[key] = (stats.mean.tolist(), np.maximum(stats.std, 1e-6).tolist())
        return self._stats[key]

    def dataset(self, path: str | Path, data: DataConfig, model: ModelConfig, train: bool) -> MultispectralDataset:
        opts = self.options(data, model)
        scenes, classes = self.scan(path, data, model)
        mean, std = self.statistics(data.path or path, data, model)
        size = (int(model.input_size[-2]), int(model.input_size[-1]))
        return MultispectralDataset(scenes, classes, size, mean, std, opts, train, data.hflip, opts.layout == "series")

    def metadata(self, data: DataConfig, model: ModelConfig) -> dict[str, Any]:
        """Band names, wavelengths (nm), native GSD (m), normalisation, the data's pixel size: kept with the model."""
        opts = self.options(data, model)
        bands = self.bands(opts, model)
        path, spacing = data.path, opts.spacing
        if path is None:
            mean, std = data.mean or model.metadata.get("mean"), data.std or model.metadata.get("std")
            if mean is None or std is None:
                raise ConfigError("data.path is not set: the multispectral adapter needs data for its band statistics")
        else:
            mean, std = self.statistics(path, data, model)
            spacing = spacing or self.scan(path, data, model)[0][0].spacing
        return {
            "bands": bands,
            "channel_names": bands,
            "wavelengths": [BANDS[b].wavelength for b in bands],
            "gsd": [BANDS[b].gsd for b in bands],
            "spacing": spacing,
            "mean": mean,
            "std": std,
            # how files were read, so a loaded model reads the same layout without a recipe (CLI probe, embed)
            "read_options": {k: getattr(opts, k) for k in READ_KEYS if getattr(opts, k) not in (None, [], False)},
        }

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        """Rows of samples: true colour (input, masked, reconstruction), false colour (input, reconstruction),
        then the absolute error of each band (normalised units) on the masked patches."""
        meta = model.metadata
        bands = list(meta.get("bands") or [f"band {i}" for i in range(model.in_chans)])
        mean = np.asarray(meta.get("mean", [0.0] * len(bands)), dtype=np.float32)[:, None, None]
        std = np.asarray(meta.get("std", [1.0] * len(bands)), dtype=np.float32)[:, None, None]

        def composite(names: Sequence[str]) -> list[int]:
            return [bands.index(n) for n in names] if all(n in bands for n in names) else [0, 1, 2][: len(bands)]

        def frame(t: torch.Tensor) -> np.ndarray:  # C×(T)×H×W -> C×H×W, first date
            a = t.detach().float().cpu().numpy()
            return a[:, 0] if a.ndim == 4 else a

        rows, titles = [], ["true colour", "masked", "reconstruction", "false colour", "reconstruction"]
        titles += [f"|err| {b}" for b in bands]
        for i in range(recon["input"].shape[0]):
            x, y, masks = frame(recon["input"][i]), frame(recon["reconstruction"][i]), frame(recon["mask"][i])
            m = masks[composite(TRUE_COLOUR)[0]]  # groups may be masked apart: grey what the red band lost
            raw_x, raw_y = x * std + mean, y * std + mean
            row = []
            for names in (TRUE_COLOUR, FALSE_COLOUR):
                idx = composite(names)
                ref = raw_x[idx].transpose(1, 2, 0)
                shown = [stretch(ref), stretch(raw_y[idx].transpose(1, 2, 0), reference=ref)]
                if names == TRUE_COLOUR:
                    shown.insert(1, shown[0] * (1 - m[..., None]) + 0.5 * m[..., None])
                row += shown
            error = np.abs(np.nan_to_num(y - x)) * masks
            top = max(float(np.percentile(error[masks > 0], 99)) if (masks > 0).any() else 1.0, 1e-6)
            row += [np.clip(e / top, 0, 1) for e in error]
            rows.append(row)
        return grid(rows, titles)

    def sample_path(self) -> None:
        return None


ADAPTER = MultispectralAdapter()
