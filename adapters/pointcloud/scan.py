"""The scan: every point-cloud file under a folder read once before training, the unusable ones named."""

from __future__ import annotations

from pathlib import Path

from mimsdk.adapter import ScanPolicy
from mimsdk.adapters.pointcloud.options import PointCloudOptions, group_needs
from mimsdk.adapters.pointcloud.reading import SUFFIXES, read_points
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.errors import DataError
from mimsdk.labels import label_files

# open3d's verbosity and mesh-sampling seed are global to the process: files are read one after the other.
POLICY = ScanPolicy(threads=1)


def scan_files(
    root: str | Path, data: DataConfig, model: ModelConfig, opts: PointCloudOptions
) -> tuple[list[Path], list[int], list[str]]:
    """Usable point-cloud files under ``root`` (a labels CSV beside them left out) with labels (-1 when
    unlabelled) and class names. Every file is read once (:class:`~mimsdk.adapter.ScanPolicy`)."""
    groups, group_size = group_needs(model)
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
