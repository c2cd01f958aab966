"""Per-band statistics in one streaming pass over the files' blocks: nodata, NaN and ±inf excluded, scenes
on another scale named and left out, so one bad pixel or one bad scene cannot poison a whole run."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from mimsdk.adapter import readable_path
from mimsdk.adapters.multispectral.options import MultispectralOptions
from mimsdk.adapters.multispectral.scenes import BIG_FOLDER, POLICY, Scene, unreadable
from mimsdk.errors import DataError
from mimsdk.scan import fork_safe_threads

log = logging.getLogger(__name__)

RANGE_FACTOR = 1000.0  # a scene whose largest |value| in a band is this far from the usual scene's is named
REFERENCE_SCENES = 32  # the first scenes read set the usual scale (their median); later ones are judged as read
BATCH = 256  # scenes measured at once by the threads: bounded memory however many scenes there are
STATS_SAMPLE = 1000  # scenes a big folder's statistics read (seeded): ~0.1 % error on a band's mean and std
STATS_SEED = 0  # the sample is a function of the folder alone, so a run and its resume read the same scenes


class RunningStats:
    """Per-band count, mean and sum of squared deviations, merged chunk by chunk (Chan et al. 1979).

    ``update(chunk)`` takes C×N values; NaN (no data) and ±inf never count. ``peak`` is each band's largest
    finite |value|, for comparing the scale of scenes.
    """

    def __init__(self, channels: int) -> None:
        self.count = np.zeros(channels, dtype=np.float64)
        self.mean = np.zeros(channels, dtype=np.float64)
        self.m2 = np.zeros(channels, dtype=np.float64)
        self.peak = np.zeros(channels, dtype=np.float64)

    def update(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk, dtype=np.float64).reshape(len(self.count), -1)
        valid = np.isfinite(chunk)
        n = valid.sum(axis=1).astype(np.float64)
        if not n.any():
            return
        values = np.where(valid, chunk, 0.0)
        mean = values.sum(axis=1) / np.maximum(n, 1)
        m2 = (np.where(valid, chunk - mean[:, None], 0.0) ** 2).sum(axis=1)
        other = RunningStats(len(self.count))
        other.count, other.mean, other.m2 = n, mean, m2
        other.peak = np.abs(values).max(axis=1)
        self.merge(other)

    def merge(self, other: RunningStats) -> None:
        """Add ``other``'s values (Chan's parallel update), as if they had been passed to :meth:`update`."""
        n = other.count
        total = self.count + n
        delta = other.mean - self.mean
        safe = np.maximum(total, 1)
        self.mean = self.mean + delta * n / safe
        self.m2 = self.m2 + other.m2 + delta**2 * self.count * n / safe
        self.count = total
        self.peak = np.maximum(self.peak, other.peak)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per band."""
        return np.sqrt(self.m2 / np.maximum(self.count, 1))


class Measured(RunningStats):
    """The statistics of the scenes kept, and what the pass found on the way.

    Attributes:
        nonfinite: per file, values that were NaN or ±inf without being declared nodata (left out).
        excluded: per scene path, why it was left out (unreadable, or values on another scale).
        scenes: how many scenes were measured (kept).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.nonfinite: dict[Path, int] = {}
        self.excluded: dict[Path, str] = {}
        self.scenes = 0


def sample_scenes(scenes: list[Scene], count: int, seed: int = STATS_SEED) -> list[Scene]:
    """``count`` of ``scenes`` drawn without replacement under ``seed``, in their order (all if fewer)."""
    if len(scenes) <= count:
        return scenes
    picked = np.random.default_rng(seed).choice(len(scenes), size=count, replace=False)
    return [scenes[i] for i in sorted(picked)]


def _scene_stats(scene: Scene, channels: int, nodata: float | None) -> tuple[RunningStats, dict[Path, int]]:
    """One scene's statistics, read block by block, and its files' non-finite values that are not declared
    nodata; DataError naming the file it cannot read."""
    stats, nonfinite = RunningStats(channels), {}
    for sources in scene.dates:
        for src in sources:
            try:
                with readable_path(src.path) as name, rasterio.open(name) as ds:
                    for _, win in ds.block_windows(1):
                        block = ds.read(src.indexes, window=win, masked=True, out_dtype="float64")
                        odd = int(np.count_nonzero(~np.isfinite(block.data) & ~np.ma.getmaskarray(block)))
                        if odd:
                            nonfinite[src.path] = nonfinite.get(src.path, 0) + odd
                        data = np.ma.filled(block, np.nan)
                        if nodata is not None:
                            data[data == nodata] = np.nan
                        chunk = np.full((channels, data[0].size), np.nan)
                        chunk[src.positions] = data.reshape(len(src.indexes), -1)
                        stats.update(chunk)
            except RasterioError as err:
                raise DataError(f"{src.path}: {unreadable(err)}") from err
    return stats, nonfinite


def _off_scale(stats: RunningStats, usual: np.ndarray) -> str | None:
    """Why ``stats``' values are on another scale than ``usual`` peaks (per band), or None."""
    for band, (peak, typical) in enumerate(zip(stats.peak, usual)):
        if typical > 0 and stats.count[band] and (peak > RANGE_FACTOR * typical or 0 < peak < typical / RANGE_FACTOR):
            return (
                f"values up to {peak:.3g} in band {band + 1} where scenes usually reach {typical:.3g} (a factor "
                f"over {RANGE_FACTOR:g}: another scale or corrupt values); left out of the band statistics"
            )
    return None


