"""FSDP2, distributed checkpoints, activation checkpointing and compiled blocks, on the CPU with gloo.

Every multi-process run goes through torchrun in a subprocess, so no process group outlives its test.
"""

import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from test_distributed import RECIPE as DDP_RECIPE
from test_distributed import TOLERANCE

from mimsdk import create_model, pretrain
from mimsdk.parallel import prepare_blocks

# test_distributed's recipe and tolerance, over 5 steps (issue 16 asks for 5)
RECIPE = {**DDP_RECIPE, "train": {**DDP_RECIPE["train"], "max_steps": 5}}


def run(tmp_path, name: str, body: str, processes: int = 2) -> None:
    """``body`` (Python, with ``recipe`` defined) in ``processes`` torchrun workers."""
    script = tmp_path / f"{name}.py"
    script.write_text(
        "import torch\ntorch.set_num_threads(1)\nfrom mimsdk import pretrain\nfrom mimsdk.trainer import Trainer\n"
        f"recipe = {RECIPE!r}\n" + textwrap.dedent(body)
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), script]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def losses(run_dir) -> list[float]:
    return [row["loss"] for row in torch.load(run_dir / "checkpoint.pt", weights_only=True)["history"]]


def test_fsdp_trains_like_one_process_and_like_ddp(tmp_path):
    single = [row["loss"] for row in pretrain(RECIPE, out=tmp_path / "single").history]
    half = 'recipe["data"]["batch_size"] = 8  # per process: the global batch stays 16\n'
    run(tmp_path, "fsdp", half + f'pretrain(recipe, out={str(tmp_path / "fsdp")!r}, parallel="fsdp")')
    run(tmp_path, "ddp", half + f'pretrain(recipe, out={str(tmp_path / "ddp")!r}, parallel="ddp")')
    run(tmp_path, "fsdp1", f'pretrain(recipe, out={str(tmp_path / "fsdp1")!r}, parallel="fsdp")', processes=1)
    for other in ("fsdp", "ddp", "fsdp1"):
        got = losses(tmp_path / other)
        assert len(got) == 5 and max(abs(a - b) for a, b in zip(single, got)) < TOLERANCE, (other, single, got)
    # the shared model is one whole-model safetensors file, whatever the sharding
    whole = load_file(tmp_path / "fsdp" / "model" / "model.safetensors")
    assert set(whole) == set(create_model(RECIPE["model"] | {"modality": "images"}).state_dict())


def test_a_stopped_fsdp_run_resumes_exactly_and_its_shards_load_in_one_process(tmp_path):
    recipe_2 = 'recipe["data"]["batch_size"] = 8\nrecipe["train"]["ckpt_every"] = 2\n'
    run(tmp_path, "whole", recipe_2 + f'pretrain(recipe, out={str(tmp_path / "whole")!r}, parallel="fsdp")')
    cut = str(tmp_path / "cut")
    # "killed" after the step-2 checkpoint: the process ends there, then a new one resumes
    stop = "from mimsdk import load_recipe\nrecipe['train']['parallel'] = 'fsdp'\n"
    stop += f"Trainer(load_recipe(recipe), {cut!r}).fit(until=3)\n"
    run(tmp_path, "stop", recipe_2 + stop)
    state = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3 and (tmp_path / "cut" / state["shards"]).is_dir()
    assert len(list(tmp_path.glob("cut/state-*"))) == 1  # older shards are removed once a newer one is in place
    saved = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    # the 2-process distributed checkpoint loads in one process, every weight as it was saved
    check = f"t = Trainer.resume({cut!r})\nfrom mimsdk.serialization import save_model\n"
    check += f"save_model(t.model, {str(tmp_path / 'one')!r}, state=t.spread.model_state())\n"
    run(tmp_path, "one", check, processes=1)
    reloaded = load_file(tmp_path / "one" / "model.safetensors")
    assert all(torch.equal(saved[k], reloaded[k]) for k in saved)
    run(tmp_path, "resume", f"pretrain(out={cut!r}, resume=True)")
    assert losses(tmp_path / "cut") == losses(tmp_path / "whole")  # same processes: bit for bit


@pytest.mark.parametrize("drop_path", [0.0, 0.2])
def test_activation_checkpointing_gives_the_same_gradients(drop_path):
    kwargs = dict(RECIPE["model"], drop_path=drop_path)
    x, noise = torch.rand(4, 3, 32, 32), torch.rand(4, 16)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = create_model(**kwargs)
        prepare_blocks(model, activation_checkpointing=checkpointing, compile_blocks=False)
        torch.manual_seed(1)  # drop-path draws: replayed identically by the checkpointed recomputation
        model(x, noise=noise).loss.backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-6), name


def test_compiled_blocks_give_the_same_loss():
    x, noise = torch.rand(4, 3, 32, 32), torch.rand(4, 16)
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = create_model(**RECIPE["model"])
        prepare_blocks(model, activation_checkpointing=False, compile_blocks=compiled)
        results.append(model(x, noise=noise).loss.item())
    assert abs(results[0] - results[1]) < 1e-4, results


def test_batch_norm_is_synchronised_over_gpus_and_keeps_its_weight_names():
    from torch import nn

    from mimsdk.distributed import Processes
    from mimsdk.parallel import plain_batch_norm, synchronise_batch_norm

    model = create_model(
        size="tiny", depth=1, input_size=[512, 3], tokenizer="point_groups", target="chamfer", modality="pointcloud",
        tokenizer_options={"groups": 32, "group_size": 16, "pointnet_width": 32}, decoder_dim=32, decoder_depth=1,
        decoder_heads=2,
    )  # fmt: skip
    names = list(model.state_dict())
    synchronise_batch_norm(model, Processes(world=1), torch.device("cuda"))  # one process: nothing to synchronise
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    with pytest.warns(UserWarning, match="each process's own batch on CPUs"):
        synchronise_batch_norm(model, Processes(world=2), torch.device("cpu"))
    synchronise_batch_norm(model, Processes(world=2), torch.device("cuda"))  # converts without touching a GPU
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == 2 and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert list(model.state_dict()) == names
    weights = [m.weight for m in norms]
    plain_batch_norm(model)  # after training: plain BatchNorm again, the same weights
    back = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(type(m) is nn.BatchNorm1d for m in back) and [m.weight for m in back] == weights
    assert list(model.state_dict()) == names
