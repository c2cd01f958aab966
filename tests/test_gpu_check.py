"""benchmarks/gpu_check.py keeps working: its CPU mode (tiny sizes, fp32, 2 loader workers) prints every row."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROWS = [
    ("MAE step", "mimsdk |"),
    ("MAE step", "transformers ViTMAE, same weights"),
    ("MAE step", "mimsdk, decode 50 % of masked"),
    ("MAE step", "mimsdk, decode 25 % of masked"),
    ("MAE step", "mimsdk, blocks compiled | skipped on the CPU"),
    ("MAE step", "mimsdk, FSDP2, 1 process"),
    ("activation checkpointing", "without"),
    ("activation checkpointing", "with (each block recomputed in backward)"),
    ("image loader", "DataLoader, 2 workers"),
    ("data wait", "GPU busy 60 ms / GPU idle"),
]


def test_the_gpu_check_runs_on_the_cpu_and_prints_one_table():
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "failed" not in out, out
    lines = out.splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].startswith("| part | model | contender | images/s (median) |") and "| MFU |" in table[0]
    assert len(table) == 2 + len(ROWS), "\n".join(table)  # header, rule, one row per contender: one table
    for part, contender in ROWS:
        assert any(row.startswith(f"| {part} |") and contender in row for row in table), (part, contender, out)
    for row in table[2:]:  # every timed row has a rate; the compile row says why it has none
        rate = row.split(" | ")[3]
        assert rate.startswith("skipped") or row.startswith("| data wait |") or float(rate) > 0, row
    assert "CUDA only" in next(row for row in table if row.startswith("| data wait |"))
    assert "Python" in out and "torch" in out and "CPU: no MFU" in out
    assert "loss check (fp32, same batch and mask)" in out  # mimsdk and transformers hold the same weights


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_mfu_uses_the_dense_bf16_peak_of_known_gpus_only(monkeypatch, name, peak):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    gpu_check = importlib.import_module("gpu_check")
    assert gpu_check.dense_bf16_peak(name) == peak
