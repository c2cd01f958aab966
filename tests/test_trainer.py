import csv

import pytest
import torch
from conftest import REPO

import mimsdk.trainer as trainer_module
from mimsdk import load_model, pretrain
from mimsdk.trainer import Trainer

TINY = {
    "name": "tiny-test",
    "model": dict(size="tiny", depth=2, input_size=[32, 32], patch_size=8, decoder_dim=32, decoder_depth=1,
                  decoder_heads=2, drop_path=0.1),
    "data": dict(batch_size=16, num_workers=0),
    "train": dict(max_steps=8, warmup_steps=2, lr=1e-3, ckpt_every=3, recon_every=4, log_every=1, accum_steps=2),
}  # fmt: skip


def losses(history):
    return [round(row["loss"], 7) for row in history]


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(tmp_path, workers):
    recipe = {**TINY, "data": {**TINY["data"], "num_workers": workers}}
    full = pretrain(recipe, out=tmp_path / "full")
    # 128 samples / 16 = 8 batches an epoch, 2 per step: the run crosses an epoch at step 4
    Trainer(trainer_module.load_recipe(recipe), tmp_path / "cut").fit(until=5)
    resumed = pretrain(out=tmp_path / "cut", resume=True)
    assert len(resumed.history) == len(full.history) == 8
    for a, b in zip(full.history, resumed.history):
        assert abs(a["loss"] - b["loss"]) < 1e-6
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name


def test_run_directory_contents(tmp_path):
    result = pretrain(TINY, out=tmp_path / "run")
    run = result.run_dir
    for name in ("recipe.yaml", "checkpoint.pt", "model/config.json", "model/model.safetensors", "recon/latest.png"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "recon").glob("step_*.png")) == ["step_0000004.png", "step_0000008.png"]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 9))
    assert list((run / "tb").iterdir())
    loaded = load_model(run)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.encode(x), result.model.encode(x))
    assert loaded.config.metadata["channel_names"] == ["red", "green", "blue"]


def test_lr_follows_warmup_then_cosine(tmp_path):
    result = pretrain(TINY, out=tmp_path / "run", max_steps=6, accum_steps=1)
    lrs = [row["lr"] for row in result.history]
    assert lrs[0] == pytest.approx(5e-4) and lrs[1] == pytest.approx(1e-3)
    assert lrs[2] > lrs[3] > lrs[4] > lrs[5] > 0


