"""Throughput in every run: FLOPs counted by PyTorch's FLOP counter, rates, MFU only against a known peak."""

import math

import torch

from mimsdk import create_model
from mimsdk.throughput import Throughput, count_flops, peak_flops

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
