"""How fast a run goes and how well it uses the hardware: samples/s, tokens/s, MFU, peak memory, and the
share of each step spent waiting for data.

Model FLOPs are counted once, at the start of a run, by PyTorch's own FLOP counter over one real
forward and backward pass of a micro-batch (not a hand formula, so partial decoding, HPM or a point
tokenizer are counted as they run). Model FLOPs utilisation (MFU) is the share of the device's
dense peak for the precision in use that those FLOPs reach; it is reported on GPUs whose peak is known.

A step that waits for its batch is loader-bound: the model could go faster than the data come. The
wait is timed around the loader's ``next`` (on a GPU, as the GPU's idle time: :class:`TimedBatches`);
``model_samples_per_s`` is what the step's compute alone would reach, so the two rates side by side say
which of data and model sets the pace.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils import flop_counter

COLUMNS = ["images_per_s", "tokens_per_s", "mfu", "peak_mem_gb", "data_wait", "model_samples_per_s"]
LOADER_BOUND = 0.1  # a run whose steps wait this share of their time or more for data is loader-bound


def dense_bf16_peak(name: str) -> float | None:
    """NVIDIA's dense (no sparsity) bf16 tensor-core peak in TFLOP/s for a device name, None when not known."""
    upper = name.upper()
    if "NVL" in upper:  # NVL variants run at other clocks and power
        return None
    if "H200" in upper or ("H100" in upper and ("HBM3" in upper or "SXM" in upper)):
        return 989.0  # H100 SXM, H200 (SXM); torch names an H100 SXM "NVIDIA H100 80GB HBM3"
    if "H100" in upper and "PCIE" in upper:
        return 756.0
    if "A100" in upper:
        return 312.0
    return None


def peak_flops(device: torch.device, dtype: torch.dtype | None) -> float | None:
    """The device's dense peak FLOP/s for ``dtype`` (autocast; None = fp32), or None when not known."""
    if device.type != "cuda" or dtype is not torch.bfloat16:
        return None
    peak = dense_bf16_peak(torch.cuda.get_device_name(device))
    return peak * 1e12 if peak is not None else None


def count_cpu_attention() -> None:
    """FlopCounterMode knows the CUDA attention kernels; teach it the CPU one so CPU counts include attention."""
    aten = torch.ops.aten
    forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is None or backward is None or forward in flop_counter.flop_registry:
        return

    @flop_counter.register_flop_formula(forward)
    def _forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query, key, value)

    @flop_counter.register_flop_formula(backward)
    def _backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_backward_flop_count(grad_out, query, key, value)


def count_flops(step: Callable[[], torch.Tensor]) -> int:
    """FLOPs of ``step()`` (a forward pass returning the loss) and of the backward pass of its loss."""
    count_cpu_attention()
    with flop_counter.FlopCounterMode(display=False) as counter:
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

    def rates(self, samples: int, seconds: float, waited: float = 0.0) -> dict[str, float]:
        """One step's samples/s, tokens/s, MFU (NaN where the peak is unknown), peak memory in GB, the share
        of the step spent waiting for data (``waited`` seconds) and the samples/s of the rest of the step."""
        per_second = samples / seconds
        mfu = per_second * self.flops_per_sample / (self.peak * self.processes) if self.peak else float("nan")
        return {
            "images_per_s": per_second,
            "tokens_per_s": per_second * self.tokens,
            "mfu": mfu,
            "peak_mem_gb": peak_memory_gb(self.device),
            "data_wait": waited / seconds,
            "model_samples_per_s": samples / max(seconds - waited, 1e-9),
        }

    def describe(self) -> str:
        """The counted FLOPs and the peak they are measured against, for the run's summary."""
        peak = f"against a peak of {self.peak / 1e12:.0f} TFLOP/s" if self.peak else "no MFU (no known peak here)"
        return f"{self.flops_per_sample / 1e9:.3g} GFLOP per sample (forward and backward), {peak}"


def waiting(share: float) -> str:
    """The progress bar's word on data: ``3%``, or ``40% loader-bound``."""
    return f"{share:.0%}" + (" loader-bound" if share >= LOADER_BOUND else "")


class TimedBatches:
    """Batches from ``batches``, adding up the seconds spent waiting for each (:meth:`take` reads and resets).

    On a CPU the step computes in the caller's thread, so the wall time inside ``next`` is all waiting. On a
    GPU the work queued before ``next`` (the previous micro-batch's backward, with ``train.accum_steps`` > 1,
    or the last optimiser step) may still be running while the host waits: only the GPU's idle time counts,
    timed between two CUDA events recorded around ``next`` (read in :meth:`take`, after the step's sync).
    """

    def __init__(self, batches: Iterator, device: torch.device | None = None) -> None:
        self.batches, self.waited = batches, 0.0
        self.device = device if device is not None and device.type == "cuda" else None
        self.marks: list[tuple[Any, Any]] = []  # (queued work done, batch in hand) per batch, on a GPU

    def __iter__(self) -> TimedBatches:
        return self

    def __next__(self) -> Any:
        if self.device is not None:
            stream = torch.cuda.current_stream(self.device)  # this process's GPU, whichever is current
            before, after = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            before.record(stream)
            try:
                return next(self.batches)
            finally:
                after.record(stream)
                self.marks.append((before, after))
        started = time.perf_counter()
        try:
            return next(self.batches)
        finally:
            self.waited += time.perf_counter() - started

    def take(self) -> float:
        """Seconds waited since the last call."""
        for before, after in self.marks:
            after.synchronize()
            self.waited += before.elapsed_time(after) / 1000
        waited, self.waited, self.marks = self.waited, 0.0, []
        return waited
