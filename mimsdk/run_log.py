"""What a run says as it goes, on the main process: a summary at the start, ``metrics.csv`` and TensorBoard."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimsdk.atomic import WriteError, atomic_write
from mimsdk.throughput import COLUMNS as THROUGHPUT_COLUMNS
from mimsdk.throughput import LOADER_BOUND

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ["step", "loss", "lr", *THROUGHPUT_COLUMNS]
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
        try:
            with open(self.path, "a", newline="") as f:
                csv.DictWriter(f, self.columns, extrasaction="ignore").writerow(row)
        except OSError as err:  # an append is no atomic write: say which file, and why
            raise WriteError(self.path, err) from err
        if self.writer is not None:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(f"pretrain/{key}", value, row["step"])
        if len(row) > len(TRAIN_COLUMNS):
            log.info("step %d: %s", row["step"], {k: round(v, 4) for k, v in row.items() if k != "step"})

    def picture(self, tag: str, image: Any, step: int) -> None:
        """A PIL picture (reconstructions) in TensorBoard's images tab."""
        if self.writer is not None:
            self.writer.add_image(f"pretrain/{tag}", np.asarray(image.convert("RGB")), step, dataformats="HWC")

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


def save_picture(folder: Path, picture: Any, step: int, run_log: RunLog | None = None) -> Path:
    """``folder/step_NNNNNNN.png`` and ``folder/latest.png``, each written whole; also to TensorBoard."""
    folder.mkdir(exist_ok=True)
    path = folder / f"step_{step:07d}.png"
    for target in (path, folder / "latest.png"):
        atomic_write(target, lambda p: picture.save(p, format="PNG"))
    if run_log is not None:
        run_log.picture("reconstruction", picture, step)
    return path


def run_summary(trainer: Any) -> str:
    """What a trainer is about to do, in a few lines: data, model, schedule, device."""

    def counted(dataset: Any, path: Path) -> str:
        classes = f" in {len(dataset.classes)} classes" if dataset.classes else ", unlabelled"
        return f"{len(dataset)} samples{classes} from {path}"

    cfg, t = trainer.recipe, trainer.recipe.train
    dim, depth, heads = cfg.model.width
    params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
    held_out = f"; held out: {counted(trainer.eval_set, trainer.eval_path)}" if trainer.eval_set is not None else ""
    precision = "bf16" if trainer.autocast is torch.bfloat16 else "fp32"
    start = f", resuming at step {trainer.step}" if trainer.step else ""
    processes = f"{trainer.procs.world} process" + ("es" if trainer.procs.world > 1 else "")
    return "\n".join([
        f"{cfg.name}: {cfg.data.modality} data, {counted(trainer.view_set, trainer.data_path)}{held_out}",
        f"model: {dim} wide, {depth} blocks, {heads} heads, {params:.2f} M parameters, {trainer.model.num_tokens} "
        f"tokens, masker {cfg.model.masker} ({cfg.model.mask_ratio:g}), target {cfg.model.target}",
        f"training: {trainer.total_steps} steps of {trainer.global_batch * t.accum_steps} samples "
        f"on {processes}, peak lr {trainer.peak_lr:.2e}, {precision} on {trainer.device} with "
        f"{torch.get_num_threads()} threads{start}; run directory {trainer.run_dir}",
    ])  # fmt: skip


def closing_summary(history: list[dict[str, float]]) -> str:
    """The end of a run in one line: its last step and loss, and its medians of each rate."""
    if not history:
        return "no step was run"

    def median(key: str) -> float:
        values = sorted(row[key] for row in history if key in row and row[key] == row[key])  # NaN != NaN
        return values[len(values) // 2] if values else float("nan")

    mfu = median("mfu")
    used = f"MFU {mfu:.1%}, " if mfu == mfu else ""
    waited, data_rate, model_rate = data_rates(history)
    line = (
        f"done at step {history[-1]['step']}, loss {history[-1]['loss']:.4f}; medians: {median('images_per_s'):.1f} "
        f"samples/s, {median('tokens_per_s'):.0f} tokens/s, {used}peak memory {median('peak_mem_gb'):.2f} GB; "
        f"{waited:.0%} of the time waiting for data"
    )
    if waited >= LOADER_BOUND:
        line += (
            f"\nloader-bound: the data came at {data_rate:.1f} samples/s where the model alone ran at "
            f"{model_rate:.1f}; raise data.num_workers (mimsdk pretrain RECIPE --data-only measures the loader alone)"
        )
    return line


def data_rates(history: list[dict[str, float]]) -> tuple[float, float, float]:
    """Over the steps after the first (which also starts the loader's workers): the share of the time spent
    waiting for data, the samples/s that reached the model, and the samples/s of the model alone."""
    steady = [row for row in history[1:] or history if row.get("images_per_s", 0) > 0]
    if not steady:
        return 0.0, float("nan"), float("nan")
    seconds = [1.0 / row["images_per_s"] for row in steady]  # per sample: every step has the same batch
    waited = sum(t * row.get("data_wait", 0.0) for t, row in zip(seconds, steady))
    return waited / sum(seconds), len(steady) / sum(seconds), len(steady) / max(sum(seconds) - waited, 1e-12)
