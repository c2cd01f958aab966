"""Continued pre-training: pretrain(recipe, init=...) starts from the saved model's weights and keeps its metadata."""

import json

import pytest
import torch

from mimsdk import ConfigError, create_model, load_recipe
from mimsdk.cli import main
from mimsdk.hub import load_model, save_pretrained
from mimsdk.pretraining import pretrain
from mimsdk.trainer import Trainer

SMALL = {"data": {"batch_size": 16, "num_workers": 0}, "train": {"max_steps": 2, "log_every": 1, "seed": 3}}
FAST = {"batch_size": 16, "num_workers": 0}  # pretrain's ``data`` is the data path, so data fields go by name
META = {"mean": [0.45, 0.45, 0.45], "std": [0.3, 0.3, 0.3], "channel_names": ["red", "green", "blue"], "note": "v1"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A model unlike the quickstart recipe's (depth, decoder, mask ratio, target) with its own metadata."""
    torch.manual_seed(1)
    model = create_model(size="tiny", depth=2, input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_depth=1,
                         decoder_heads=2, mask_ratio=0.6, target="pixels", metadata=META)  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return save_pretrained(model, tmp_path_factory.mktemp("init") / "model")


def test_first_step_starts_from_the_saved_weights_and_metadata_is_kept(saved, tmp_path):
    recipe = load_recipe("quickstart", SMALL)
    trainer = Trainer(recipe, tmp_path / "run", init=saved)
    source = load_model(saved)
    assert trainer.recipe.model.depth == 2 and trainer.recipe.model.mask_ratio == 0.6  # the model section replaced
    assert trainer.recipe.data.mean == META["mean"]  # data normalised as the model was trained

    # The trainer's first micro-batch and its masking noise (seeded by (seed, micro-batch), see Trainer._noise),
    # fed to the saved model: the same loss the trainer logs for step 1, before its first update.
    x, _ = next(trainer._batches(0))
    noise = trainer._noise(0, x.shape[0])["noise"]
    with torch.no_grad():
        expected = source(x, noise=noise).loss.item()
    result = trainer.fit()
    assert abs(result.history[0]["loss"] - expected) < 1e-6

    with torch.no_grad():  # same architecture, random weights: a different loss
        assert abs(create_model(trainer.recipe.model)(x, noise=noise).loss.item() - expected) > 1e-3

    written = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["model"]
    assert written["metadata"] == META and written["target"] == "pixels"
    assert load_model(tmp_path / "run").config.metadata == META


def test_pretrain_init_keyword_and_command(saved, tmp_path, capsys):
    # explicit model overrides still apply on top of the loaded config; a misfit is named
    result = pretrain("quickstart", out=tmp_path / "b", init=saved, mask_ratio=0.5, overrides=["train.max_steps=1"],
                      **FAST)  # fmt: skip
    assert result.model.config.mask_ratio == 0.5 and result.model.config.decoder_dim == 64
    assert result.model.config.metadata == META
    with pytest.raises(ConfigError, match=r"does not fit the model section: .* has shape"):
        pretrain("quickstart", out=tmp_path / "c", init=saved, decoder_dim=32, max_steps=1, **FAST)

    args = ["pretrain", "quickstart", "--init", str(saved), "--out", str(tmp_path / "cli"),
            "data.batch_size=16", "data.num_workers=0", "train.max_steps=1"]  # fmt: skip
    assert main(args) == 0
    assert load_model(tmp_path / "cli").config.metadata == META
    assert main(["pretrain", "quickstart", "--init", str(tmp_path / "none"), "--out", str(tmp_path / "cli2")]) == 2
    assert "none does not exist" in capsys.readouterr().err


def test_continuing_from_an_encoder_only_model_gets_a_fresh_decoder(saved, tmp_path):
    enc = save_pretrained(load_model(saved), tmp_path / "enc", encoder_only=True)
    result = pretrain("quickstart", out=tmp_path / "run", init=enc, max_steps=1, **FAST)
    source = load_model(saved)
    x = torch.randn(2, 3, 32, 32)
    assert result.model.decoder.pred.weight.shape == source.decoder.pred.weight.shape
    assert not torch.equal(result.model.decoder.pred.weight, source.decoder.pred.weight)
    assert torch.isfinite(result.model(x).loss)
