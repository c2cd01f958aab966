"""What headers alone say of an item, no voxel decoded: whether it can be read (the check before training on a big
folder) and how many bytes its stored volume will take (what the memory cache's limit is counted in).

A header is a few hundred bytes (NIfTI), a DICOM file read up to its pixels, a PNG's size, an npz entry's
``.npy`` header: about a millisecond each where decoding a volume takes tens to thousands.
"""

from __future__ import annotations

import functools
import io
import math
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mimsdk.adapters.medical.files import (
    NIFTI,
    PICTURES,
    check_file,
    check_series,
    is_dicom,
    nifti_header,
    npz_array,
)
from mimsdk.adapters.medical.stored import SCALED
from mimsdk.errors import DataError

if TYPE_CHECKING:
    from mimsdk.adapters.medical.prepare import Prepare

# Above this many files (DICOM series, subject folders) the check before training reads headers only, and a
# file that fails to decode is found when training first reads it (named once, replaced, counted). Decoding
# and resampling a volume takes 0.05-2 s on a core, so 2,000 of them is up to a minute on a laptop's cores,
# about what a user waits for once; a header takes about a millisecond, so 10^5 files are checked in a minute
# or two. npz images are not counted: their arrays are checked whole when the file is listed.
BIG_FOLDER = 2000


def check_headers(item: dict[str, Any], max_voxels: int) -> None:
    """The checks that need no decoding: the item was listed whole, each file is not empty, is the format its
    name says, claims at most ``max_voxels`` (an uncompressed NIfTI holds the bytes it declares), and a DICOM
    folder is one series. Raises DataError naming the file."""
    if item.get("error"):
        raise DataError(item["error"])
    if item.get("missing"):
        raise DataError(f"{item['src']}: no file for sequence(s) {', '.join(item['missing'])}")
    if "npz" in item:
        return  # its array was read and checked when the npz was listed
    for path in item["image"]:
        check_file(Path(path), max_voxels)
    first = Path(item["image"][0])
    if first.is_dir():
        check_series(first, max_voxels)


def stored_bytes(item: dict[str, Any], prepare: Prepare) -> int:
    """The bytes ``prepare`` will store for ``item``, from its headers: channels × the voxels after reorienting
    and resampling (computed as MONAI's ``Spacing`` does) × 2 (uint16) or 4 (float32). An upper bound: the
    foreground crop can only make it smaller. 0 for an item whose headers cannot be read (it is bad, and its
    record is an error of a few bytes)."""
    try:
        shape, affine = _geometry(item, prepare.ndim)
        voxels = math.prod(_resampled(shape, affine, prepare))
    except Exception:  # noqa: BLE001 - unreadable headers: the checks name the file; nothing to budget
        return 0
    return prepare.in_chans * voxels * (2 if prepare.intensity in SCALED else 4)


def _geometry(item: dict[str, Any], ndim: int) -> tuple[list[int], np.ndarray]:
    """The spatial shape the reader will give and its (ndim+1)² affine (voxel -> mm), from headers."""
    if "npz" in item:
        path, key, _ = item["npz"]
        shape = list(npz_array(path, key).shape[1:])
        return shape[:ndim], np.eye(ndim + 1)
    first = Path(item["image"][0])
    if first.is_dir():  # a DICOM series: slices of Rows × Columns, stacked
        import pydicom

        slices = [p for p in sorted(first.iterdir()) if p.is_file() and is_dicom(p)]
        header = pydicom.dcmread(slices[0], stop_before_pixels=True)
        rows, columns = header.get("PixelSpacing", [1.0, 1.0])
        depth = header.get("SpacingBetweenSlices") or header.get("SliceThickness") or 1.0
        shape = [int(header.Columns), int(header.Rows), len(slices)]
        return shape, np.diag([float(columns), float(rows), float(depth), 1.0])
    name = first.name.lower()
    if name.endswith(NIFTI):
        import nibabel as nib

        head = nifti_header(first)  # its first 540 bytes: a quarter of nib.load's time
        two = 540 in struct.unpack("<i", head[:4]) + struct.unpack(">i", head[:4])
        header = (nib.Nifti2Header if two else nib.Nifti1Header).from_fileobj(io.BytesIO(head), check=False)
        affine = np.asarray(header.get_best_affine(), dtype=np.float64)  # the affine NibabelReader gives
        if ndim == 2:
            affine = affine[np.ix_([0, 1, 3], [0, 1, 3])]
        return list(header.get_data_shape()[:ndim]), affine
    if first.suffix.lower() in PICTURES:
        from PIL import Image

        with Image.open(first) as picture:
            width, height = picture.size
        return [height, width], np.eye(3)
    import pydicom

    header = pydicom.dcmread(first, stop_before_pixels=True)
    rows, columns = header.get("PixelSpacing", [1.0, 1.0])
    return [int(header.Rows), int(header.Columns)], np.diag([float(rows), float(columns), 1.0])


def _resampled(shape: list[int], affine: np.ndarray, prepare: Prepare) -> tuple[int, ...]:
    """``shape`` after *prepare*'s orientation and resampling (the voxels' count is what matters)."""
    opts = prepare.opts
    if not opts.spacing:
        return tuple(shape)  # reorienting permutes the axes: the count stays
    # An isotropic spacing gives the same count whatever the axes' order: no need to reorient first.
    orientation = opts.orientation if prepare.ndim == 3 and len(set(opts.spacing)) > 1 else "none"
    return _grid(tuple(shape), affine.tobytes(), len(affine), orientation, tuple(opts.spacing))


@functools.lru_cache(maxsize=4096)  # a corpus resampled once, or one scanner's protocol: few distinct grids
def _grid(
    shape: tuple[int, ...], affine_bytes: bytes, size: int, orientation: str, spacing: tuple[float, ...]
) -> tuple[int, ...]:
    """The output grid of MONAI's ``Spacing`` (its own ``zoom_affine`` and ``compute_shape_offset``), after
    nibabel's reorientation to ``orientation`` ("none": as stored)."""
    import nibabel as nib
    from monai.data.utils import compute_shape_offset, zoom_affine

    affine = np.frombuffer(affine_bytes, dtype=np.float64).reshape(size, size)
    if orientation != "none":
        turn = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(affine), nib.orientations.axcodes2ornt(orientation)
        )
        affine = affine @ nib.orientations.inv_ornt_aff(turn, shape)
        turned = [0] * len(shape)
        for axis, (to, _) in enumerate(turn):
            turned[int(to)] = shape[axis]
        shape = tuple(turned)
    out, _ = compute_shape_offset(list(shape), affine, zoom_affine(affine, list(spacing), diagonal=False))
    return tuple(int(s) for s in out)
