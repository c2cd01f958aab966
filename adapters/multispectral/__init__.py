"""Multispectral satellite imagery through rasterio: named bands, nodata, windows, streaming statistics.

Layouts (``data.options.layout``):

- ``stack``: one GeoTIFF or Cloud-Optimised GeoTIFF per scene holding several bands (EuroSAT-MS);
- ``band_files``: a folder per scene with one file per band, ``*_B02.tif`` ... (BigEarthNet's layout);
  bands at coarser resolution (20 m, 60 m) are resampled onto the finest band's grid on read;
- ``series``: a folder per place holding one stack per date; files sorted by name are the dates, and
  ``model.input_size`` is (T, H, W).

Bands are named (Sentinel-2 ``B01`` … ``B12``, ``B8A``; Landsat 8/9 Collection 2 ``SR_B1`` … ``SR_B7``,
``ST_B10``; see :data:`~mimsdk.adapters.multispectral.bands.BANDS`).
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
(Chan's parallel update of count, mean and squared deviations; nodata, NaN and ±inf excluded, the
non-finite ones counted per file and named) unless ``data.mean``/``data.std`` or the model's metadata
give them; they are stored with the model together with band names, wavelengths and ground sample
distances (:meth:`MultispectralAdapter.describe`). A scene the pass cannot read, or whose values are on
another scale than most scenes' (a float scene scaled by 1e30), is named and left out of the statistics
and of the data (``data.strict``: an error). Use :func:`match_bands` to feed a model data whose bands are a
subset or another order.

Bad scenes are found before training (:func:`~mimsdk.adapters.multispectral.scenes.find_scenes`): unreadable,
a header claiming more than ``data.options.max_pixels`` pixels, a last pixel that cannot be read (truncated),
smaller than the tile, a CRS of another kind than the rest (degrees among metres); each is one warning and
skipped, or with ``data.strict`` an error; a scene of another data type is named. A tile that fails only when
training reads it is named once and replaced (:class:`~mimsdk.data.SampleDataset`).

Shard sets (``mimsdk shard``): the preparation is in two halves, and a folder goes through both as a shard set
does. The stored half (:meth:`MultispectralAdapter.prepared`, :mod:`~mimsdk.adapters.multispectral.stored`)
reads the recipe's bands in order, resamples coarse bands onto the scene's grid, keeps where there is no data,
and cuts a scene of at least twice ``data.options.chip_size`` pixels into chips of that size; EuroSAT's uint16
is stored as uint16 with packed no-data bits (half the bytes of float32, exactly). The other half
(:class:`~mimsdk.adapters.multispectral.dataset.FinishTile`) takes the random or evaluation window of
``model.input_size``, flips and normalises. Band statistics are measured over every scene when shards are
written and kept in their manifest; training on the shard set reads them there. A folder of more than
:data:`~mimsdk.adapters.multispectral.scenes.BIG_FOLDER` scenes is checked from headers only and its statistics
read from a seeded sample of :data:`~mimsdk.adapters.multispectral.statistics.STATS_SAMPLE` scenes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mimsdk.adapter import Adapter
from mimsdk.adapters.multispectral.bands import BANDS, EUROSAT_ORDER, match_bands, model_bands
from mimsdk.adapters.multispectral.dataset import FinishTile, MultispectralDataset
from mimsdk.adapters.multispectral.options import READ_KEYS, MultispectralOptions, check_multispectral_options
from mimsdk.adapters.multispectral.picture import picture
from mimsdk.adapters.multispectral.scenes import POLICY, Scene, attach_labels, find_scenes, read_window
from mimsdk.adapters.multispectral.statistics import (
    RunningStats,
    Statistics,
    report,
    say_notes,
    scene_statistics,
    stats_scenes,
)
from mimsdk.adapters.multispectral.stored import SceneChips, Tiles, run_lengths
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import LabelledDataset, Prepared
from mimsdk.errors import ConfigError, DataError
from mimsdk.registry import ADAPTERS
from mimsdk.shards import ShardReader, check_preparation, is_shard_set

__all__ = [
    "BANDS", "EUROSAT_ORDER", "MultispectralAdapter", "MultispectralDataset", "MultispectralOptions", "RunningStats",
    "Scene", "match_bands", "model_bands", "read_window", "scene_statistics",
]  # fmt: skip

log = logging.getLogger(__name__)


@ADAPTERS.register("multispectral")
class MultispectralAdapter(Adapter):
    """Named spectral bands C×H×W (or C×T×H×W for a ``series``), tiles read by window, nodata as NaN."""

    name = "multispectral"
    Options = MultispectralOptions
    uses = ("hflip", "mean", "std")  # flips both ways: overhead imagery has no up
    stored = READ_KEYS
    legacy_options_key = "read_options"
    policy = POLICY
    version = 1  # of the stored half (stored.py): shards written by another version are refused

    def check_options(self, opts: MultispectralOptions, model: ModelConfig | None) -> MultispectralOptions:
        return check_multispectral_options(opts)

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

    @staticmethod
    def tile(model: ModelConfig) -> tuple[int, int]:
        """The tile (height, width): the last two of ``model.input_size``."""
        return int(model.input_size[-2]), int(model.input_size[-1])

    def scan(self, path: str | Path, data: DataConfig, model: ModelConfig) -> tuple[list[Scene], list[str]]:
        """The usable scenes under ``path`` (labels set) and the class names; memoised."""
        opts = self.options(data, model)
        bands = self.bands(opts, model)
        series = opts.layout == "series"
        if len(model.input_size) != (3 if series else 2):
            raise ConfigError(
                f"model.input_size {model.input_size}: layout {opts.layout!r} needs "
                + ("(T, H, W)" if series else "(H, W)")
            )
        tile = self.tile(model)

        def scan() -> tuple[list[Scene], list[str]]:
            frames = model.input_size[0] if series else 1
            scenes = find_scenes(Path(path), opts, bands, frames, data.strict, tile)
            return scenes, attach_labels(scenes, Path(path), data.labels)

        return self.remember(path, data, (tuple(bands), repr(opts), model.input_size[0], tile), scan)

    # -- band statistics -------------------------------------------------------------------------------

    def statistics(self, path: str | Path, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        """Per-band mean and std: ``data.mean``/``data.std``, else the model's metadata, else a shard set's
        manifest, else a streaming pass over the folder."""
        mean, std, _, _ = self.measure(path, data, model)
        return mean, std

    def measure(self, path: str | Path, data: DataConfig, model: ModelConfig, whole: bool = False) -> Statistics:
        """:meth:`statistics` with the scenes the pass left out. ``whole`` (writing shards): every scene of a
        big folder, not a seeded sample (:func:`~mimsdk.adapters.multispectral.statistics.stats_scenes`)."""
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
            return Statistics(list(mean), list(std), frozenset())
        if is_shard_set(path):
            facts = self.facts(path, data, model, opts)
            return Statistics(list(facts["mean"]), list(facts["std"]), frozenset())

        def measure() -> Statistics:
            scenes = stats_scenes(path, self.scan(path, data, model)[0], opts, whole)
            stats = scene_statistics(scenes, len(bands), opts.nodata, POLICY.threads)
            report(path, scenes, stats, data.strict)
            empty = [b for b, n in zip(bands, stats.count) if n == 0]
            if empty:
                raise DataError(
                    f"{path}: bands {', '.join(empty)} hold no valid pixel (all nodata) in {stats.scenes} scenes"
                )
            log.info("band statistics from %d pixels of %d scenes", int(stats.count.min()), stats.scenes)
            std = np.maximum(stats.std, 1e-6).tolist()
            return Statistics(stats.mean.tolist(), std, frozenset(stats.excluded), stats.scenes)

        return self.remember(path, data, ("statistics", tuple(bands), repr(opts), whole), measure)

    def facts(self, path: str | Path, data: DataConfig, model: ModelConfig, opts: MultispectralOptions) -> dict:
        """What the shard set at ``path`` measured when written (band statistics, spacing, chip sizes), once its
        preparation is checked against the recipe's."""
        manifest = self.shard_manifest(path)
        check_preparation(manifest, self.preparation(data, model, opts), self.name, self.version, str(path))
        if "mean" not in manifest.facts or "std" not in manifest.facts:
            raise DataError(f"{path}: its manifest holds no band statistics (facts.mean, facts.std); shard it again")
        return manifest.facts

    # -- the preparation in two halves (folders and shard sets alike) ----------------------------------

    def prepared(
        self,
        path: Path,
        data: DataConfig,
        model: ModelConfig,
        opts: MultispectralOptions,
        verify: bool = False,
        lazy: bool = False,
    ) -> SceneChips:
        """The usable scenes at ``path`` as stored chips (:class:`SceneChips`). ``verify`` (writing shards): the
        statistics pass measures every scene, and a chip all nodata is an error. ``lazy``: a folder read for
        training, whose chips are read window by window."""
        scenes, classes = self.scan(path, data, model)
        excluded = self.measure(data.path or path, data, model, whole=verify).excluded
        if excluded:  # left out by the statistics pass (unreadable, another scale): not data either
            scenes = [s for s in scenes if s.path not in excluded]
            if not scenes:
                raise DataError(f"{path} holds no usable scenes ({len(excluded)} left out by the statistics pass)")
        say_notes(scenes)
        chips = SceneChips(scenes, classes, Path(path), opts, verify, lazy)
        self.check_chips(chips.sizes(), model, opts)
        return chips

    def finish(self, data: DataConfig, model: ModelConfig, opts: MultispectralOptions, train: bool) -> FinishTile:
        """A stored chip -> the model's tile (:class:`FinishTile`), normalised by the training data's statistics."""
        return self.finisher(data.path, data, model, opts, train)

    def finisher(
        self, path: str | Path | None, data: DataConfig, model: ModelConfig, opts: MultispectralOptions, train: bool
    ) -> FinishTile:
        """:meth:`finish` with the statistics of ``path`` (the training data: a folder or a shard set)."""
        if path is None and not (data.mean or model.metadata.get("mean")):
            raise ConfigError("data.path is not set: the multispectral adapter needs data for its band statistics")
        mean, std = self.statistics(path or "", data, model)
        return FinishTile(self.tile(model), mean, std, train, self.hflip(data), opts.layout == "series")

    def preparation(self, data: DataConfig, model: ModelConfig, opts: MultispectralOptions) -> dict[str, Any]:
        """What a stored chip depends on: the bands read and how they are found in the files, the dates of a
        series, the no-data rule, the chips and the resampling of coarse bands."""
        return {
            "layout": opts.layout,
            "bands": self.bands(opts, model),
            "file_bands": list(opts.file_bands),
            "select_bands": opts.select_bands,
            "nodata": opts.nodata,  # besides the files' own nodata and masks, and NaN/±inf, always no data
            "dates": int(model.input_size[0]) if opts.layout == "series" else 1,
            "chip_size": opts.chip_size,
            "resampling": "bilinear",  # of bands coarser than the scene's grid (band_files)
        }

    def shard_facts(  # type: ignore[override]  # ``prepared`` is what this adapter's prepared() returned
        self, prepared: SceneChips, data: DataConfig, model: ModelConfig, opts: MultispectralOptions
    ) -> dict[str, Any]:
        """Band statistics over every scene of the set (the folder's streaming pass), its pixel size and the
        size of each chip, for the manifest."""
        stats = self.measure(prepared.root, data, model, whole=True)
        return {
            "mean": stats.mean,
            "std": stats.std,
            "statistics": f"measured over {stats.scenes} scenes" if stats.scenes else "given",
            "spacing": opts.spacing or prepared.scenes[0].spacing,
            "scenes": len(prepared.scenes),
            "sizes": run_lengths(prepared.sizes()),
        }

    def check_chips(self, sizes: list[tuple[int, int]], model: ModelConfig, opts: MultispectralOptions) -> None:
        """Every chip holds a whole tile; a ``chip_size`` under the tile is named with both."""
        h, w = self.tile(model)
        small = next(((ch, cw) for ch, cw in sizes if ch < h or cw < w), None)
        if small is not None:
            raise ConfigError(
                f"data.options.chip_size {opts.chip_size} cuts scenes into {small[0]}×{small[1]} chips, smaller "
                f"than the {h}×{w} tile (model.input_size); set data.options.chip_size to at least {max(h, w)}"
            )

    def tiled(
        self,
        prepared: Prepared,
        sizes: Callable[[], list[tuple[int, int]]],
        finish: FinishTile,
        opts: MultispectralOptions,
        model: ModelConfig,
        train: bool,
        scenes: list[Scene] | None = None,
    ) -> MultispectralDataset:
        """The items of an epoch over stored chips (:class:`Tiles`), finished."""
        mode = "train" if train else opts.eval_tiles
        tiles = Tiles(prepared, mode, opts.tiles_per_scene, sizes() if mode == "grid" else None, self.tile(model))
        return MultispectralDataset(tiles, finish, scenes)

    def build(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: MultispectralOptions, train: bool
    ) -> MultispectralDataset:
        chips = self.prepared(path, data, model, opts, lazy=True)
        finish = self.finisher(data.path or path, data, model, opts, train)
        return self.tiled(chips, chips.sizes, finish, opts, model, train, chips.scenes)

    def from_shards(
        self, path: str | Path, data: DataConfig, model: ModelConfig, opts: MultispectralOptions, train: bool
    ) -> LabelledDataset:
        """A shard set's chips, tiled as a folder's are (tiles_per_scene, eval_tiles)."""
        reader = self.shard_reader(path, data, model, opts)
        finish = self.finisher(data.path or path, data, model, opts, train)
        return self.tiled(reader, lambda: self.shard_sizes(path, reader, model, opts), finish, opts, model, train)

    def shard_sizes(
        self, path: str | Path, reader: ShardReader, model: ModelConfig, opts: MultispectralOptions
    ) -> list[tuple[int, int]]:
        """The chips' sizes of a shard set: from its manifest, or (samples left out when it was written) read."""
        runs = self.shard_manifest(path).facts.get("sizes") or []
        sizes = [(h, w) for h, w, n in runs for _ in range(n)]
        if len(sizes) != len(reader):
            log.info("%s: reading the size of each of its %d chips for the grid of tiles", path, len(reader))
            sizes = [tuple(int(v) for v in reader[i]["window"][2:]) for i in range(len(reader))]
        self.check_chips(sizes, model, opts)
        return sizes

    def describe(self, data: DataConfig, model: ModelConfig, opts: MultispectralOptions) -> dict[str, Any]:
        """Band names, wavelengths (nm), native GSD (m), normalisation, the data's pixel size: kept with the model."""
        bands = self.bands(opts, model)
        path, spacing = data.path, opts.spacing
        if path is None:
            mean, std = data.mean or model.metadata.get("mean"), data.std or model.metadata.get("std")
            if mean is None or std is None:
                raise ConfigError("data.path is not set: the multispectral adapter needs data for its band statistics")
        else:
            mean, std = self.statistics(path, data, model)
            if is_shard_set(path):
                spacing = spacing or self.shard_manifest(path).facts.get("spacing")
            else:
                spacing = spacing or self.scan(path, data, model)[0][0].spacing
        return {
            "bands": bands,
            "channel_names": bands,
            "wavelengths": [BANDS[b].wavelength for b in bands],
            "gsd": [BANDS[b].gsd for b in bands],
            "spacing": spacing,
            "mean": mean,
            "std": std,
            # the stored options without their defaults, for readers of older metadata
            "read_options": {k: v for k, v in self.kept(opts).items() if v not in (None, [], False)},
        }

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        return picture(recon, model)
