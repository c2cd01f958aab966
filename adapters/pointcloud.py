"""Point clouds: open3d reading, unit-sphere normalisation, subsampling, Point-MAE's augmentation, pictures.

Files, read through open3d:

- ``.ply``, ``.pcd``, ``.xyz``, ``.xyzn``, ``.xyzrgb``, ``.pts``: point clouds (``o3d.io.read_point_cloud``);
- ``.npy``: a P×3 (or wider, xyz first) array, as Point-MAE's ShapeNet-55 release ships its clouds;
- ``.txt``: ModelNet's ``x,y,z,nx,ny,nz`` rows. open3d's ``xyz`` reader wants spaces and reads
  comma-separated rows as zero points, so these are parsed with numpy (commas or spaces, the
  first three columns) and kept as an ``o3d.geometry.PointCloud`` like the others;
- ``.off``, ``.obj``, ``.stl``: meshes (``o3d.io.read_triangle_mesh``), sampled uniformly on their
  surface to ``mesh_samples`` points under a fixed open3d seed, so a mesh always gives the same cloud.

Every cloud is centred at its centroid and scaled so its farthest point lies on the unit
sphere, then cut to N points (``model.input_size`` is ``[N, 3]``): a random subset for
training (torch's generator, which :class:`mimsdk.data.SeededDataset` seeds per item, so
resume is exact), farthest point sampling for evaluation. A cloud with fewer than N points
(but at least the tokenizer's G and K) is filled up by repeating random points of its own.
Training then scales each axis by U(2/3, 3/2) and shifts it by U(-0.2, 0.2) (Point-MAE's
pre-training augmentation) and, if ``rotate`` is set, turns it about the up axis (``data.options.up_axis``,
stored with the model and read back for its pictures and further training).

Items are ``(tensor N×3 float32, label)``; labels come from ``data.labels`` (CSV ``path,label``,
paths relative to the CSV) or from class sub-folders. Every file is read once before training:
an empty file, a PLY file shorter than its header declares (truncated), NaN or infinite coordinates,
fewer points than the tokenizer's groups or group size, an error open3d reports while reading (its
RPly messages are caught and put into the message naming the file), or an unknown extension is one
DataError naming the file (``data.strict``) or one warning per file, which is then skipped. A file
that fails only when training reads it is named once and replaced (:class:`~mimsdk.data.SampleDataset`).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import open3d as o3d
import torch
from PIL import Image

from mimsdk.adapter import Adapter, ScanPolicy, readable_path
from mimsdk.config import DataConfig, ModelConfig, from_mapping
from mimsdk.data import SampleDataset, first_line
from mimsdk.errors import ConfigError, DataError
from mimsdk.labels import label_files
from mimsdk.registry import ADAPTERS
from mimsdk.variants.point_groups import PointGroupOptions, farthest_point_sample

CLOUD_SUFFIXES = (".ply", ".pcd", ".xyz", ".xyzn", ".xyzrgb", ".pts")
TEXT_SUFFIXES = (".txt",)
ARRAY_SUFFIXES = (".npy",)
MESH_SUFFIXES = (".off", ".obj", ".stl")
SUFFIXES = CLOUD_SUFFIXES + TEXT_SUFFIXES + ARRAY_SUFFIXES + MESH_SUFFIXES
AXES = {"x": 0, "y": 1, "z": 2}
# open3d's verbosity and mesh-sampling seed are global to the process: files are read one after the other.
POLICY = ScanPolicy(threads=1)


@dataclass
class PointCloudOptions:
    """``data.options`` of the point-cloud adapter."""

    up_axis: str = "y"  # ModelNet and ShapeNet stand on y
    augment: bool = True  # the training view's augmentation; evaluation never augments
    scale: list[float] = field(default_factory=lambda: [2 / 3, 3 / 2])  # per-axis factor range (Point-MAE)
    translate: float = 0.2  # per-axis shift range ±translate (Point-MAE)
    rotate: bool = False  # random rotation about the up axis
    mesh_samples: int = 8192  # points sampled on a mesh's surface before subsampling
    eval_sampling: str = "fps"  # evaluation view: "fps" or "first" (the first N points)
    mesh_seed: int = 0  # open3d's seed for mesh surface sampling


def check_pointcloud_options(opts: PointCloudOptions) -> PointCloudOptions:
    """Ranges :func:`~mimsdk.config.adapter_options` does not check; errors name ``data.options.<key>``."""
    if opts.up_axis not in AXES:
        raise ConfigError(f"data.options.up_axis: {opts.up_axis!r} is not allowed; expected one of x, y, z")
    if len(opts.scale) != 2 or not 0 < opts.scale[0] <= opts.scale[1]:
        raise ConfigError(f"data.options.scale: expected [low, high] with 0 < low <= high, got {opts.scale}")
    if opts.translate < 0:
        raise ConfigError(f"data.options.translate: must be >= 0, got {opts.translate}")
    if opts.mesh_samples < 1:
        raise ConfigError(f"data.options.mesh_samples: must be at least 1, got {opts.mesh_samples}")
    if opts.eval_sampling not in ("fps", "first"):
        raise ConfigError(f"data.options.eval_sampling: {opts.eval_sampling!r} is not allowed; expected fps or first")
    return opts


PLY_TYPES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8,
}  # fmt: skip


def check_ply(path: Path) -> None:
    """The body of a PLY file holds what its header declares: DataError naming the file if it is shorter.

    open3d reads a truncated PLY as the declared number of points, the missing ones zero, and only prints
    "RPly: Error reading ..." without the file's name; the header's counts and property types give the bytes
    (binary) or lines (ascii) the data needs, checked here before open3d reads it.
    """
    with path.open("rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise DataError(f"{path}: not a PLY file (no 'ply' ... 'end_header' header)")
    body = head.find(b"\n", end) + 1 or len(head)
    fmt, elements = "", []  # [name, count, bytes per item or None when it has list properties]
    for line in head[:end].decode("ascii", "replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "format":
            fmt = words[1]
        elif len(words) >= 3 and words[0] == "element" and words[2].isdigit():
            elements.append([words[1], int(words[2]), 0])
        elif len(words) >= 3 and words[0] == "property" and elements:
            size = None if words[1] == "list" else PLY_TYPES.get(words[1])
            elements[-1][2] = None if size is None or elements[-1][2] is None else elements[-1][2] + size
    vertices = next((count for name, count, _ in elements if name == "vertex"), 0)
    have = path.stat().st_size - body
    if fmt.startswith("binary"):
        need = 0
        for _, count, size in elements:  # the elements of known size up to the first with lists
            if size is None:
                break
            need += count * size
        if have < need:
            raise DataError(
                f"{path}: truncated: its header declares {vertices} vertices ({need} bytes of data), "
                f"the file holds {max(have, 0)} bytes after the header"
            )
    elif fmt == "ascii":
        need = sum(count for _, count, _ in elements)
        with path.open("rb") as f:
            f.seek(body)
            lines = sum(1 for line in f if line.strip())
        if lines < need:
            raise DataError(
                f"{path}: truncated: its header declares {need} rows ({vertices} vertices), the file holds {lines}"
            )


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


def _group_needs(model: ModelConfig) -> tuple[int, int]:
    """(G, K) of the model's point-group tokenizer."""
    if model.tokenizer != "point_groups":
        raise ConfigError(f"model.tokenizer: point clouds need 'point_groups', got {model.tokenizer!r}")
    opts = from_mapping(PointGroupOptions, model.tokenizer_options, "model.tokenizer_options.")
    return opts.groups, opts.group_size


