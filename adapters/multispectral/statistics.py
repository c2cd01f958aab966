"""Per-band statistics in one streaming pass over the files' blocks, nodata excluded."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from mimsdk.adapters.multispectral.scenes import Scene, unreadable
from mimsdk.errors import DataError


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
                    raise DataError(f"{src.path}: {unreadable(err)}") from err
    return stats
