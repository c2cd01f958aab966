"""What a run does when a step's loss or gradients are not finite (``train.on_nonfinite``).

The loss and the gradient norm are checked before the optimiser step, and the weights before each
checkpoint, so a non-finite step is never applied and non-finite weights are never saved:

- ``stop`` (default): end the run with one error naming the step; the checkpoint on disk holds the
  last good step and resumes;
- ``skip``: drop the step (its batch is consumed, nothing is applied) and count it, stopping after
  ``train.max_nonfinite`` in a row;
- ``rollback``: reload the last checkpoint and go on with a re-drawn batch order, at most
  ``train.max_nonfinite`` times in a run.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch

from mimsdk.errors import DivergedError

log = logging.getLogger(__name__)

MODES = ("stop", "skip", "rollback")
ADVICE = "lower train.lr, train.precision=fp32, or train.clip_grad=1.0"


def all_finite(module: torch.nn.Module) -> bool:
    """Whether every parameter and floating buffer of ``module`` is finite."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


class NonFiniteGuard:
    """Judges each step and keeps the counts (``skipped``, ``rollbacks``) a checkpoint stores.

    Args:
        mode: one of ``MODES``. patience: ``train.max_nonfinite``.
    """

    def __init__(self, mode: str, patience: int, skipped: int = 0, rollbacks: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"train.on_nonfinite: {mode!r}; expected one of {', '.join(MODES)}")
        self.mode, self.patience = mode, patience
        self.skipped, self.rollbacks, self.in_a_row = skipped, rollbacks, 0

    def judge(self, step: int, loss: float, grad_norm: float, saved: int | None) -> str:
        """``"apply"``, ``"skip"`` or ``"rollback"`` for step ``step`` (1-based); raises DivergedError to stop.

        ``saved`` is the step of the checkpoint on disk (None when there is none yet).
        """
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.in_a_row = 0
            return "apply"
        self.in_a_row += 1
        what = f"step {step}: the loss is {loss:.4g} and the gradient norm {grad_norm:.4g}"
        return self._act(what, saved)

    def judge_weights(self, step: int, model: torch.nn.Module, saved: int | None) -> str:
        """Before a checkpoint: ``"apply"`` (save it) if the weights are finite, else as ``judge`` decides."""
        if all_finite(model):
            return "apply"
        return self._act(f"step {step}: the weights are no longer finite", saved, can_skip=False)

    def _act(self, what: str, saved: int | None, can_skip: bool = True) -> str:
        kept = f"the checkpoint on disk holds step {saved}" if saved is not None else "no checkpoint was written yet"
        if self.mode == "skip" and can_skip and self.in_a_row <= self.patience:
            self.skipped += 1
            warnings.warn(f"{what}; step skipped ({self.in_a_row} in a row, {self.skipped} in all)", stacklevel=3)
            return "skip"
        if self.mode == "rollback" and saved is not None and self.rollbacks < self.patience:
            self.rollbacks += 1
            warnings.warn(f"{what}; rolling back to step {saved} with a new batch order", stacklevel=3)
            return "rollback"
        tried = {"skip": f" after {self.in_a_row} non-finite steps in a row", "rollback": " after rollbacks"}
        raise DivergedError(
            f"{what}{tried.get(self.mode, '')}; nothing of it was applied or saved, {kept}. Try {ADVICE}"
        )
