"""What a point-cloud file's header says, read without its points: the check before training on big folders.

Only what a header proves is refused here (an empty file, an unknown extension, a PLY shorter than it declares,
an OFF mesh without faces, an array that is not P×3); a file that looks right but fails when its points are
read is named and skipped then (:class:`~mimsdk.data.SampleDataset`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mimsdk.adapters.pointcloud.ply import check_ply
from mimsdk.adapters.pointcloud.reading import ARRAY_SUFFIXES, MESH_SUFFIXES, SUFFIXES
from mimsdk.errors import DataError

HEAD_BYTES = 1 << 16  # headers are a few hundred bytes; a first text row fits many times over
ROW_SUFFIXES = (".txt", ".xyz", ".xyzn", ".xyzrgb")  # plain rows of numbers, the first one tells
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(nan|inf)$", re.IGNORECASE)


def header_points(path: Path, mesh_samples: int) -> int | None:
    """The points ``path`` will give as its header declares them (``mesh_samples`` for a mesh), or None where
    its format declares no count (text rows, OBJ, STL). Raises DataError naming the file when the header
    already shows it unusable."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown extension {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty file")
    if suffix == ".ply":
        return check_ply(path, rows=False)
    if suffix in ARRAY_SUFFIXES:
        return _array_points(path, size)
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES).decode("utf-8", "replace")
    if suffix == ".pcd":
        return _pcd_points(path, head)
    if suffix == ".off":
        _off_faces(path, head)
    if suffix in MESH_SUFFIXES:
        return mesh_samples
    if suffix in ROW_SUFFIXES:
        first = next((line for line in head.splitlines() if line.strip()), "")
        fields = [w for w in re.split(r"[,\s]+", first.strip()) if w]
        if len(fields) < 3 or not all(NUMBER.match(w) for w in fields[:3]):
            raise DataError(f"{path}: not rows of numbers (first row {first.strip()[:60]!r}); expected x, y, z")
    return None


def _array_points(path: Path, size: int) -> int:
    """P of a ``.npy`` array P×3 or wider, from its header; DataError if it is not one or is cut short."""
    with path.open("rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
        except ValueError as err:
            raise DataError(f"{path}: not a numpy array file ({err})") from err
        offset = f.tell()
    if len(shape) != 2 or not np.issubdtype(dtype, np.number) or shape[1] < 3:
        raise DataError(f"{path}: a {dtype} array of shape {shape}; expected numbers, P×3 or wider")
    need = shape[0] * shape[1] * dtype.itemsize
    if size - offset < need:
        have = size - offset
        raise DataError(f"{path}: truncated: its header declares {shape} ({need} bytes), the file holds {have}")
    return shape[0]


def _pcd_points(path: Path, head: str) -> int:
    """The POINTS line of a PCD header."""
    for line in head.splitlines():
        words = line.split()
        if len(words) == 2 and words[0].upper() == "POINTS" and words[1].isdigit():
            return int(words[1])
        if words and words[0].upper() == "DATA":
            break
    raise DataError(f"{path}: not a PCD file (no POINTS line in its header)")


def _off_faces(path: Path, head: str) -> None:
    """An OFF mesh whose header declares no faces has no surface to sample. A header this cannot parse is
    left to open3d's full read."""
    words = [w for line in head.splitlines()[:4] for w in line.split("#")[0].split()]
    if words and words[0].upper().endswith("OFF") and len(words) >= 3 and words[2].isdigit() and int(words[2]) == 0:
        raise DataError(f"{path}: no triangles open3d can read; its header declares 0 faces")
