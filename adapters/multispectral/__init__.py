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
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mimsdk.adapter import Adapter
from mimsdk.adapters.multispectral.bands import BANDS, EUROSAT_ORDER, match_bands, model_bands
from mimsdk.adapters.multispectral.dataset import MultispectralDataset
from mimsdk.adapters.multispectral.options import READ_KEYS, MultispectralOptions, check_multispectral_options
from mimsdk.adapters.multispectral.picture import picture
from mimsdk.adapters.multispectral.scenes import POLICY, Scene, attach_labels, find_scenes, read_window
from mimsdk.adapters.multispectral.statistics import Measured, RunningStats, scene_statistics
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.errors import ConfigError, DataError
from mimsdk.registry import ADAPTERS

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

        tile = (int(model.input_size[-2]), int(model.input_size[-1]))

        def scan() -> tuple[list[Scene], list[str]]:
            frames = model.input_size[0] if series else 1
            scenes = find_scenes(Path(path), opts, bands, frames, data.strict, tile)
            return scenes, attach_labels(scenes, Path(path), data.labels)

        return self.remember(path, data, (tuple(bands), repr(opts), model.input_size[0], tile), scan)

    def statistics(self, path: str | Path, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        """Per-band mean and std: ``data.mean``/``data.std``, else the model's metadata, else a streaming pass."""
        mean, std, _ = self.measure(path, data, model)
        return mean, std

    def measure(
        self, path: str | Path, data: DataConfig, model: ModelConfig
    ) -> tuple[list[float], list[float], frozenset[Path]]:
        """:meth:`statistics` and the scenes the pass left out (none when the statistics are given)."""
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
            return list(mean), list(std), frozenset()

        def measure() -> tuple[list[float], list[float], frozenset[Path]]:
            scenes, _ = self.scan(path, data, model)
            if opts.stats_scenes:
                step = max(1, len(scenes) // opts.stats_scenes)
                scenes = scenes[::step][: opts.stats_scenes]
            stats = scene_statistics(scenes, len(bands), opts.nodata)
            self._report(path, scenes, stats, data.strict)
            empty = [b for b, n in zip(bands, stats.count) if n == 0]
            if empty:
                raise DataError(
                    f"{path}: bands {', '.join(empty)} hold no valid pixel (all nodata) in {stats.scenes} scenes"
                )
            log.info("band statistics from %d pixels of %d scenes", int(stats.count.min()), stats.scenes)
            return stats.mean.tolist(), np.maximum(stats.std, 1e-6).tolist(), frozenset(stats.excluded)

        return self.remember(path, data, ("statistics", tuple(bands), repr(opts)), measure)

    @staticmethod
    def _report(path: str | Path, scenes: list[Scene], stats: Measured, strict: bool) -> None:
        """Name what the statistics pass met, each file once: a scene it left out is skipped (through the scan
        policy: a warning each and a count, or ``strict``'s error); a kept file with non-finite values, or of
        another data type than most, is one warning saying both."""
        if stats.excluded:
            problems = [f"{s.path}: {stats.excluded[s.path]}" if s.path in stats.excluded else None for s in scenes]
            POLICY.settle(Path(path), problems, strict)
        said: dict[Path, list[str]] = {}
        for scene in scenes:
            if scene.note and scene.path not in stats.excluded:
                said.setdefault(scene.path, []).append(scene.note)
            scene.note = None
        skipped = {src.path for s in scenes if s.path in stats.excluded for date in s.dates for src in date}
        for file, count in stats.nonfinite.items():
            if file not in skipped:
                said.setdefault(file, []).append(
                    f"{count} values are NaN or ±inf without being declared nodata; left out of the band "
                    "statistics and read as no data"
                )
        for file, words in said.items():
            warnings.warn(f"{file}: {'; '.join(words)}", stacklevel=5)

    @staticmethod
    def _say_notes(scenes: list[Scene]) -> None:
        """The notes no statistics pass has said (statistics given, or a scene outside ``stats_scenes``)."""
        for scene in scenes:
            if scene.note:
                warnings.warn(f"{scene.path}: {scene.note}; kept", stacklevel=4)
                scene.note = None

    def build(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: MultispectralOptions, train: bool
    ) -> MultispectralDataset:
        scenes, classes = self.scan(path, data, model)
        mean, std, excluded = self.measure(data.path or path, data, model)
        if excluded:  # left out by the statistics pass (unreadable, another scale): not data either
            scenes = [s for s in scenes if s.path not in excluded]
            if not scenes:
                raise DataError(f"{path} holds no usable scenes ({len(excluded)} left out by the statistics pass)")
        self._say_notes(scenes)
        size = (int(model.input_size[-2]), int(model.input_size[-1]))
        series = opts.layout == "series"
        return MultispectralDataset(scenes, classes, size, mean, std, opts, train, self.hflip(data), series)

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