def _num_points(model: ModelConfig) -> int:
    if len(model.input_size) != 2 or model.input_size[1] != 3:
        raise ConfigError(f"model.input_size: point clouds are [N, 3] (points per cloud, xyz); got {model.input_size}")
    return model.input_size[0]


def scan_files(
    root: str | Path, data: DataConfig, model: ModelConfig, opts: PointCloudOptions
) -> tuple[list[Path], list[int], list[str]]:
    """Usable point-cloud files under ``root`` (a labels CSV beside them left out) with labels (-1 when
    unlabelled) and class names. Every file is read once (:class:`~mimsdk.adapter.ScanPolicy`)."""
    groups, group_size = _group_needs(model)
    need = max(groups, group_size)
    root = Path(root)

    def probe(path: Path) -> Path:
        count = len(read_points(path, opts.mesh_samples, opts.mesh_seed))
        if count < need:
            raise DataError(
                f"{path}: {count} points, fewer than the tokenizer's {groups} groups of {group_size} points need"
            )
        return path

    files = POLICY.walk(root, f"point clouds ({', '.join(SUFFIXES)})", lambda p: p.suffix.lower() != ".csv")
    good = [path for path, _ in POLICY.check(root, files, probe, data.strict)]
    labels, classes = label_files(good, root, data.labels)
    return good, labels, classes


