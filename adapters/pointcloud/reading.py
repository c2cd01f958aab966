"""Reading point clouds: clouds and meshes through open3d (its messages caught and put into a DataError naming
the file), text rows and ``.npy`` arrays through numpy; unit-sphere normalisation."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import open3d as o3d

from mimsdk.adapter import readable_path
from mimsdk.adapters.pointcloud.ply import check_ply
from mimsdk.data import first_line
from mimsdk.errors import DataError

CLOUD_SUFFIXES = (".ply", ".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts")
TEXT_SUFFIXES = (".txt",)
ARRAY_SUFFIXES = (".npy",)
MESH_SUFFIXES = (".off", ".obj", ".stl")
SUFFIXES = CLOUD_SUFFIXES + TEXT_SUFFIXES + ARRAY_SUFFIXES + MESH_SUFFIXES


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Collect what native code prints on the process's stderr (open3d's RPly reports its errors there,
    naming no file); the list receives the text when the block ends, so the caller can name the file."""
    collected: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr to redirect (a closed or odd one): read without collecting
        yield collected
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield collected
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            collected.append(tmp.read().decode("utf-8", "replace"))


def _read_array(path: Path) -> o3d.geometry.PointCloud:
    """A comma- or space-separated text file, or a ``.npy`` array: rows of x, y, z (more columns ignored)."""
    if path.suffix.lower() in ARRAY_SUFFIXES:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise DataError(f"{path}: not a numpy array file ({err})") from err
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
            raise DataError(f"{path}: a {array.dtype} array of shape {array.shape}; expected numbers, P×3 or wider")
        array = array.astype(np.float64)
    else:
        with path.open() as f:
            first = next((line for line in f if line.strip()), "")
        try:
            array = np.loadtxt(path, delimiter="," if "," in first else None, ndmin=2, dtype=np.float64)
        except ValueError as err:
            raise DataError(f"{path}: not rows of numbers ({err})") from err
    if array.size and array.shape[1] < 3:
        raise DataError(f"{path}: rows have {array.shape[1]} columns; expected at least x, y, z")
    cloud = o3d.geometry.PointCloud()
    if array.size:
        cloud.points = o3d.utility.Vector3dVector(array[:, :3])
    return cloud


def read_points(path: str | Path, mesh_samples: int = 8192, mesh_seed: int = 0) -> np.ndarray:
    """The points of one file as P×3 float64, unchanged (no normalisation); DataError naming the file if unusable."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unknown extension {path.suffix!r}; expected one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    if suffix == ".ply":
        check_ply(path)
    if suffix in TEXT_SUFFIXES + ARRAY_SUFFIXES:
        cloud = _read_array(path)
    else:
        cloud = _read_with_open3d(path, suffix, mesh_samples, mesh_seed)
    points = np.asarray(cloud.points)
    if len(points) == 0:
        raise DataError(f"{path}: no points open3d can read")
    if not np.isfinite(points).all():
        bad = int((~np.isfinite(points)).any(axis=1).sum())
        raise DataError(f"{path}: {bad} of {len(points)} points have NaN or infinite coordinates")
    return points


def _read_with_open3d(path: Path, suffix: str, mesh_samples: int, mesh_seed: int) -> o3d.geometry.PointCloud:
    """A cloud or a mesh sampled on its surface, through open3d; what open3d prints about it becomes the
    DataError naming the file (a failed read is otherwise a line on stderr and an empty or padded result)."""
    with native_stderr() as printed, readable_path(path) as name:
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            if suffix in MESH_SUFFIXES:
                mesh = o3d.io.read_triangle_mesh(name)
            else:
                cloud = o3d.io.read_point_cloud(name, remove_nan_points=False, remove_infinite_points=False)
    if printed and printed[0].strip():
        raise DataError(f"{path}: open3d cannot read it ({first_line(printed[0])})")
    if suffix not in MESH_SUFFIXES:
        return cloud
    if len(mesh.triangles) == 0:
        raise DataError(f"{path}: no triangles open3d can read; a mesh needs faces to sample its surface")
    vertices = np.asarray(mesh.vertices)
    if not np.isfinite(vertices).all():
        raise DataError(f"{path}: mesh vertices hold NaN or infinite coordinates")
    o3d.utility.random.seed(mesh_seed)
    return mesh.sample_points_uniformly(number_of_points=mesh_samples)


def normalise(points: np.ndarray) -> np.ndarray:
    """Centre at the centroid, scale so the farthest point is at distance 1 (P×3 -> P×3)."""
    centred = points - points.mean(axis=0)
    radius = np.linalg.norm(centred, axis=1).max()
    return centred / radius if radius > 0 else centred
