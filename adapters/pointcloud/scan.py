"""The scan: the point-cloud files under a folder checked before training, the unusable ones named.

A folder of up to :data:`~mimsdk.scan.FULL_CHECK_LIMIT` files is read whole, file by file, so every unusable one
is named before step one; reading one costs about 1 ms for a 2,048-point text file and 4 ms for a mesh sampled to
8,192 points on one core here, 5-20 s at the limit. A bigger folder (a corpus) has only its headers read
(:func:`~mimsdk.adapters.pointcloud.headers.header_points`), and a file that fails later is named and skipped
when training reads it (:class:`~mimsdk.data.SampleDataset`). Verdicts are kept by path, size and modification
time (:class:`~mimsdk.scan.VerdictCache`), so a folder scanned before is read again only where files changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mimsdk.adapter import ScanPolicy
from mimsdk.adapters.pointcloud.headers import header_points
from mimsdk.adapters.pointcloud.options import PointCloudOptions, group_needs
from mimsdk.adapters.pointcloud.reading import SUFFIXES, read_points
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import PROGRAM_ERRORS, failure_reason, first_line
from mimsdk.errors import DataError
from mimsdk.labels import label_files
from mimsdk.scan import FULL_CHECK_LIMIT, VerdictCache

# open3d's verbosity and mesh-sampling seed are global to the process: files are read one after the other.
POLICY = ScanPolicy(threads=1)
HEADER_THREADS = 8  # headers are small plain reads, safe in threads: they overlap their waits on the disk


def scan_files(
    root: str | Path, data: DataConfig, model: ModelConfig, opts: PointCloudOptions
) -> tuple[list[Path], list[int], list[str]]:
    """Usable point-cloud files under ``root`` (a labels CSV beside them left out) with labels (-1 when
    unlabelled) and class names: every file read whole, or its header only in a folder of more than
    :data:`~mimsdk.scan.FULL_CHECK_LIMIT` files (:class:`~mimsdk.adapter.ScanPolicy`)."""
    groups, group_size = group_needs(model)
    root = Path(root)

    def enough(path: Path, count: int | None) -> None:
        if count is not None and count < max(groups, group_size):
            raise DataError(
                f"{path}: {count} points, fewer than the tokenizer's {groups} groups of {group_size} points need"
            )

    files = POLICY.walk(root, f"point clouds ({', '.join(SUFFIXES)})", lambda p: p.suffix.lower() != ".csv")
    whole = len(files) <= FULL_CHECK_LIMIT
    if whole:
        threads, probe = 1, lambda path: enough(path, len(read_points(path, opts.mesh_samples, opts.mesh_seed)))
    else:
        threads, probe = HEADER_THREADS, lambda path: enough(path, header_points(path, opts.mesh_samples))
    # A verdict holds for these settings only: the mesh sampling and the tokenizer decide a count's fate.
    kind = f"pointcloud-{'full' if whole else 'header'}-{opts.mesh_samples}-{opts.mesh_seed}-{groups}x{group_size}"
    problems = VerdictCache(root, kind).check(files, verdict(probe), threads)
    good = [files[i] for i in POLICY.settle(root, problems, data.strict)]
    labels, classes = label_files(good, root, data.labels)
    return good, labels, classes


def verdict(probe: Callable[[Path], None]) -> Callable[[Path], str | None]:
    """``probe`` as a verdict: None for a usable file, else one line naming it and why (a reading library's
    own error included); errors of the program still propagate."""

    def judge(path: Path) -> str | None:
        try:
            probe(path)
        except DataError as err:
            return first_line(str(err))
        except PROGRAM_ERRORS:
            raise
        except Exception as err:  # noqa: BLE001 - a reading library's own error the probe did not name
            return failure_reason(err, str(path))
        return None

    return judge
