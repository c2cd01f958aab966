"""Shard sets train like the folders they were made from: the same losses, exact resume, two processes like
one, from local disk or from an S3 bucket (a real moto server on 127.0.0.1, reached by litdata's boto3 client),
and a truncated shard is named."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import psutil
import pytest
import torch
from torchrun import pretrain_in_two_processes

from mimsdk import pretrain
from mimsdk.adapter import get_adapter
from mimsdk.config import DataConfig, load_recipe
from mimsdk.errors import DataError
from mimsdk.sharding import shard
from mimsdk.shards import MANIFEST, Manifest, check_preparation, read_manifest, write_shards

RECIPE = {
    "model": dict(size="tiny", depth=1, input_size=[32, 32], patch_size=8, decoder_dim=32, decoder_depth=1,
                  decoder_heads=2),
    "data": dict(batch_size=16, num_workers=0),
    "train": dict(max_steps=4, warmup_steps=1, lr=1e-3, log_every=1, ckpt_every=2, recon_every=100),
}  # fmt: skip
FOLDER = get_adapter("images").sample_path()  # 128 images in 4 classes, shipped with mimsdk


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return shard(RECIPE, data=FOLDER, out=tmp_path_factory.mktemp("shards") / "images", workers=2)


def losses(result) -> list[float]:
    return [row["loss"] for row in result.history]


def test_a_shard_set_keeps_the_folder_order_classes_and_labels(shards):
    manifest = read_manifest(shards)
    assert manifest.adapter == "images" and manifest.count == 128 and manifest.classes == ["checkers", "discs",
                                                                                            "gradients", "stripes"]
    folder = get_adapter("images").dataset(FOLDER, DataConfig(), load_recipe(RECIPE).model, train=False)
    stored = get_adapter("images").dataset(shards, DataConfig(), load_recipe(RECIPE).model, train=False)
    assert len(stored) == len(folder) and stored.classes == folder.classes
    for i in (0, 57, 127):
        (a, la), (b, lb) = folder[i], stored[i]
        assert torch.equal(a, b) and la == lb


def test_training_on_shards_equals_training_on_the_folder(shards, tmp_path):
    on_folder = pretrain(RECIPE, data=FOLDER, out=tmp_path / "folder")
    on_shards = pretrain(RECIPE, data=shards, out=tmp_path / "shards")
    assert max(abs(a - b) for a, b in zip(losses(on_folder), losses(on_shards))) < 1e-6
    assert len(losses(on_shards)) == 4


def test_a_run_on_shards_stopped_after_a_checkpoint_resumes_exactly(shards, tmp_path):
    whole = pretrain(RECIPE, data=shards, out=tmp_path / "whole")
    from mimsdk.trainer import Trainer

    cut = load_recipe(RECIPE, {"data": {"path": str(shards)}})
    Trainer(cut, tmp_path / "cut").fit(until=2)  # as if killed after its step-2 checkpoint
    resumed = pretrain(out=tmp_path / "cut", resume=True)
    assert max(abs(a - b) for a, b in zip(losses(whole), losses(resumed))) < 1e-6


def test_two_processes_on_shards_match_one(shards, tmp_path):
    single = pretrain(RECIPE, data=shards, out=tmp_path / "one")
    recipe = {**RECIPE, "data": {**RECIPE["data"], "batch_size": 8}}  # per process: the global batch stays 16
    pretrain_in_two_processes(tmp_path, {"recipe": recipe, "data": str(shards), "out": str(tmp_path / "two")})
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert max(abs(a - b["loss"]) for a, b in zip(losses(single), two["history"])) < 1e-5  # summation order only


def test_a_truncated_shard_is_named_and_skipped_or_stops_a_strict_run(shards, tmp_path):
    broken = shutil.copytree(shards, tmp_path / "broken")
    chunk = sorted(broken.glob("chunk-*.bin"))[-1]
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    model = load_recipe(RECIPE).model
    strict = get_adapter("images").dataset(broken, DataConfig(strict=True), model, train=True)
    with pytest.raises(DataError, match=rf"{chunk.name}: \d+ bytes where the index says \d+ \(truncated\)"):
        strict[127]
    lenient = get_adapter("images").dataset(broken, DataConfig(), model, train=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, _ = lenient[127]  # the last chunk's sample, replaced by the next good one (wrapping to the first)
    assert x.shape == (3, 32, 32)
    said = [str(w.message) for w in caught]
    assert len(said) == 1 and chunk.name in said[0] and "replaced by the next good sample" in said[0]


def test_a_shard_set_of_another_modality_or_version_is_refused(shards, tmp_path):
    other = shutil.copytree(shards, tmp_path / "other")
    text = (other / MANIFEST).read_text()
    (other / MANIFEST).write_text(text.replace('"version": 1', '"version": 99'))
    with pytest.raises(DataError, match="version 99 of the images adapter's preparation"):
        pretrain(RECIPE, data=other, out=tmp_path / "run")
    with pytest.raises(DataError, match="holds images samples; data.modality is medical"):
        get_adapter("medical").dataset(shards, DataConfig(modality="medical"), load_recipe(RECIPE).model, True)


def test_training_reads_shards_from_an_s3_bucket(shards, tmp_path, monkeypatch):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for key, value in {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
            "LITDATA_CACHE_DIR": str(tmp_path / "cache"),
        }.items():  # fmt: skip
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="corpus")
        for path in shards.iterdir():
            s3.upload_file(str(path), "corpus", f"cifar/{path.name}")
        local = pretrain(RECIPE, data=shards, out=tmp_path / "local")
        remote = pretrain(RECIPE, data="s3://corpus/cifar", out=tmp_path / "remote")
        assert losses(remote) == losses(local)
        assert list((tmp_path / "cache").rglob("index.json"))  # litdata's cache, where LITDATA_CACHE_DIR says
        with pytest.raises(DataError, match="s3://corpus/nothing/mimsdk-shards.json: not found"):
            pretrain(RECIPE, data="s3://corpus/nothing", out=tmp_path / "none")
    finally:
        server.stop()


def test_a_bad_sample_in_strict_mode_stops_the_sharding_in_one_line(tmp_path, capsys, monkeypatch):
    import mimsdk.adapters.images as images
    from mimsdk.cli import main

    monkeypatch.setattr(images, "FULL_CHECK_LIMIT", 0)  # headers only before sharding: a worker finds it
    root = tmp_path / "imgs"
    shutil.copytree(FOLDER / "discs", root / "discs")
    whole = next((root / "discs").iterdir())
    (root / "discs" / "broken.png").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  input_size: [32, 32]\n  patch_size: 8\n")
    out = tmp_path / "set"
    command = ["shard", str(recipe), "--data", str(root), "--out", str(out), "--workers", "2"]
    assert main([*command, "data.strict=true"]) == 2
    err = capsys.readouterr().err  # litdata's progress bar, then one line
    last = err.strip().splitlines()[-1]
    assert last.startswith("mimsdk: error: ") and "broken.png" in last and "strict mode" in last
    assert "Traceback" not in err
    assert not out.exists()  # nothing published
    assert main(command) == 0  # without strict, left out with a warning
    assert read_manifest(out).count == len(list((root / "discs").iterdir())) - 1


def _killed_at_seven(index: int) -> dict:
    if index == 7:  # as the kernel's out-of-memory killer would
        os.kill(os.getpid(), signal.SIGKILL)
    return {"index": index}


def _raises_at_seven(index: int) -> dict:
    if index == 7:
        raise TypeError("sample 7 cannot be stored")
    return {"index": index}


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (_killed_at_seven, r"a preparing process \(pid \d+\) died: killed by SIGKILL \(out of memory\?\)"),
        (_raises_at_seven, r"^TypeError: sample 7 cannot be stored$"),
    ],
)
def test_a_preparing_process_that_dies_or_raises_stops_the_sharding_instead_of_hanging(tmp_path, prepare, message):
    def hung(*_):  # litdata 0.2.76 alone waits forever on either
        raise TimeoutError("write_shards hung")

    before = signal.signal(signal.SIGALRM, hung)
    signal.alarm(120)
    try:
        with pytest.raises(DataError, match=message):
            write_shards(prepare, 16, tmp_path / "set", Manifest(adapter="test", version=1, preparation={}, count=16),
                         workers=2)  # fmt: skip
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert not (tmp_path / "set").exists()  # nothing published
    written = write_shards(lambda index: {"index": index}, 16, tmp_path / "set", Manifest("test", 1, {}, 16), workers=2)
    assert read_manifest(written).count == 16  # and the next run writes the set


def test_preparation_settings_compare_as_settings_and_a_missing_one_is_named():
    made = Manifest("multispectral", 2, {"nodata": float("nan"), "window": [-1000, 400]}, 10)
    check_preparation(made, {"nodata": float("nan"), "window": (-1000.0, 400.0)}, "multispectral", 2, "set")
    with pytest.raises(DataError, match=r"set was prepared with nodata = nan, the recipe asks for 0"):
        check_preparation(made, {"nodata": 0, "window": [-1000, 400]}, "multispectral", 2, "set")
    with pytest.raises(DataError, match=r"set records no bands .* the recipe asks for \['B02'\]: shard the data"):
        check_preparation(made, {**made.preparation, "bands": ["B02"]}, "multispectral", 2, "set")


def test_a_shard_writer_whose_caller_is_killed_stops_with_it(tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        from mimsdk.shards import Manifest, write_shards
        def slow(index):
            time.sleep(0.5)
            return {{"index": index}}
        write_shards(slow, 400, {str(tmp_path / "set")!r}, Manifest("test", 1, {{}}, 400), workers=2)
        """)
    )
    caller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    group: list[psutil.Process] = []
    while time.monotonic() < deadline and len(group) < 3:  # the writer and its two workers
        time.sleep(0.2)
        group = psutil.Process(caller.pid).children(recursive=True)
    assert len(group) >= 3, "the shard writer did not start its workers"
    caller.kill()  # as an out-of-memory kill would: no chance to stop the writer
    caller.wait()

    def running(process: psutil.Process) -> bool:
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(map(running, group)):
        time.sleep(0.2)
    assert not any(map(running, group)), "the writer or its workers outlived their caller"
    assert not (tmp_path / "set").exists()
