"""Push, pull and load_model through the real huggingface_hub client, against a local Hub (tests/hub_server.py)."""

import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hub_server import FakeHub, point_client_at
from huggingface_hub import ModelCard
from huggingface_hub.utils import _http
from safetensors.torch import load, load_file

from mimsdk import ConfigError, create_model
from mimsdk.cli import main
from mimsdk.hub import HubError, load_model, pull, push_to_hub, save_pretrained
from mimsdk.pretraining import pretrain

TOKEN = "hf_mimsdkTestToken0123456789abcdef"
TINY = ["model.depth=1", "model.decoder_depth=1", "data.batch_size=16", "data.num_workers=0", "train.max_steps=2",
        "train.log_every=1"]  # fmt: skip
FILES = {"config.json", "model.safetensors", "README.md", "training_curve.png", "reconstruction.png"}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with FakeHub(token=TOKEN) as server:
        point_client_at(monkeypatch, server.url, tmp_path / "hf_home")
        yield server
    _http.close_session()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "run"
    pretrain("quickstart", out=out, overrides=TINY)
    return out


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_push_a_run_then_load_pull_and_continue_from_the_hub(run_dir, hub, tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")  # the client's own logger: every request, at debug
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # as after `hf auth login`; the CLI takes no token argument
    args = ["push", str(run_dir), "alice/tiny-mae", "--private", "--dataset", "uoft-cs/cifar10", "--license", "mit"]
    assert main(args) == 0
    assert "pushed" in capfd.readouterr().out

    # what the endpoint received: a private repo, one commit of regular (base64) files, the token on every write
    repo = hub.repos["alice/tiny-mae"]
    assert repo.private
    files = hub.files("alice/tiny-mae")
    assert FILES <= set(files)
    (commit,) = hub.commit_payloads
    assert commit[0]["key"] == "header" and {line["key"] for line in commit[1:]} == {"file"}
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in hub.requests if r.method == "POST")
    config = json.loads(files["config.json"])
    assert config["format_version"] == 1 and config["model"]["depth"] == 1
    assert config["model"]["metadata"]["channel_names"] == ["red", "green", "blue"]
    pushed, local = load(files["model.safetensors"]), load_file(run_dir / "model" / "model.safetensors")
    assert pushed.keys() == local.keys() and all(torch.equal(pushed[k], local[k]) for k in local)
    assert files["training_curve.png"][:4] == b"\x89PNG"
    assert files["reconstruction.png"] == (run_dir / "recon" / "latest.png").read_bytes()
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "mimsdk" and card.data.license == "mit"
    assert {"masked-autoencoder", "images"} <= set(card.data.tags) and card.data.datasets == ["uoft-cs/cifar10"]
    assert 'load_model("alice/tiny-mae")' in card.text and "name: quickstart" in card.text

    # the token is in no file, no log line and no output
    assert all(TOKEN.encode() not in data for data in files.values())
    out = capfd.readouterr()
    assert "(authenticated: True)" in caplog.text  # the client logged its authenticated requests...
    assert TOKEN not in caplog.text and TOKEN not in out.out + out.err  # ...without the token

    # private: found with the token, refused (clearly) without
    model = load_model("alice/tiny-mae", token=TOKEN)
    assert same_weights(model, load_model(run_dir)) and model.config == load_model(run_dir).config
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HubError, match=r"alice/tiny-mae not found at http://127\.0\.0\.1:\d+, or it is private"):
        load_model("alice/tiny-mae")
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    # `mimsdk pull` in a new process, which reads HF_ENDPOINT when huggingface_hub is imported, as a user's would
    target = tmp_path / "pulled"
    proc = subprocess.run([sys.executable, "-m", "mimsdk.cli", "pull", "alice/tiny-mae", str(target)],
                          env=os.environ.copy(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    assert FILES == {p.name for p in target.iterdir()}  # no .cache, nothing partial
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert same_weights(load_model(target), model)

    # continued pre-training from the Hub repo: its config, its weights, its metadata (+ where it came from)
    args = ["pretrain", "quickstart", "--init", "alice/tiny-mae", "--out", str(tmp_path / "more"),
            "data.batch_size=16", "data.num_workers=0", "train.max_steps=1"]  # fmt: skip
    assert main(args) == 0
    continued = load_model(tmp_path / "more").config
    assert continued.depth == 1 and continued.metadata == {**model.config.metadata, "base_model": "alice/tiny-mae"}


def test_encoder_only_push_to_a_branch(hub):
    model = create_model(size="tiny", depth=1, input_size=[32, 32], patch_size=4, decoder_dim=32, decoder_depth=1,
                         decoder_heads=2).eval()  # fmt: skip
    url = push_to_hub(model, "alice/encoder", encoder_only=True, revision="v1", token=TOKEN)
    assert url.startswith(f"{hub.url}/alice/encoder/commit/")
    assert set(hub.files("alice/encoder", "main")) == {".gitattributes"}  # main untouched
    files = hub.files("alice/encoder", "v1")
    assert json.loads(files["config.json"])["encoder_only"] is True
    assert "encoder-only" in ModelCard(files["README.md"].decode()).data.tags

    enc = load_model("alice/encoder", revision="v1", token=TOKEN)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(enc.encode(x), model.encode(x))
    with pytest.raises(RuntimeError, match="encoder-only"):
        enc(x)
    with pytest.raises(HubError, match=r"alice/encoder at http://127\.0\.0\.1:\d+ holds no config\.json"):
        load_model("alice/encoder", token=TOKEN)  # main has no model
    with pytest.raises(HubError, match="has no revision 'v2'"):
        load_model("alice/encoder", revision="v2", token=TOKEN)
    with pytest.raises(HubError, match=r"answered 401 .*log in with `hf auth login` or set HF_TOKEN"):
        push_to_hub(model, "alice/encoder", revision="v1")  # no token
    with pytest.raises(HubError, match=r"answered 401"):
        push_to_hub(model, "alice/encoder", revision="v1", token="hf_wrong")
    push_to_hub(model, "alice/encoder", revision="v1", token=TOKEN)  # a second push to the branch: full now
    assert "encoder_only" not in json.loads(hub.files("alice/encoder", "v1")["config.json"])


class _Bomb:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_bad_repos_give_one_clear_error_each_and_leave_nothing(hub, tmp_path):
    good = save_pretrained(create_model(size="tiny", depth=1, input_size=[32, 32], patch_size=4, decoder_dim=32,
                                        decoder_depth=1, decoder_heads=2), tmp_path / "good")  # fmt: skip
    config, weights = (good / "config.json").read_bytes(), (good / "model.safetensors").read_bytes()
    marker = tmp_path / "unpickled"
    hub.create("alice/pickled", {"config.json": config, "pytorch_model.bin": pickle.dumps(_Bomb(marker))})
    hub.create("alice/no-config", {"README.md": b"# hello\n", "model.safetensors": weights})
    hub.create("alice/no-weights", {"config.json": config, "README.md": b"# hello\n"})
    future = json.loads(config)
    future["format_version"] = 99
    hub.create("alice/future", {"config.json": json.dumps(future).encode(), "model.safetensors": weights})
    misfit = json.loads(config)
    misfit["model"]["embed_dim"] = 96
    hub.create("alice/misfit", {"config.json": json.dumps(misfit).encode(), "model.safetensors": weights})

    cases = [
        ("alice/pickled", HubError, r"offers only pickled weights \(pytorch_model\.bin\).*safetensors only"),
        ("alice/no-config", HubError, r"alice/no-config .*holds no config\.json, so it is not a mimsdk model"),
        ("alice/no-weights", HubError, r"alice/no-weights .*has config\.json but no model\.safetensors"),
        ("alice/nobody", HubError, r"alice/nobody is not a local directory, and .*not found at http://127"),
        ("alice/future", ConfigError, r"alice/future .*format_version 99 is not one this mimsdk reads"),
        ("alice/misfit", ValueError, r"alice/misfit .*: \S+ has shape \(.*192.*\), the config expects \(.*96.*\)"),
    ]
    for repo_id, error, message in cases:
        with pytest.raises(error, match=message):
            load_model(repo_id, token=TOKEN)
        with pytest.raises(error, match=message.replace(" is not a local directory, and", "")):
            pull(repo_id, tmp_path / "out", token=TOKEN)
        assert not (tmp_path / "out").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial download left
    assert not marker.exists()
    assert not [r for r in hub.requests if r.path.endswith(".bin")]  # the pickle was never even fetched

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(FileExistsError, match="full already exists and is not empty"):
        pull("alice/pickled", tmp_path / "full")
    with pytest.raises(HubError, match="'not a repo' is not a Hub repository id"):
        pull("not a repo", tmp_path / "out")


def test_an_unreachable_endpoint_is_one_clear_error(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    point_client_at(monkeypatch, f"http://127.0.0.1:{port}", tmp_path / "hf_home")
    model = create_model(size="tiny", depth=1, input_size=[32, 32], patch_size=4, decoder_dim=32, decoder_depth=1,
                         decoder_heads=2)  # fmt: skip
    started = time.monotonic()
    reach = rf"cannot reach the Hugging Face Hub at http://127\.0\.0\.1:{port}"
    with pytest.raises(HubError, match=reach) as err:
        load_model("alice/tiny", token=TOKEN)
    assert TOKEN not in str(err.value)
    with pytest.raises(HubError, match=reach) as err:
        push_to_hub(model, "alice/tiny", token=TOKEN)
    assert TOKEN not in str(err.value)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["pull", "alice/tiny", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "cannot reach the Hugging Face Hub" in captured.err and TOKEN not in captured.out + captured.err
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert time.monotonic() - started < 20  # no long retry loops


def test_offline_mode_reads_the_cache_only(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    model = create_model(size="tiny", depth=1, input_size=[32, 32], patch_size=4, decoder_dim=32, decoder_depth=1,
                         decoder_heads=2)  # fmt: skip
    push_to_hub(model, "alice/cached", token=TOKEN)
    first = load_model("alice/cached", token=TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    seen = len(hub.requests)
    assert same_weights(load_model("alice/cached"), first)
    assert len(hub.requests) == seen  # from the cache, no request
    with pytest.raises(HubError, match="alice/other is not in the local Hub cache"):
        load_model("alice/other")
