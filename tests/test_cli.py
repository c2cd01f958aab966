import json

import numpy as np
import pytest
from safetensors.torch import load_file

from mimsdk.cli import main

TINY = ["model.depth=1", "model.decoder_depth=1", "data.batch_size=16", "data.num_workers=0", "train.max_steps=2"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["pretrain", "quickstart", "--out", str(out), *TINY]) == 0
    return out


def test_recipes_list_and_show(capsys):
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert "quickstart" in listed and "natural-images" in listed
    assert main(["recipes", "show", "natural-images"]) == 0
    assert "decoder_dim: 512" in capsys.readouterr().out


def test_pretrain_writes_a_run_and_resume_continues(run_dir, capsys):
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert main(["resume", str(run_dir)]) == 0  # already finished: nothing more to do, no error
    assert "step 2" in capsys.readouterr().out


def test_reconstruct_embed_probe(run_dir, cifar, tmp_path, capsys):
    png = tmp_path / "recon.png"
    assert main(["reconstruct", str(run_dir), str(cifar / "test" / "cat"), "-o", str(png), "--count", "3"]) == 0
    assert png.stat().st_size > 0

    npy = tmp_path / "f.npy"
    assert main(["embed", str(run_dir), "--data", str(cifar / "test"), "-o", str(npy)]) == 0
    assert np.load(npy).shape == (200, 192)
    st = tmp_path / "f.safetensors"
    assert main(["embed", str(run_dir), "--data", str(cifar / "test"), "-o", str(st)]) == 0
    tensors = load_file(st)
    assert tensors["features"].shape == (200, 192) and tensors["labels"].max() == 9

    capsys.readouterr()
    args = ["probe", str(run_dir), "--data", str(cifar / "test"), "--method", "knn", "--compare-random"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| pre-trained |" in out and "| random init |" in out


def test_errors_name_the_problem(tmp_path, capsys):
    assert main(["pretrain", "quickstart", "--out", str(tmp_path / "r"), "train.max_stepz=3"]) == 2
    assert "unknown key train.max_stepz" in capsys.readouterr().err
    assert main(["pretrain", "quickstart", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
    assert main(["reconstruct", str(tmp_path / "nomodel"), "x", "-o", "y.png"]) == 2
    assert "nomodel does not exist" in capsys.readouterr().err


def test_saved_config_names_its_format(run_dir):
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["format_version"] == 1 and config["model"]["size"] == "tiny"