def scene_statistics(scenes: Sequence[Scene], channels: int, nodata: float | None = None, threads: int = 1) -> Measured:
    """Per-band statistics over every pixel of ``scenes``, read block by block (never a scene whole).

    NaN and ±inf never count (they are counted per file in ``nonfinite``). Each scene is measured on its own
    and merged only if whole: a scene that cannot be read, or whose values are on another scale than most
    (its largest |value| in some band over :data:`RANGE_FACTOR` times, or under 1/RANGE_FACTOR of, the median
    of the first :data:`REFERENCE_SCENES` scenes' — a float scene scaled by 1e30 among reflectances), is left
    out and listed in ``excluded`` with the reason. Fewer than three readable scenes are not judged by scale.
    ``threads`` measure scenes at once (rasterio reads without the GIL); they are merged in the scenes' order,
    so the result is the same for any number of threads.
    """
    result = Measured(channels)
    pending: list[tuple[Scene, RunningStats]] = []
    usual: np.ndarray | None = None

    def settle(scene: Scene, stats: RunningStats) -> None:
        reason = _off_scale(stats, usual) if usual is not None else None
        if reason:
            result.excluded[scene.path] = reason
        else:
            result.merge(stats)
            result.scenes += 1

    def measure(scene: Scene) -> tuple[RunningStats, dict[Path, int]] | DataError:
        try:
            return _scene_stats(scene, channels, nodata)
        except DataError as err:
            return err

    with fork_safe_threads(threads) as pool:
        for first in range(0, len(scenes), BATCH):
            batch = scenes[first : first + BATCH]
            for scene, measured in zip(batch, pool.map(measure, batch) if threads > 1 else map(measure, batch)):
                if isinstance(measured, DataError):
                    result.excluded[scene.path] = str(measured).removeprefix(f"{scene.path}: ")
                    continue
                stats, nonfinite = measured
                for path, count in nonfinite.items():
                    result.nonfinite[path] = result.nonfinite.get(path, 0) + count
                if usual is not None:
                    settle(scene, stats)
                    continue
                pending.append((scene, stats))
                if len(pending) == REFERENCE_SCENES:
                    usual = np.median(np.stack([s.peak for _, s in pending]), axis=0)
                    for done in pending:
                        settle(*done)
                    pending = []
    if pending:
        usual = np.median(np.stack([s.peak for _, s in pending]), axis=0) if len(pending) >= 3 else None
        for done in pending:
            settle(*done)
    return result


class Statistics(NamedTuple):
    """Per-band ``mean`` and ``std``, the paths of the scenes the pass left out, and how many scenes it measured
    (0 when the statistics were given or read from a shard set's manifest)."""

    mean: list[float]
    std: list[float]
    excluded: frozenset[Path]
    scenes: int = 0


def stats_scenes(path: str | Path, scenes: list[Scene], opts: MultispectralOptions, whole: bool) -> list[Scene]:
    """The scenes the statistics pass reads: ``stats_scenes`` evenly spaced when set; else all, but on a
    folder of more than :data:`BIG_FOLDER` scenes read for training (not ``whole``) a seeded sample of
    :data:`STATS_SAMPLE`, so the first step never waits for a read of every pixel of the corpus (sharding
    it reads every scene anyway, and measures them all)."""
    if opts.stats_scenes:
        step = max(1, len(scenes) // opts.stats_scenes)
        return scenes[::step][: opts.stats_scenes]
    if whole or len(scenes) <= BIG_FOLDER:
        return scenes
    log.info("%s: band statistics from a seeded sample of %d of its %d scenes", path, STATS_SAMPLE, len(scenes))
    return sample_scenes(scenes, STATS_SAMPLE)


def report(path: str | Path, scenes: list[Scene], stats: Measured, strict: bool) -> None:
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


def say_notes(scenes: list[Scene]) -> None:
    """The notes no statistics pass has said (statistics given, or a scene outside ``stats_scenes``)."""
    for scene in scenes:
        if scene.note:
            warnings.warn(f"{scene.path}: {scene.note}; kept", stacklevel=4)
            scene.note = None
