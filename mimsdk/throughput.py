"""How fast a run goes and how well it uses the hardware: samples/s, tokens/s, MFU and peak memory.

Model FLOPs are counted once, at the start of a run, by PyTorch's own FLOP counter over one real
forward and backward pass of a micro-batch (not a hand formula, so partial decoding, HPM or a point
tokenizer are counted as they run). Model FLOPs utilisation (MFU) is the share of the device's
dense peak for the precision in use that those FLOPs reach; it is reported on GPUs whose peak is known.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense (not sparse) peak FLOP/s per GPU by name and autocast dtype, from the vendors' data sheets (SXM parts).
PEAKS = {
    ("H200", torch.bfloat16): 989e12,
    ("H100", torch.bfloat16): 989e12,
    ("A100", torch.bfloat16): 312e12,
    ("L40S", torch.bfloat16): 362e12,
    ("L4", torch.bfloat16): 121e12,
}
COLUMNS = ["images_per_s", "tokens_per_s", "mfu", "peak_mem_gb"]


def peak_flops(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """The device's dense peak FLOP/s for ``dtype`` (autocast; None = fp32), or None when not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for (gpu, kind), peak in PEAKS.items() if gpu in name and kind == dtype), None)


def count_flops(step: Callable[[], torch.Tensor]) -> int:
    """FLOPs of ``step()`` (a forward pass returning the loss) and of the backward pass of its loss."""
    with FlopCounterMode(display=False) as counter:
        step().backward()
    return counter.get_total_flops()


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: allocated on a GPU, the process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux reports kilobytes


class Throughput:
    """Turns a step's samples and seconds into the run's rates.

    Args:
        flops_per_sample: model FLOPs of one sample's forward and backward pass.
        tokens_per_sample: tokens L of one sample. processes: how many share a step.
        device, dtype: where and in what precision the run computes (for MFU and memory).
    """

    def __init__(
        self, flops_per_sample: float, tokens_per_sample: int, processes: int, device: torch.device, dtype: Any
    ) -> None:
        self.flops_per_sample, self.tokens, self.processes = flops_per_sample, tokens_per_sample, processes
        self.device, self.peak = device, peak_flops(device, dtype)

    def rates(self, samples: int, seconds: float) -> dict[str, float]:
        """One step's samples/s, tokens/s, MFU (NaN where the peak is unknown) and peak memory in GB."""
        per_second = samples / seconds
        mfu = per_second * self.flops_per_sample / (self.peak * self.processes) if self.peak else float("nan")
        return {
            "images_per_s": per_second,
            "tokens_per_s": per_second * self.tokens,
            "mfu": mfu,
            "peak_mem_gb": peak_memory_gb(self.device),
        }

    def describe(self) -> str:
        """The counted FLOPs and the peak they are measured against, for the run's summary."""
        peak = f"against a peak of {self.peak / 1e12:.0f} TFLOP/s" if self.peak else "no MFU (no known peak here)"
        return f"{self.flops_per_sample / 1e9:.3g} GFLOP per sample (forward and backward), {peak}"