class PointCloudDataset(SampleDataset):
    """Point-cloud files -> (tensor N×3 float32, label); a file that fails when read is named once and replaced.

    Args:
        files, labels, classes: from :func:`scan_files`.
        num_points: N. opts: the adapter's options. train: random subset and augmentation, else deterministic.
    """

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        classes: list[str],
        num_points: int,
        opts: PointCloudOptions,
        train: bool,
    ) -> None:
        self.files, self.labels, self.classes = files, labels, classes
        self.num_points, self.opts, self.train = num_points, opts, train

    def __len__(self) -> int:
        return len(self.files)

    def sample(self, points: torch.Tensor) -> torch.Tensor:
        """P×3 -> N×3: random subset (training), FPS or the first N (evaluation); repeats points when P < N."""
        n, count = self.num_points, points.shape[0]
        if count < n:  # fill up with the cloud's own points, drawn at random (or cyclically for evaluation)
            extra = torch.randint(count, (n - count,)) if self.train else torch.arange(n - count) % count
            points = torch.cat([points, points[extra]])
        elif self.train:
            points = points[torch.randperm(count)[:n]]
        elif self.opts.eval_sampling == "fps":
            points = points[farthest_point_sample(points[None], n)[0]]
        else:
            points = points[:n]
        return points

    def augment(self, points: torch.Tensor) -> torch.Tensor:
        """N×3 -> N×3: rotation about the up axis (if set), per-axis scale and shift (Point-MAE)."""
        if self.opts.rotate:
            angle = torch.rand(()).item() * 2 * math.pi
            c, s = math.cos(angle), math.sin(angle)
            up = AXES[self.opts.up_axis]
            a, b = [i for i in range(3) if i != up]
            rotation = torch.eye(3)
            rotation[a, a], rotation[a, b], rotation[b, a], rotation[b, b] = c, -s, s, c
            points = points @ rotation.T
        low, high = self.opts.scale
        scale = low + (high - low) * torch.rand(3)
        shift = self.opts.translate * (2 * torch.rand(3) - 1)
        return points * scale + shift

    def source(self, index: int) -> str:
        return str(self.files[index])

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        points = read_points(self.files[index], self.opts.mesh_samples, self.opts.mesh_seed)
        points = self.sample(torch.from_numpy(normalise(points)).float())
        if self.train and self.opts.augment:
            points = self.augment(points)
        return points.contiguous(), self.labels[index]


