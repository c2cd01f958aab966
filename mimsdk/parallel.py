"""How a run spreads its model over processes (``train.parallel``), and what that changes for checkpoints.

- ``ddp`` (default): every process holds the whole model, gradients are averaged (PyTorch DDP); one
  process runs the model as it is.
- ``fsdp``: PyTorch's FSDP2 (``fully_shard``) shards parameters, gradients and optimiser state over
  the processes, per transformer block and at the root, so a model that does not fit on one GPU
  trains on several. Master weights and optimiser state stay fp32 (``MixedPrecisionPolicy`` computes
  in bf16 where the run does and reduces gradients in fp32). The resume state is a PyTorch
  distributed checkpoint, which loads on any number of processes; the shared model stays one
  whole-model safetensors file.

Both may checkpoint the activations of each block (``train.activation_checkpointing``: recompute them
in the backward pass, trading about a third more compute for memory that no longer grows with depth)
and compile each block (``train.compile``).
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.nn.parallel import DistributedDataParallel

from mimsdk.distributed import Processes
from mimsdk.model import MaskedAutoencoder

STRATEGIES = ("ddp", "fsdp")
SHARDS_PREFIX = "state-"  # a distributed checkpoint's folder in the run directory: state-<step>


def blocks_of(model: MaskedAutoencoder) -> list[nn.Module]:
    """The transformer blocks of the encoder and the decoder: the units that are sharded, checkpointed, compiled."""
    return [*model.encoder.blocks, *getattr(model.decoder, "blocks", [])]


def prepare_blocks(model: MaskedAutoencoder, activation_checkpointing: bool, compile_blocks: bool) -> None:
    """Recompute each block's activations in the backward pass, and compile each block, as asked."""
    for stack in (model.encoder.blocks, getattr(model.decoder, "blocks", None)):
        if stack is not None:
            stack.checkpointing = activation_checkpointing
    if compile_blocks:
        for block in blocks_of(model):
            block.compile()


class Replicated:
    """One process, or DDP: every process holds the whole model and the whole optimiser state."""

    sharded = False

    def __init__(self, model: MaskedAutoencoder, procs: Processes, device: torch.device) -> None:
        self.model, self.procs = model, procs
        ids = [device.index] if device.type == "cuda" else None
        self.module: nn.Module = DistributedDataParallel(model, device_ids=ids) if procs.world > 1 else model

    def no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        return contextlib.nullcontext() if last or self.procs.world == 1 else self.module.no_sync()

    def gathered(self) -> contextlib.AbstractContextManager:
        """The whole model usable outside ``forward`` (evaluation, pictures)."""
        return contextlib.nullcontext()

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def resume_state(self, optimizer: torch.optim.Optimizer, run_dir: Path, step: int) -> dict[str, Any]:
        """What the checkpoint file holds of model and optimiser."""
        return {"model": self.model.state_dict(), "optimizer": optimizer.state_dict()}

    def load_resume_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any], run_dir: Path) -> None:
        self.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])


