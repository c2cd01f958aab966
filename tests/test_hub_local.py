"""save_pretrained / load_model through directories: exact round trips, encoder-only, atomic writes, bad input."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from mimsdk import ConfigError, MaskedAutoencoder, create_model, save_model
from mimsdk.hub import load_model, save_pretrained
from mimsdk.hub.card import model_card, write_card

META = {"channel_names": ["red", "green", "blue"], "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "site": "lab-7"}
MODELS = {
    "2d": dict(size="tiny", depth=2, input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_depth=1,
               decoder_heads=2, metadata=META),
    "3d": dict(size="tiny", depth=1, input_size=[16, 16, 16], patch_size=8, in_chans=1, decoder_dim=32,
               decoder_depth=1, decoder_heads=2, pos_embed="learned", target="pixels", mask_ratio=0.5,
               modality="volumes", metadata={"channel_names": ["ct"], "spacing_mm": [1.0, 1.0, 2.5]}),
}  # fmt: skip


def trained(kwargs: dict) -> MaskedAutoencoder:
    """A model a few optimiser steps away from its initialisation (so nothing is at a default value)."""
    torch.manual_seed(0)
    model = create_model(**kwargs)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    shape = (2, model.config.in_chans, *model.config.input_size)
    for _ in range(2):
        model(torch.randn(shape)).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_directory_round_trip_is_exact(kind, tmp_path):
    model = trained(MODELS[kind])
    path = save_pretrained(model, tmp_path / "saved")
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left

    same = load_model(path)
    assert same.config == model.config and same.config.metadata == MODELS[kind]["metadata"]
    ours, theirs = model.state_dict(), same.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    x = torch.randn(3, model.config.in_chans, *model.config.input_size)
    noise = torch.rand(3, model.num_tokens)
    assert torch.equal(same.encode(x), model.encode(x))
    with torch.no_grad():
        assert torch.equal(same(x, noise=noise).loss, model(x, noise=noise).loss)

    config = json.loads((path / "config.json").read_text())
    assert config["format_version"] == 1 and "encoder_only" not in config
    assert config["model"]["decoder_dim"] == model.config.decoder_dim
    assert config["model"]["target"] == model.config.target
    assert load_file(path / "model.safetensors").keys() == ours.keys()  # safetensors, the whole model


def test_encoder_only_keeps_encode_and_flags_the_missing_decoder(tmp_path):
    model = trained(MODELS["2d"])
    path = save_pretrained(model, tmp_path / "enc", encoder_only=True)
    assert json.loads((path / "config.json").read_text())["encoder_only"] is True
    keys = load_file(path / "model.safetensors").keys()
    assert keys and all(k.startswith(("tokenizer.", "pos.", "encoder.")) for k in keys)
    assert "encoder-only" in ModelCard.load(path / "README.md").data.tags

    enc = load_model(path)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(enc.encode(x), model.encode(x)) and torch.equal(enc.features(x), model.features(x))
    with pytest.raises(RuntimeError, match="encoder-only checkpoint.*no decoder.*use encode"):
        enc(x)
    # saving it again stays encoder-only, and loads the same way
    again = save_pretrained(enc, tmp_path / "again")
    assert json.loads((again / "config.json").read_text())["encoder_only"] is True
    assert torch.equal(load_model(again).encode(x), model.encode(x))


def test_save_is_atomic_and_an_interrupted_save_leaves_the_old_model(tmp_path, monkeypatch):
    import mimsdk.serialization as serialization

    first, second = trained(MODELS["2d"]), create_model(**MODELS["2d"])
    path = save_pretrained(first, tmp_path / "m")

    def dies_half_way(state, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise KeyboardInterrupt  # as if killed while writing the weights

    monkeypatch.setattr(serialization, "save_file", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(second, path)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(second, tmp_path / "new")
    monkeypatch.undo()
    assert not (tmp_path / "new").exists()  # nothing that looks like a model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no staging folders either
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(load_model(path).encode(x), first.encode(x))  # the old model, whole

    save_pretrained(second, path)  # an update in place replaces every file
    assert torch.equal(load_model(path).encode(x), second.eval().encode(x))


def _saved(tmp_path: Path, name: str) -> Path:
    return save_model(create_model(**MODELS["2d"]), tmp_path / name)


class _Bomb:
    """Unpickling this creates a file: proof that nothing was unpickled if the file never appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bad_directories_give_one_clear_error_each(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty holds no config.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_model(str(tmp_path / "nowhere"))

    future = _saved(tmp_path, "future")
    config = json.loads((future / "config.json").read_text())
    (future / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ConfigError, match="format_version 99 is not one this mimsdk reads"):
        load_model(future)

    wrong = _saved(tmp_path, "wrong")
    config = json.loads((wrong / "config.json").read_text())
    config["model"]["decoder_dim"] = 32
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"decoder\.\S+ has shape .*64.*the config expects .*32"):
        load_model(wrong)

    missing = _saved(tmp_path, "missing")
    (missing / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing has config.json but no model.safetensors"):
        load_model(missing)

    pickled = _saved(tmp_path, "pickled")
    (pickled / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps(_Bomb(marker)))
    with pytest.raises(FileNotFoundError, match="only pytorch_model.bin: mimsdk reads safetensors only"):
        load_model(pickled)
    assert not marker.exists()

    corrupt = _saved(tmp_path, "corrupt")
    (corrupt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(corrupt)

    extra = _saved(tmp_path, "extra")
    save_file({**load_file(extra / "model.safetensors"), "head.weight": torch.zeros(2)}, extra / "model.safetensors")
    with pytest.raises(ValueError, match=r"does not fit its config: .*unexpected \['head.weight'\]"):
        load_model(extra)


def test_model_card_metadata_curve_knn_and_recipe(tmp_path):
    model = create_model(**MODELS["2d"])
    run = tmp_path / "run"
    (run / "recon").mkdir(parents=True)
    (run / "recipe.yaml").write_text(
        "name: quickstart\nmodel: {size: tiny}\n"
        "data: {modality: images, path: /home/someone/secret/cifar/train, eval_path: /data/x/test, batch_size: 16}\n"
        "train: {max_steps: 3, accum_steps: 1}\n"
    )
    (run / "metrics.csv").write_text(
        "step,loss,lr,images_per_s,eval_loss,knn_acc\n1,1.5,0.001,10,,\n2,1.2,0.001,10,,\n3,1.0,0.001,10,1.1,0.31\n"
    )
    (run / "recon" / "latest.png").write_bytes(b"\x89PNG\r\n\x1a\n fake")
    out = tmp_path / "card"
    out.mkdir()
    write_card(model, out, run_dir=run, repo_id="alice/tiny", license="mit", datasets=["uoft-cs/cifar10"])
    assert (out / "training_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "reconstruction.png").read_bytes() == (run / "recon" / "latest.png").read_bytes()

    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "mimsdk" and data["license"] == "mit" and data["datasets"] == ["uoft-cs/cifar10"]
    assert {"masked-autoencoder", "images"} <= set(data["tags"]) and data["pipeline_tag"] == "image-feature-extraction"
    text = card.text
    assert 'load_model("alice/tiny")' in text and "from mimsdk import load_model" in text
    assert "![training curve](training_curve.png)" in text and "![reconstructions](reconstruction.png)" in text
    assert "| 3 | 1.1 | 0.31 |" in text  # the kNN row
    assert "name: quickstart" in text and "path: train" in text and "secret" not in text  # recipe, paths cut
    assert "mean: [0.4, 0.5, 0.6]" in text and "site: lab-7" in text  # adapter metadata in the data summary


def test_card_without_matplotlib_shows_the_curve_as_a_table(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    from mimsdk.hub.card import plot_curve

    history = [{"step": float(s), "loss": 2.0 / s} for s in range(1, 40)]
    assert plot_curve(history, Path("unused.png")) is False
    text = model_card(create_model(**MODELS["2d"]), history=history).text
    assert "| step | loss |" in text and "| 39 | 0.0513 |" in text and text.count("\n| ") <= 30


def test_card_names_the_masker_the_target_and_the_encoder_as_built():
    """The card says what the model is: its masker and target by name, its width and depth as built."""
    plain = model_card(create_model(size="tiny", input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_depth=1,
                                    decoder_heads=2)).text  # fmt: skip
    assert "ViT-Tiny: 192 wide, 12 blocks, 3 heads" in plain and "masked uniformly at random (MAE)" in plain
    assert "per-patch normalised pixels (norm_pix)" in plain

    shallow = model_card(create_model(**{**MODELS["2d"], "masker": "block", "target": "pixels"})).text
    assert "ViT-Tiny width 192, 2 blocks, 3 heads" in shallow and "ViT-Tiny:" not in shallow
    assert "masked in rectangular blocks" in shallow and "at random" not in shallow
    assert "raw pixels (pixels)" in shallow and "| masking | block, ratio 0.75 |" in shallow

    narrow = model_card(create_model(**{**MODELS["3d"], "embed_dim": 48, "masker": "tube"})).text
    assert "48 wide, 1 block, 3 heads" in narrow and "ViT-Tiny" not in narrow
    assert "masked in tubes" in narrow and "| target | pixels |" in narrow
    assert 'model = load_model("path/to/this/folder")' in narrow and "mimsdk export" not in narrow  # 3D: no export