def _views(recon: dict[str, torch.Tensor], model: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample, from ``MaskedAutoencoder.reconstruct``: grouped points with masked groups at their
    centres, the reconstruction (B×G×K×3 each) and the mask B×G (1 = masked).

    ``untokenize`` adds each group's centre, so the "mask" entry is centre + (0 or 1); the centre
    is the first point of each group in "masked" (a centre is its own nearest neighbour, and a
    masked group is zeroed to its centre), which gives the mask back.
    """
    groups, group_size = _group_needs(model)
    shape = (-1, groups, group_size, 3)
    masked = recon["masked"].detach().float().cpu().reshape(shape)
    centres = masked[:, :, :1]
    mask = (recon["mask"].detach().float().cpu().reshape(shape) - centres).mean(dim=(2, 3)).round().clamp(0, 1)
    pred = recon["reconstruction"].detach().float().cpu().reshape(shape)
    return masked.numpy(), pred.numpy(), mask.numpy()


def picture(
    recon: dict[str, torch.Tensor], model: ModelConfig, max_samples: int = 4, up_axis: str = "y"
) -> Image.Image:
    """Rows of samples; columns input | visible groups | reconstruction (masked groups predicted, in red).

    3D scatter plots through matplotlib's Agg backend, viewed from the same angle.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    visible, pred, mask = _views(recon, model)
    inputs = recon["input"].detach().float().cpu().numpy()
    rows = min(max_samples, inputs.shape[0])
    fig = Figure(figsize=(9, 3 * rows), dpi=80)
    FigureCanvasAgg(fig)
    up = AXES[up_axis]
    order = [i for i in range(3) if i != up] + [up]  # matplotlib's z is up
    for r in range(rows):
        shown = mask[r] < 0.5
        panels = [
            ("input", [(inputs[r], "tab:blue")]),
            ("visible groups", [(visible[r][shown].reshape(-1, 3), "tab:gray")]),
            (
                "reconstruction",
                [(visible[r][shown].reshape(-1, 3), "tab:gray"), (pred[r][~shown].reshape(-1, 3), "tab:red")],
            ),
        ]
        for c, (title, clouds) in enumerate(panels):
            ax = fig.add_subplot(rows, 3, 3 * r + c + 1, projection="3d")
            for points, colour in clouds:
                if len(points):
                    p = points[:, order]
                    ax.scatter(p[:, 0], p[:, 1], p[:, 2], s=1.5, c=colour, depthshade=False)
            ax.set_xlim(-1, 1), ax.set_ylim(-1, 1), ax.set_zlim(-1, 1)
            ax.view_init(elev=20, azim=-60)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def write_ply(points: torch.Tensor | np.ndarray, path: str | Path, colours: np.ndarray | None = None) -> Path:
    """Write P×3 points (and optional P×3 colours in [0, 1]) as a ``.ply`` through open3d."""
    path = Path(path)
    cloud = o3d.geometry.PointCloud()
    array = points.detach().float().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    cloud.points = o3d.utility.Vector3dVector(array.reshape(-1, 3).astype(np.float64))
    if colours is not None:
        cloud.colors = o3d.utility.Vector3dVector(np.asarray(colours, dtype=np.float64).reshape(-1, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not o3d.io.write_point_cloud(str(path), cloud):
        raise OSError(f"open3d could not write {path}")
    return path


def write_reconstruction(recon: dict[str, torch.Tensor], model: ModelConfig, folder: str | Path) -> list[Path]:
    """One ``.ply`` per sample: visible groups grey, predicted masked groups red."""
    visible, pred, mask = _views(recon, model)
    paths = []
    for i in range(visible.shape[0]):
        shown = mask[i] < 0.5
        points = np.concatenate([visible[i][shown].reshape(-1, 3), pred[i][~shown].reshape(-1, 3)])
        colours = np.zeros_like(points)
        colours[: shown.sum() * visible.shape[2]] = 0.5
        colours[shown.sum() * visible.shape[2] :] = [0.85, 0.1, 0.1]
        paths.append(write_ply(points, Path(folder) / f"reconstruction_{i}.ply", colours))
    return paths


@ADAPTERS.register("pointcloud")
class PointCloudAdapter(Adapter):
    """Point clouds N×3 (``model.input_size`` is ``[N, 3]``) for the ``point_groups`` tokenizer."""

    name = "pointcloud"
    Options = PointCloudOptions
    stored = ("up_axis",)  # pictures and rotations turn about the axis the training data stood on
    policy = POLICY

    def check_options(self, opts: PointCloudOptions, model: ModelConfig | None) -> PointCloudOptions:
        return check_pointcloud_options(opts)

    def scan(
        self, path: str | Path, data: DataConfig, model: ModelConfig, opts: PointCloudOptions
    ) -> tuple[list[Path], list[int], list[str]]:
        extra = (repr(opts), _group_needs(model))
        return self.remember(path, data, extra, lambda: scan_files(path, data, model, opts))

    def build(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: PointCloudOptions, train: bool
    ) -> PointCloudDataset:
        _group_needs(model)
        num_points = _num_points(model)
        files, labels, classes = self.scan(path, data, model, opts)
        return PointCloudDataset(files, labels, classes, num_points, opts, train)

    def describe(self, data: DataConfig, model: ModelConfig, opts: PointCloudOptions) -> dict[str, Any]:
        # "up_axis" stays at the top level for readers of older metadata.
        return {"points": _num_points(model), "up_axis": opts.up_axis, "normalisation": "unit_sphere"}

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        return picture(recon, model, up_axis=self.trained_options(model).up_axis)
