"""Throughput in every run: FLOPs counted by PyTorch's FLOP counter, rates, MFU only against a known peak."""

import math
import time

import torch

from mimsdk import create_model
from mimsdk.run_log import closing_summary
from mimsdk.throughput import Throughput, TimedBatches, count_flops, peak_flops, waiting

TINY = dict(size="tiny", depth=2, input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_depth=2, decoder_heads=2)


def flops_per_sample(**kwargs) -> float:
    model = create_model(**TINY, **kwargs)
    x = torch.rand(4, 3, 32, 32)
    return count_flops(lambda: model(x, noise=torch.rand(4, 64)).loss) / 4


def test_flops_follow_what_the_model_computes():
    full, partial = flops_per_sample(), flops_per_sample(decoder_fraction=0.25)
    everything = flops_per_sample(mask_ratio=0.0)
    assert partial < full < everything  # fewer decoded tokens, and fewer encoded ones, cost less
    # the encoder's matrix products alone: 2 FLOPs per multiply-add, x3 for forward and backward
    dim, tokens, depth = 192, 16 + 1, 2
    encoder = 3 * 2 * depth * tokens * (4 * dim * dim + 8 * dim * dim)
    assert full > encoder


def test_rates_and_mfu():
    cpu = Throughput(1e9, 64, processes=1, device=torch.device("cpu"), dtype=None)
    rates = cpu.rates(samples=128, seconds=2.0)
    assert rates["images_per_s"] == 64 and rates["tokens_per_s"] == 64 * 64 and rates["peak_mem_gb"] > 0
    assert math.isnan(rates["mfu"]) and peak_flops(torch.device("cpu"), torch.bfloat16) is None
    assert "no MFU" in cpu.describe()
    known = Throughput(1e12, 196, processes=8, device=torch.device("cpu"), dtype=None)
    known.peak = 1e15  # as an H100 in bf16 would give: MFU = samples/s x FLOPs / (peak x processes)
    assert known.rates(samples=800, seconds=1.0)["mfu"] == 800 * 1e12 / (1e15 * 8)


def test_the_wait_for_data_is_timed_and_a_loader_bound_run_says_so():
    def slow():
        for i in range(3):
            time.sleep(0.05)  # a loader that makes each batch in 50 ms
            yield i

    batches = TimedBatches(slow())
    assert next(batches) == 0 and next(batches) == 1
    waited = batches.take()
    assert waited >= 0.1 and batches.take() == 0.0 and list(batches) == [2]
    cpu = Throughput(1e9, 64, processes=1, device=torch.device("cpu"), dtype=None)
    rates = cpu.rates(samples=32, seconds=0.2, waited=0.1)
    assert rates["data_wait"] == 0.5 and rates["model_samples_per_s"] == 320 and rates["images_per_s"] == 160
    assert waiting(0.5) == "50% loader-bound" and waiting(0.02) == "2%"
    start = {"step": 1, "loss": 1.0, **cpu.rates(samples=32, seconds=2.0, waited=1.9)}  # the workers start
    history = [start, *({"step": s, "loss": 1.0, **rates} for s in (2, 3))]
    said = closing_summary(history)
    assert "50% of the time waiting for data" in said
    assert "loader-bound: the data came at 160.0 samples/s where the model alone ran at 320.0" in said
    fed = [{**row, "data_wait": 0.01} for row in history]
    assert "loader-bound" not in closing_summary(fed)


def test_data_only_times_the_loader_and_trains_nothing(tmp_path, capsys, monkeypatch):
    from mimsdk.cli import main
    from mimsdk.pretraining import measure_data

    monkeypatch.chdir(tmp_path)
    assert main(["pretrain", "quickstart", "--data-only", "3", "data.num_workers=1", "data.batch_size=16"]) == 0
    said = capsys.readouterr().out
    assert said.startswith("loader alone, 3 batches of 16 with 1 worker: first batch after") and "per worker" in said
    assert not list(tmp_path.iterdir())  # no run directory
    rate = measure_data("quickstart", batches=4, data={"num_workers": 0, "batch_size": 8})
    assert rate.samples_per_s > 0 and rate.per_worker == rate.samples_per_s and rate.batches == 4
    assert main(["pretrain", "quickstart", "--data-only", "1"]) == 2
    assert "at least 2 batches" in capsys.readouterr().err
