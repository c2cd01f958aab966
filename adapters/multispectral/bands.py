"""Spectral bands by name: Sentinel-2 and Landsat 8/9 wavelengths and resolutions, and matching bands by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from mimsdk.errors import DataError


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
