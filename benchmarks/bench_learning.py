"""Learning check: does pre-training teach the encoder something, and as well as transformers' ViTMAE?

Pre-trains the ``quickstart`` recipe on the CIFAR-10 sample's train split twice with the same
budget, data order, augmentation, masks, initial weights and schedule: once with mimsdk's
``MaskedAutoencoder`` (through ``pretrain``) and once with transformers' ``ViTMAEForPreTraining``
(same loop, weights copied in at the start). Then, on the test split, reports:

- the masked-patch loss (norm_pix; predicting zeros scores 1.0);
- kNN (k=20, cosine), linear-probe and fine-tuning accuracy of each encoder and of the randomly
  initialised one.

Run: python benchmarks/bench_learning.py [--steps 200] [--finetune-epochs 10] [--data ../shared/data/images/cifar10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mimsdk import DataConfig, MaskedAutoencoder, load_recipe
from mimsdk.adapter import get_adapter
from mimsdk.cli import probe_model
from mimsdk.evaluate import masked_loss
from mimsdk.hub.transformers_export import to_vitmae
from mimsdk.optim import lr_at, param_groups, set_lr
from mimsdk.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]


def _load_vitmae_blocks(blocks: torch.nn.ModuleList, hf: dict[str, torch.Tensor], prefix: str) -> None:
    for i, block in enumerate(blocks):
        p = f"{prefix}.{i}"
        attn = [hf[f"{p}.attention.{n}_proj.weight"] for n in "qkv"]
        block.attn.qkv.weight.copy_(torch.cat(attn))
        block.attn.qkv.bias.copy_(torch.cat([hf[f"{p}.attention.{n}_proj.bias"] for n in "qkv"]))
        pairs = {"attn.proj": "attention.o_proj", "norm1": "layernorm_before", "norm2": "layernorm_after",
                 "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}  # fmt: skip
        for ours, theirs in pairs.items():
            module = block.get_submodule(ours)
            module.weight.copy_(hf[f"{p}.{theirs}.weight"])
            module.bias.copy_(hf[f"{p}.{theirs}.bias"])


@torch.no_grad()
def from_vitmae(hf: dict[str, torch.Tensor], model: MaskedAutoencoder) -> MaskedAutoencoder:
    """Trained ViTMAE weights back into ``model`` (the inverse of ``vitmae_state_dict``; tables are fixed)."""
    conv = hf["vit.embeddings.patch_embeddings.projection.weight"]
    model.tokenizer.proj.weight.copy_(conv.permute(0, 2, 3, 1).reshape(conv.shape[0], -1))
    model.tokenizer.proj.bias.copy_(hf["vit.embeddings.patch_embeddings.projection.bias"])
    model.encoder.cls_token.copy_(hf["vit.embeddings.cls_token"])
    model.decoder.mask_token.copy_(hf["decoder.mask_token"])
    linear = {"vit.layernorm": model.encoder.norm, "decoder.decoder_embed": model.decoder.embed,
              "decoder.decoder_norm": model.decoder.norm, "decoder.decoder_pred": model.decoder.pred}  # fmt: skip
    for theirs, ours in linear.items():
        ours.weight.copy_(hf[f"{theirs}.weight"])
        ours.bias.copy_(hf[f"{theirs}.bias"])
    _load_vitmae_blocks(model.encoder.blocks, hf, "vit.layers")
    _load_vitmae_blocks(model.decoder.blocks, hf, "decoder.decoder_layers")
    return model


def train_transformers(trainer: Trainer) -> MaskedAutoencoder:
    """The quickstart loop of ``Trainer.fit`` with transformers' ViTMAE in place of ours."""
    t = trainer.recipe.train
    hf = to_vitmae(trainer.model).train()
    skip = {"vit.embeddings.cls_token", "decoder.mask_token"}
    opt = torch.optim.AdamW(param_groups(hf, t.weight_decay, skip), lr=trainer.peak_lr, betas=tuple(t.betas))
    batches = trainer._batches(0)
    for step in range(trainer.total_steps):
        set_lr(opt, lr_at(step, trainer.peak_lr, t.min_lr, trainer.warmup_steps, trainer.total_steps))
        x, _ = next(batches)
        out = hf(pixel_values=x, noise=trainer._noise(step, x.shape[0])["noise"])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model = from_vitmae(hf.state_dict(), MaskedAutoencoder(trainer.model.config))
    assert torch.equal(to_vitmae(model).state_dict()["vit.layers.0.mlp.fc1.weight"], hf.vit.layers[0].mlp.fc1.weight)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "images" / "cifar10")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-learning"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    recipe = load_recipe("quickstart", {"data": {"path": str(args.data / "train")}, "train": {"max_steps": args.steps}})
    stamp = time.strftime("%Y%m%d-%H%M%S")
    models: dict[str, MaskedAutoencoder] = {}
    timings: dict[str, float] = {}

    trainer = Trainer(recipe, args.out / f"mimsdk-{stamp}")
    random_init = MaskedAutoencoder(trainer.model.config)
    random_init.load_state_dict(trainer.model.state_dict())  # the shared starting point
    models["random init"] = random_init.eval()
    started = time.perf_counter()
    models["mimsdk"] = trainer.fit().model
    timings["mimsdk"] = time.perf_counter() - started

    peer = Trainer(recipe, args.out / f"transformers-{stamp}")
    peer.model.load_state_dict(random_init.state_dict())
    started = time.perf_counter()
    models["transformers ViTMAE"] = train_transformers(peer)
    timings["transformers ViTMAE"] = time.perf_counter() - started

    test = get_adapter("images").dataset(args.data / "test", DataConfig(), recipe.model, train=False)
    print(f"quickstart, {args.steps} steps, batch {recipe.data.batch_size}, on {args.data / 'train'}")
    print("| encoder | train time (s) | held-out masked loss | kNN | linear | fine-tune |")
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        loss = masked_loss(model, test, seed=0)
        acc = probe_model(
            model, str(args.data / "train"), str(args.data / "test"), None,
            ["knn", "linear", "finetune"], args.finetune_epochs,
        )  # fmt: skip
        took = f"{timings[name]:.0f}" if name in timings else "-"
        print(f"| {name} | {took} | {loss:.4f} | {acc['knn']:.3f} | {acc['linear']:.3f} | {acc['finetune']:.3f} |")


if __name__ == "__main__":
    main()
