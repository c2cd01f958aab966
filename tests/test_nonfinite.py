"""A diverging run never applies or saves a non-finite step, whatever train.on_nonfinite says."""

import pytest
import torch

from mimsdk import load_model, pretrain
from mimsdk.errors import DivergedError
from mimsdk.nonfinite import NonFiniteGuard, all_finite
from mimsdk.trainer import Trainer

# The reproduction (lr 1e4 on the quickstart): the loss reaches ~6e13 and the gradients NaN by step 2.
DIVERGING = [
    "train.max_steps=30", "train.ckpt_every=1", "train.lr=1e4", "train.warmup_steps=10", "train.probe_every=0",
    "model.depth=1", "model.decoder_depth=1", "data.num_workers=0", "data.batch_size=32",
]  # fmt: skip


def finite_checkpoint(run) -> int:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert all_finite(load_model(run))  # the model directory too
    return state["step"]


@pytest.mark.parametrize("mode", ["stop", "skip", "rollback"])
def test_a_diverging_run_keeps_finite_weights_on_disk_and_says_what_to_try(tmp_path, mode):
    run = tmp_path / mode
    with pytest.raises(DivergedError, match=r"step \d+: .*nothing of it was applied or saved.*lower train.lr"):
        pretrain("quickstart", out=run, overrides=[*DIVERGING, f"train.on_nonfinite={mode}"])
    saved = finite_checkpoint(run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    if mode == "skip":
        assert state["skipped"] >= 5  # train.max_nonfinite in a row were dropped before it stopped
    if mode == "rollback":
        assert state["rollbacks"] == 0 and saved == 1  # the rollbacks came back to step 1 and were not saved after
    resumed = Trainer.resume(run)  # the checkpoint resumes, at the step it holds
    assert resumed.step == saved and all_finite(resumed.model)


def test_skipped_and_rolled_back_steps_change_nothing(tmp_path):
    guard = NonFiniteGuard("skip", patience=2)
    assert guard.judge(1, 0.5, 1.0, saved=None) == "apply"
    assert guard.judge(2, float("nan"), 1.0, saved=None) == "skip"
    assert guard.judge(3, 0.5, float("inf"), saved=None) == "skip"
    with pytest.raises(DivergedError, match="step 4: .* after 3 non-finite steps in a row.*no checkpoint was written"):
        guard.judge(4, float("inf"), 1.0, saved=None)
    rollback = NonFiniteGuard("rollback", patience=1)
    with pytest.raises(DivergedError, match="no checkpoint was written yet"):  # nothing to roll back to
        rollback.judge(1, float("nan"), 1.0, saved=None)
    assert rollback.judge(5, float("nan"), 1.0, saved=4) == "rollback" and rollback.rollbacks == 1
    with pytest.raises(ValueError, match="train.on_nonfinite: 'ignore'"):
        NonFiniteGuard("ignore", 1)


def test_the_cli_ends_a_diverged_run_with_one_error_line(tmp_path, capsys):
    from mimsdk.cli import main

    assert main(["pretrain", "quickstart", "--out", str(tmp_path / "run"), *DIVERGING]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mimsdk: error:")]
    assert len(err) == 1 and "the checkpoint on disk holds step 1" in err[0], err