def test_a_kill_while_writing_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    Trainer(trainer_module.load_recipe(TINY), run).fit(until=3)
    good = torch.load(run / "checkpoint.pt", weights_only=True)

    def dying_save(obj, path):  # writes half a file, then the process "dies"
        with open(path, "wb") as f:
            f.write(b"\x80\x02partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain(out=run, resume=True)
    monkeypatch.undo()
    after = torch.load(run / "checkpoint.pt", weights_only=True)
    assert after["step"] == good["step"] == 3
    assert not list(run.glob(".checkpoint.pt.*"))
    assert len(pretrain(out=run, resume=True).history) == 8


def test_an_existing_run_is_not_overwritten(tmp_path):
    pretrain(TINY, out=tmp_path / "run", max_steps=1)
    with pytest.raises(FileExistsError, match="already holds a run"):
        pretrain(TINY, out=tmp_path / "run", max_steps=1)


def test_keyword_overrides_name_unknown_fields(tmp_path):
    with pytest.raises(ValueError, match="unknown override 'max_stepz'"):
        pretrain(TINY, out=tmp_path / "run", max_stepz=1)


def test_resume_extends_a_finished_run_and_refuses_other_changes_by_name(tmp_path, capsys):
    from mimsdk import ConfigError
    from mimsdk.cli import main

    run = tmp_path / "run"
    done = pretrain(TINY, out=run, max_steps=2, accum_steps=1, ckpt_every=1)
    assert done.history[-1]["step"] == 2
    longer = pretrain(out=run, resume=True, max_steps=3)  # a finished run goes on to the new end
    assert [row["step"] for row in longer.history] == [1, 2, 3]
    assert losses(longer.history)[:2] == losses(done.history)  # the steps already taken stay as they were
    with pytest.raises(ConfigError, match=r"resume cannot change model.depth \(the run was trained with 2, asked 3\)"):
        pretrain(out=run, resume=True, overrides=["model.depth=3"])
    with pytest.raises(ConfigError, match="train.max_steps 1 is below the 3 steps"):
        pretrain(out=run, resume=True, max_steps=1)
    assert main(["resume", str(run), "train.max_steps=4"]) == 0
    assert "finished at step 4" in capsys.readouterr().out
    assert main(["resume", str(run), "train.lr=0.5"]) == 2
    assert "resume cannot change train.lr" in capsys.readouterr().err


def test_quickstart_says_what_it_does_and_monitors_its_shipped_held_out_split(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    small = ["model.depth=1", "model.decoder_depth=1", "data.num_workers=0", "train.recon_every=2"]
    result = pretrain("quickstart", out=tmp_path / "q", overrides=small, max_steps=2, probe_every=2)
    said = capsys.readouterr().err
    assert "128 samples in 4 classes" in said and "held out: 64 samples in 4 classes" in said
    assert "2 steps of 64 samples on 1 process" in said and "masker random (0.75), target norm_pix" in said
    last = result.history[-1]
    assert {"eval_loss", "knn_acc"} <= set(last)  # no data.eval_path needed for the shipped sample
    header = (tmp_path / "q" / "metrics.csv").read_text().splitlines()[0]
    assert header == (
        "step,loss,lr,images_per_s,tokens_per_s,mfu,peak_mem_gb,data_wait,model_samples_per_s,eval_loss,knn_acc"
    )
    assert last["tokens_per_s"] == pytest.approx(last["images_per_s"] * 64) and last["peak_mem_gb"] > 0
    assert 0 <= last["data_wait"] < 1 and last["model_samples_per_s"] >= last["images_per_s"]
    assert "GFLOP per sample" in said and "done at step 2" in said and "tokens/s" in said
    assert "of the time waiting for data" in said
    text = repr(result)
    assert text.startswith("PretrainResult(run_dir=") and "steps=2" in text and len(text) < 300
    # pictures show samples spread over the classes, and reach TensorBoard too
    trainer = Trainer.resume(tmp_path / "q")
    shown = trainer.picture_indices(len(trainer.eval_set))
    assert len(shown) == 8 and len({trainer.eval_set[i][1] for i in shown}) > 1  # the first 8 files are one class
    assert {trainer.eval_set[i][1] for i in range(8)} == {0}
    assert torch.equal(trainer.picture_batch()[0], trainer.eval_set[shown[0]][0])
    events = EventAccumulator(str(tmp_path / "q" / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert "pretrain/reconstruction" in events.Tags()["images"]


def test_a_file_that_breaks_after_the_scan_is_named_replaced_and_counted_per_epoch(tmp_path, capsys):
    import shutil

    from mimsdk import load_recipe

    folder = tmp_path / "images"
    shutil.copytree(REPO / "mimsdk" / "sample" / "images" / "discs", folder / "discs")
    recipe = load_recipe(TINY, {"data": {"path": str(folder), "batch_size": 16}, "train": {"accum_steps": 1}})
    trainer = Trainer(recipe, tmp_path / "run")  # the scan sees 32 good files: 2 batches an epoch
    broken = sorted(folder.rglob("*.png"))[5]
    broken.write_bytes(broken.read_bytes()[:100])  # then one is cut short, as a disk or a copy may do
    with pytest.warns(UserWarning, match=f"skipping {broken}.*replaced by the next good sample"):
        trainer.fit(until=2)
    assert "epoch 1: 1 sample(s) replaced by the next good one" in capsys.readouterr().err
