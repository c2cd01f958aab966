"""GPU memory a recipe needs per GPU, estimated on the CPU: the figures the big recipes' comments quote.

What it adds up, per GPU, for a recipe as written (its ``data.batch_size`` per process, ``train.parallel``,
``train.activation_checkpointing``) on ``--gpus`` GPUs:

- states: 16 bytes per parameter (fp32 weights 4, gradients 4, AdamW's two moments 8), all of them under
  DDP, a 1/N share under FSDP;
- bf16 copies: 2 bytes per parameter, the weights' casts autocast keeps through the forward pass (DDP);
  FSDP casts and gathers one block at a time, so about nothing;
- activations: what autograd keeps for the backward pass, per sample, times the batch. It is counted, not
  guessed: one bf16-autocast forward of the real model on the CPU at batch 1 and at batch 2 under
  ``torch.autograd.graph.saved_tensors_hooks``, each storage once, weights left out; the difference is one
  sample. With activation checkpointing only each block's input is kept (plus one block's activations while
  it is recomputed, not counted).

Left out: the CUDA context and the allocator's slack (a GB or two), the gradient of the activations in flight
during the backward pass, and the optimiser step's temporaries. ``benchmarks/gpu_check.py`` measures real peaks.

How to run (from the repository root; a ViT-H recipe takes a minute and 3 GB of memory)
    python benchmarks/plan_memory.py natural-images-large natural-images-huge video-kinetics-large sentinel2
"""

from __future__ import annotations

import argparse

import torch
from bench_memory import activation_bytes

from mimsdk import create_model, load_recipe
from mimsdk.parallel import prepare_blocks

GB = 1e9


def gb(value: float) -> str:
    """Bytes as GB, to the precision the size calls for."""
    value /= GB
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass of one bf16 forward of ``model`` on ``x``, weights left out."""

    def forward() -> torch.Tensor:
        with torch.autocast("cpu", torch.bfloat16):
            return model(x, generator=torch.Generator().manual_seed(0))

    return activation_bytes(model, forward)[0]


def per_sample(model: torch.nn.Module, shape: list[int], checkpointing: bool) -> float:
    prepare_blocks(model, activation_checkpointing=checkpointing, compile_blocks=False)
    one, two = (saved_bytes(model, torch.randn(n, *shape)) for n in (1, 2))
    return float(two - one)


def plan(name: str, gpus: int) -> str:
    recipe = load_recipe(name)
    torch.manual_seed(0)
    model = create_model(recipe.model).train()
    params = sum(p.numel() for p in model.parameters())
    # a sample as the model takes it: C×S1..Sn, or N×3 points for point groups
    points = recipe.model.tokenizer == "point_groups"
    shape = list(recipe.model.input_size) if points else [recipe.model.in_chans, *recipe.model.input_size]
    plain, checkpointed = (per_sample(model, shape, c) for c in (False, True))
    t, batch = recipe.train, recipe.data.batch_size
    sharded = t.parallel == "fsdp"
    states = 16 * params / (gpus if sharded else 1)
    copies = 0 if sharded else 2 * params
    activations = batch * (checkpointed if t.activation_checkpointing else plain)
    cells = [
        name,
        f"{params / 1e6:.0f}" if params >= 1e7 else f"{params / 1e6:.1f}",
        f"{t.parallel}{', checkpointing' if t.activation_checkpointing else ''}",
        str(batch),
        gb(states),
        gb(copies),
        f"{gb(batch * plain)} / {gb(batch * checkpointed)}",
        gb(states + copies + activations),
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+")
    parser.add_argument("--gpus", type=int, default=8, help="processes the FSDP states are sharded over")
    args = parser.parse_args(argv)
    print(
        f"| recipe | parameters M | train.parallel (on {args.gpus} GPUs) | batch per GPU | states GB/GPU | "
        "bf16 copies GB | activations GB without / with checkpointing | estimate GB/GPU as set |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.recipes:
        print(plan(name, args.gpus), flush=True)


if __name__ == "__main__":
    main()
