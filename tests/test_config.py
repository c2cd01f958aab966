import pytest

from mimsdk import ConfigError, list_recipes, load_recipe
from mimsdk.config import parse_overrides


def test_every_shipped_recipe_loads():
    names = list_recipes()
    assert {"quickstart", "natural-images"} <= set(names)
    for name in names:
        assert load_recipe(name).name == name


def test_paper_settings_of_natural_images():
    r = load_recipe("natural-images")
    model = (r.model.size, r.model.patch_size, r.model.mask_ratio, r.model.target)
    assert model == ("base", [16, 16], 0.75, "norm_pix")
    assert (r.model.decoder_dim, r.model.decoder_depth) == (512, 8)
    assert (r.train.base_lr, r.train.epochs, r.train.warmup_epochs) == (1.5e-4, 800, 40)
    assert r.data.batch_size * 8 * r.train.accum_steps == 4096  # 64 per GPU × 8 GPUs × accum 8


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  size: tiny\n  mask_ration: 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown key model\.mask_ration.*allowed keys in model: size"):
        load_recipe(path)
    with pytest.raises(ConfigError, match="unknown key trian"):
        load_recipe("quickstart", ["trian.max_steps=3"])


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match=r"model\.size: 'gigantic' is not allowed; expected one of tiny"):
        load_recipe("quickstart", {"model": {"size": "gigantic"}})
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer, got 'eight'"):
        load_recipe("quickstart", ["data.batch_size=eight"])
    with pytest.raises(ConfigError, match=r"model\.input_size\[1\]: expected an integer"):
        load_recipe("quickstart", ["model.input_size=[32, x]"])
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")


def test_dotted_overrides_are_parsed_as_yaml():
    assert parse_overrides(["train.max_steps=50", "data.crop_scale=[0.5, 1]", "train.lr=1e-3"]) == {
        "train": {"max_steps": 50, "lr": "1e-3"},  # YAML 1.1 keeps it a string; the recipe check converts
        "data": {"crop_scale": [0.5, 1]},
    }
    r = load_recipe("quickstart", ["train.max_steps=50", "data.batch_size=8", "train.lr=1e-3"])
    assert r.train.max_steps == 50 and r.data.batch_size == 8 and r.train.lr == 1e-3
    with pytest.raises(ConfigError, match="not of the form key=value"):
        parse_overrides(["train.max_steps"])
