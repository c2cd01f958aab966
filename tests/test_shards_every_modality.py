"""Resume and two processes on the shard sets of the five other modalities (images: tests/test_shards.py).

Each modality's shared sample is sharded with its tiny recipe; a run stopped after its step-2 checkpoint resumes
to the uninterrupted run's losses (1e-6), and two gloo processes, each with half the batch, give one process's
losses (1e-5: the summation order). The two-process runs of all five share one torchrun launch. Point clouds
are the exception on CPUs: the tokenizer's BatchNorm sees each process's half of the batch (SyncBatchNorm, used
on GPUs, needs them), which the run says.
"""

import warnings
from pathlib import Path

import pytest
import torch
from conftest import SHARED
from torchrun import pretrain_in_two_processes

from mimsdk import pretrain
from mimsdk.config import load_recipe
from mimsdk.sharding import shard
from mimsdk.trainer import Trainer

STEPS = ["train.max_steps=4", "train.warmup_steps=1", "train.log_every=1", "train.ckpt_every=2",
         "train.recon_every=1000", "data.num_workers=0", "model.depth=1", "model.decoder_depth=1"]  # fmt: skip
# modality: recipe, the shared sample, overrides, the batch (split in two for two processes)
CASES = {
    "medical": ("radiology-ct-tiny", SHARED / "medical3d" / "nifti",
                ["model.input_size=[16,16,16]", "model.embed_dim=48", "model.num_heads=3", "model.decoder_dim=32",
                 "model.decoder_heads=2"], 2),
    "multispectral": ("sentinel2-tiny", SHARED / "multispectral" / "eurosat_ms", [], 16),
    "video": ("video-tiny", None, ["model.input_size=[8,32,32]", "data.options.short_side=48",
                                   "data.options.clips_per_video=2"], 2),
    "pointcloud": ("pointcloud-tiny", SHARED / "pointcloud" / "modelnet40_2048", [], 8),
    "documents": ("documents-tiny", SHARED / "documents", [], 4),
}  # fmt: skip
VIDEOS = ["mmaction2_test.avi", "kinetics400_arm_wrestling_demo.mp4"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, tuple[str, Path, list[str]]]:
    """Each modality's recipe, shard set and overrides (its batch included)."""
    root = tmp_path_factory.mktemp("sets")
    made = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the samples' own warnings (a NIfTI's qform) are other tests' subject
        for modality, (recipe, data, overrides, batch) in CASES.items():
            if data is None:  # two real clips, two windows each
                data = root / "videos"
                data.mkdir()
                for name in VIDEOS:
                    (data / name).symlink_to(SHARED / "video" / name)
            if not data.exists():
                pytest.fail(f"shared sample data missing at {data}: tests expect ../shared beside the checkout")
            changes = [*STEPS, *overrides, f"data.batch_size={batch}"]
            made[modality] = (recipe, shard(recipe, data=data, out=root / modality, overrides=changes), changes)
    return made


def losses(history: list[dict]) -> list[float]:
    return [row["loss"] for row in history]


@pytest.mark.parametrize("modality", list(CASES))
def test_a_run_on_shards_stopped_after_a_checkpoint_resumes_exactly(sets, tmp_path, modality):
    recipe, shards, changes = sets[modality]
    whole = pretrain(recipe, data=shards, out=tmp_path / "whole", overrides=changes)
    Trainer(load_recipe(recipe, [*changes, f"data.path={shards}"]), tmp_path / "cut").fit(until=2)  # then killed
    resumed = pretrain(out=tmp_path / "cut", resume=True)
    assert len(losses(resumed.history)) == 4
    assert max(abs(a - b) for a, b in zip(losses(whole.history), losses(resumed.history))) < 1e-6


def test_two_processes_on_the_shards_of_every_modality_match_one(sets, tmp_path):
    calls, single = [], {}
    for modality, (recipe, shards, changes) in sets.items():
        single[modality] = pretrain(recipe, data=shards, out=tmp_path / f"{modality}-one", overrides=changes)
        half = [*changes, f"data.batch_size={CASES[modality][3] // 2}"]  # per process: the global batch stays
        calls.append({"recipe": recipe, "data": str(shards), "out": str(tmp_path / f"{modality}-two"),
                      "overrides": half})  # fmt: skip
    said = pretrain_in_two_processes(tmp_path, *calls)
    for modality, one in single.items():
        two = torch.load(tmp_path / f"{modality}-two" / "checkpoint.pt", weights_only=True)["history"]
        assert len(two) == 4, modality
        if modality == "pointcloud":  # its tokenizer's BatchNorm: synchronised on GPUs only, and said here
            assert "BatchNorm normalises over each process's own batch on CPUs" in said
            continue
        assert max(abs(a - b) for a, b in zip(losses(one.history), losses(two))) < 1e-5, modality
