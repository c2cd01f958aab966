"""Per-band statistics in one streaming pass over the files' blocks: nodata, NaN and ±inf excluded, scenes
on another scale named and left out, so one bad pixel or one bad scene cannot poison a whole run."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from mimsdk.adapter import readable_path
from mimsdk.adapters.multispectral.scenes import Scene, unreadable
from mimsdk.errors import DataError

RANGE_FACTOR = 1000.0  # a scene whose largest |value| in a band is this far from the usual scene's is named
REFERENCE_SCENES = 32  # the first scenes read set the usual scale (their median); later ones are judged as read


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


def _scene_stats(scene: Scene, channels: int, nodata: float | None, nonfinite: dict[Path, int]) -> RunningStats:
    """One scene's statistics, read block by block; DataError naming the file it cannot read."""
    stats = RunningStats(channels)
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
    return stats


def _off_scale(stats: RunningStats, usual: np.ndarray) -> str | None:
    """Why ``stats``' values are on another scale than ``usual`` peaks (per band), or None."""
    for band, (peak, typical) in enumerate(zip(stats.peak, usual)):
        if typical > 0 and stats.count[band] and (peak > RANGE_FACTOR * typical or 0 < peak < typical / RANGE_FACTOR):
            return (
                f"values up to {peak:.3g} in band {band + 1} where scenes usually reach {typical:.3g} (a factor "
                f"over {RANGE_FACTOR:g}: another scale or corrupt values); left out of the band statistics"
            )
    return None


def scene_statistics(scenes: Iterable[Scene], channels: int, nodata: float | None = None) -> Measured:
    """Per-band statistics over every pixel of ``scenes``, read block by block (never a scene whole).

    NaN and ±inf never count (they are counted per file in ``nonfinite``). Each scene is measured on its own
    and merged only if whole: a scene that cannot be read, or whose values are on another scale than most
    (its largest |value| in some band over :data:`RANGE_FACTOR` times, or under 1/RANGE_FACTOR of, the median
    of the first :data:`REFERENCE_SCENES` scenes' — a float scene scaled by 1e30 among reflectances), is left
    out and listed in ``excluded`` with the reason. Fewer than three readable scenes are not judged by scale.
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

    for scene in scenes:
        try:
            stats = _scene_stats(scene, channels, nodata, result.nonfinite)
        except DataError as err:
            result.excluded[scene.path] = str(err).removeprefix(f"{scene.path}: ")
            continue
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