class Sharded(Replicated):
    """FSDP2 over the process group: parameters, gradients and optimiser state sharded per block."""

    sharded = True

    def __init__(self, model: MaskedAutoencoder, procs: Processes, device: torch.device, compute: torch.dtype | None):
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if model.config.target == "ema_latent":
            raise ValueError("train.parallel: fsdp does not shard the EMA teacher of model.target ema_latent; use ddp")
        self.model, self.procs = model, procs
        def policy(cast_inputs: bool) -> dict[str, Any]:
            if compute is None:
                return {}
            mixed = MixedPrecisionPolicy(compute, torch.float32, cast_forward_inputs=cast_inputs)
            return {"mp_policy": mixed}

        for block in blocks_of(model):
            fully_shard(block, **policy(True))
        # The root's inputs (pixels, mask noise) stay fp32: the target's statistics and the masks are made from them.
        fully_shard(model, **policy(False))
        self.module = model

    def no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        self.model.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def gathered(self) -> Iterator[None]:
        self.model.unshard()
        try:
            yield
        finally:
            self.model.reshard()

    def model_state(self) -> dict[str, torch.Tensor]:
        """The whole model's state on the CPU (every process takes part; rank 0 writes it)."""
        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def resume_state(self, optimizer: torch.optim.Optimizer, run_dir: Path, step: int) -> dict[str, Any]:
        """Save model and optimiser shards as a distributed checkpoint in ``run_dir/state-<step>``; the
        checkpoint file then names that folder, so a kill while the shards are written leaves the last
        complete one in use."""
        folder = run_dir / f"{SHARDS_PREFIX}{step:08d}"
        if self.procs.main and folder.exists():
            shutil.rmtree(folder)
        dist.barrier()
        model_state, optim_state = get_state_dict(self.model, optimizer)
        dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(folder))
        dist.barrier()
        return {"shards": folder.name}

    def load_resume_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any], run_dir: Path) -> None:
        if "shards" not in state:
            raise ValueError(f"{run_dir}: the checkpoint was saved with train.parallel ddp, not fsdp")
        model_state, optim_state = get_state_dict(self.model, optimizer)
        loaded = {"model": model_state, "optimizer": optim_state}
        dcp.load(loaded, checkpoint_id=str(run_dir / state["shards"]))  # reshards to this many processes
        set_state_dict(self.model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"])


def as_number(value: torch.Tensor) -> float:
    """A scalar tensor, sharded (a DTensor under FSDP) or not, as a Python number."""
    return float(value.full_tensor() if hasattr(value, "full_tensor") else value)


def parallelize(
    model: MaskedAutoencoder, strategy: str, procs: Processes, device: torch.device, compute: torch.dtype | None
) -> Replicated:
    """``model`` spread as ``train.parallel`` says, its BatchNorm layers synchronised over the processes."""
    synchronise_batch_norm(model, procs, device)
    if strategy == "fsdp":
        return Sharded(model, procs, device, compute)
    return Replicated(model, procs, device)


def remove_old_shards(run_dir: Path, keep: str | None) -> None:
    """Distributed checkpoints other than ``keep`` (the one the checkpoint file names), after it is written."""
    for folder in run_dir.glob(f"{SHARDS_PREFIX}*"):
        if folder.name != keep and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def synchronise_batch_norm(model: nn.Module, procs: Processes, device: torch.device) -> None:
    """Over several GPUs, BatchNorm layers (the point tokenizer's mini-PointNet, as Point-MAE's) become
    SyncBatchNorm in place, so they normalise over the global batch and several processes train like one (the
    weights keep their names). PyTorch's SyncBatchNorm needs GPUs: on CPUs each process normalises over its
    own batch, said once."""
    if procs.world == 1 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    if device.type == "cuda":
        plain = {name: type(m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
        for name, plain_class in plain.items():
            model.get_submodule(name).plain_class = plain_class  # for plain_batch_norm
    elif procs.main:
        warnings.warn(
            "BatchNorm normalises over each process's own batch on CPUs (SyncBatchNorm needs GPUs): this run "
            "differs from one process with the same global batch",
            stacklevel=2,
        )


def plain_batch_norm(model: nn.Module) -> None:
    """The SyncBatchNorm layers of :func:`synchronise_batch_norm` back to the BatchNorm they were, holding the same
    weights and statistics: after training the model is used outside the process group, where a SyncBatchNorm
    in training mode (a fine-tuning evaluation) would wait for the other processes."""
    for name, module in list(model.named_modules()):
        plain_class = getattr(module, "plain_class", None)
        if not isinstance(module, nn.SyncBatchNorm) or plain_class is None:
            continue
        plain = plain_class(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            plain.weight, plain.bias = module.weight, module.bias
        plain.running_mean, plain.running_var = module.running_mean, module.running_var
        plain.num_batches_tracked = module.num_batches_tracked
        plain.train(module.training)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, plain)
