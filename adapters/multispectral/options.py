"""The multispectral adapter's ``data.options``."""

from __future__ import annotations

from dataclasses import dataclass, field

from mimsdk.adapters.multispectral.bands import BANDS
from mimsdk.config import choice
from mimsdk.errors import ConfigError

# How files are read (their band names and order, layout, nodata): stored with the model.
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
    # Largest scene grid (height × width) a header may claim: 2**28 holds a whole Sentinel-2 tile (10980² at
    # 10 m) twice over; a larger claim (a sparse 100000² GeoTIFF) is refused before anything is read.
    max_pixels: int = 1 << 28
    # A scene at least twice this many pixels high (wide) is cut into chips this high (wide), the last taking the
    # rest: the unit a shard stores and training draws windows from. 512² × 13 bands of uint16 is 6.8 MB, well
    # inside a 64 MB shard; EuroSAT (64²), BigEarthNet (120²) and SSL4EO (264²) scenes stay whole.
    chip_size: int = 512


def check_multispectral_options(opts: MultispectralOptions) -> MultispectralOptions:
    """Band names known (:data:`~mimsdk.adapters.multispectral.bands.BANDS`) and counts in range."""
    unknown = [b for b in opts.bands + opts.file_bands if b not in BANDS]
    if unknown:
        key = "bands" if unknown[0] in opts.bands else "file_bands"
        raise ConfigError(f"data.options.{key}: unknown band {unknown[0]!r}; known bands: {', '.join(BANDS)}")
    if opts.max_pixels < 1:
        raise ConfigError(f"data.options.max_pixels must be at least 1, got {opts.max_pixels}")
    if opts.chip_size < 1:
        raise ConfigError(f"data.options.chip_size must be at least 1, got {opts.chip_size}")
    if opts.tiles_per_scene < 1:
        raise ConfigError(f"data.options.tiles_per_scene must be at least 1, got {opts.tiles_per_scene}")
    return opts
