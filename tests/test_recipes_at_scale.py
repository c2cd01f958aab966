"""The big recipes: every shipped recipe loads; ViT-L and ViT-H build on the meta device with the papers' sizes;
their settings are the papers'; each says what GPUs it was planned for."""

import math
import re
import sys
from pathlib import Path

import pytest

from mimsdk import list_recipes, load_recipe
from mimsdk.config import recipe_source
from mimsdk.serialization import planned_shapes

ROOT = Path(__file__).resolve().parents[1]
# encoder parameters (patch embedding and blocks), as MAE reports them: ViT-L 304 M, ViT-H 632 M
BIG = {
    "natural-images-large": 304e6,
    "natural-images-huge": 632e6,
    "video-kinetics-large": 304e6,
    "sentinel2": 304e6,
    "sentinel2-vit": 304e6,
}
GPU_RECIPES = ["natural-images", "video-kinetics", *BIG]


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_loads_and_builds_on_the_meta_device(name):
    recipe = load_recipe(name)
    assert recipe.name == name and planned_shapes(recipe.model)


@pytest.mark.parametrize(("name", "encoder"), BIG.items())
def test_big_recipes_have_the_papers_encoder_size(name, encoder):
    shapes = planned_shapes(load_recipe(name).model)  # on the meta device: nothing allocated
    counted = sum(math.prod(s) for key, s in shapes.items() if key.startswith(("tokenizer.", "encoder.")))
    assert abs(counted - encoder) / encoder < 0.02, (name, counted)


@pytest.mark.parametrize("name", ["natural-images-large", "natural-images-huge"])
def test_mae_settings_at_scale(name):
    r = load_recipe(name)
    huge = name.endswith("huge")
    assert (r.model.size, r.model.patch_size) == (("huge", [14, 14]) if huge else ("large", [16, 16]))
    assert (r.model.input_size, r.model.mask_ratio, r.model.target) == ([224, 224], 0.75, "norm_pix")
    assert (r.model.decoder_dim, r.model.decoder_depth, r.model.decoder_heads) == (512, 8, 16)
    assert (r.train.base_lr, r.train.warmup_epochs, r.train.weight_decay) == (1.5e-4, 40, 0.05)
    assert r.train.epochs == (1600 if huge else 800)
    assert r.data.batch_size * 8 * r.train.accum_steps == 4096  # per GPU × 8 GPUs × accumulation
    assert r.train.parallel == ("fsdp" if huge else "ddp")


def test_videomae_large_settings():
    r = load_recipe("video-kinetics-large")
    assert (r.model.size, r.model.input_size, r.model.patch_size) == ("large", [16, 224, 224], [2, 16, 16])
    assert (r.model.masker, r.model.mask_ratio) == ("tube", 0.9)
    assert (r.model.decoder_dim, r.model.decoder_depth, r.model.decoder_heads) == (512, 12, 8)
    assert r.data.batch_size * 8 * r.train.accum_steps == 512  # VideoMAE's 8 per GPU × 64 GPUs
    assert (r.train.base_lr, r.train.min_lr, r.train.epochs, r.train.warmup_epochs) == (1.5e-4, 2e-5, 1600, 40)


def test_sentinel2_shards_and_checkpoints_its_vit_large():
    r = load_recipe("sentinel2")
    assert (r.model.size, r.train.parallel, r.train.activation_checkpointing) == ("large", "fsdp", True)


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_each_gpu_recipe_says_what_it_was_planned_for(name):
    _, source = recipe_source(name)
    comment = " ".join(line.lstrip("# ") for line in Path(source).read_text().splitlines() if line.startswith("#"))
    assert re.search(r"Planned for 8 GPUs of \d+ GB", comment), comment
    assert "× 16 bytes" in comment and re.search(r"About \d+ GB per GPU", comment)


def test_plan_memory_counts_a_recipes_memory(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import plan_memory

    plan_memory.main(["quickstart", "--gpus", "2"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| quickstart |")]
    cells = rows[0].strip("| ").split(" | ")
    without, with_ = (float(v) for v in cells[6].split(" / "))
    assert cells[2] == "ddp" and float(cells[1]) > 0 and without > with_ > 0
    sys.modules.pop("plan_memory", None)
