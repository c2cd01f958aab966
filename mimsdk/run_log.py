"""What a run writes as it goes, on the main process: ``metrics.csv`` and TensorBoard."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mimsdk.atomic import atomic_write

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ["step", "loss", "lr", "images_per_s"]
EVAL_COLUMNS = ["eval_loss", "knn_acc"]


class RunLog:
    """``metrics.csv`` (one row per logged step) and a TensorBoard writer in ``run_dir/tb``.

    Args:
        run_dir: the run directory. evaluates: whether rows may carry held-out measurements.
        step: the step the run starts (or resumes) from: TensorBoard events past it are dropped.
    """

    def __init__(self, run_dir: Path, evaluates: bool, step: int = 0) -> None:
        self.path = run_dir / "metrics.csv"
        self.columns = TRAIN_COLUMNS + (EVAL_COLUMNS if evaluates else [])
        self.writer = self._tensorboard(run_dir / "tb", step)

    def restart(self, history: list[dict[str, float]], logged: Callable[[dict[str, float]], bool]) -> None:
        """Rewrite metrics.csv from ``history``'s logged rows (after a resume, rows past the checkpoint go)."""
        rows = [row for row in history if logged(row)]

        def write(p: str) -> None:
            with open(p, "w", newline="") as f:
                writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.path, write)

    def write(self, row: dict[str, float]) -> None:
        """Append one step's row to metrics.csv and its values to TensorBoard."""
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(f"pretrain/{key}", value, row["step"])
        if len(row) > len(TRAIN_COLUMNS):
            log.info("step %d: %s", row["step"], {k: round(v, 4) for k, v in row.items() if k != "step"})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    @staticmethod
    def _tensorboard(folder: Path, step: int) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
            log.warning("tensorboard is not importable; metrics go to metrics.csv only")
            return None
        return SummaryWriter(str(folder), purge_step=step + 1 if step else None)
