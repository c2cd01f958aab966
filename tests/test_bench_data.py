"""benchmarks/bench_data.py keeps working: its smallest run prints a rate row and a shard row per modality, an adapter
that writes no shards yet gets a row saying so, and the time-to-first-step measurement returns its times."""

import importlib
import json
from pathlib import Path

import pytest

from mimsdk.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SMALLEST = ["--quick", "--modalities", "pointcloud", "--samples", "100", "--jpegs", "0", "--rounds", "1",
            "--round-seconds", "0.1", "--workers", "0"]  # fmt: skip


@pytest.fixture
def bench(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setenv("LITDATA_CACHE_DIR", str(tmp_path / "litdata-cache"))  # the script sets it only if unset
    return importlib.import_module("bench_data")


def rows(out: str, name: str) -> list[list[str]]:
    return [line.split(" | ") for line in out.splitlines() if line.startswith(f"| {name} |")]


def test_the_smallest_run_measures_raw_and_shards(bench, capsys, tmp_path):
    bench.main([*SMALLEST, "--workdir", str(tmp_path / "work")])
    out = capsys.readouterr().out
    rate, written = rows(out, "point clouds")  # the rate table's row, then the shard table's
    assert rate[1].startswith("pointcloud-shapenet (1024 points)")
    assert float(rate[3].replace(",", "")) > 0 and float(rate[4].replace(",", "")) > 0, rate
    assert rate[5].endswith("×"), rate
    assert int(written[1].replace(",", "")) >= 87 and float(written[2]) > 0, written  # the 87 shared clouds, sharded
    assert "litdata" in out and "Date:" in out
    assert not (tmp_path / "work").exists()  # removed without --keep


def test_an_adapter_without_shards_gets_a_row_saying_so(bench, capsys, monkeypatch, tmp_path):
    def no_shards(*args, **kwargs):
        raise ConfigError(f"the pointcloud adapter {bench.NO_SHARDS}")

    monkeypatch.setattr(bench, "bytes_per_copy", no_shards)
    bench.main([*SMALLEST, "--workdir", str(tmp_path / "work")])
    rate = rows(capsys.readouterr().out, "point clouds")[0]
    assert float(rate[3].replace(",", "")) > 0 and bench.NO_SHARDS in rate[4], rate


def test_time_to_first_step_reports_its_times(bench, capsys, tmp_path):
    bench.write_jpegs(tmp_path / "jpegs", 130, seed=0)  # two quickstart batches of 64
    bench.first_step_child(tmp_path / "jpegs", workers=0)
    found = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < found["first_batch_s"] <= found["call_s"]
