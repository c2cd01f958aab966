"""A model's size is checked before it is built: a crafted config.json is refused by name, having allocated nothing.

The config alone bounds depths, widths and the tokens times the width (position tables); the model is then
built on the meta device for its shapes, which are compared with the safetensors header. Only a config that
fits its weights is built for real.
"""

import json

import pytest
import torch
from hub_server import FakeHub, point_client_at
from huggingface_hub.utils import _http

import mimsdk.serialization as serialization
from mimsdk import ConfigError, create_model, load_model, save_model
from mimsdk.config import ModelConfig, from_mapping, list_recipes, load_recipe
from mimsdk.hub import pull
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import MAX_TENSOR_VALUES, check_size, planned_shapes

SMALL = dict(size="tiny", depth=2, input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_depth=1, decoder_heads=2)
CRAFTED = {"depth": 10000, "input_size": [100000, 100000], "patch_size": 16}
DEPTH = r"model\.depth 10000 is over the bound of 256 blocks"
TOKENS = r"model\.input_size \[100000, 100000\] makes 39,062,500 tokens \(model\.patch_size \[16, 16\]\)"


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def crafted(tmp_path, name: str, **change) -> tuple:
    """A saved small model whose config.json is then changed (its weights stay those of the small model)."""
    folder = save_model(create_model(**SMALL), tmp_path / name)
    config = json.loads((folder / "config.json").read_text())
    config["model"].update(change)
    (folder / "config.json").write_text(json.dumps(config))
    return folder, config


@pytest.fixture
def spy(monkeypatch):
    """Every model read_model builds, and whether the weights' data were read: a refusal must do neither for real."""
    built: list[bool] = []
    loaded: list[str] = []

    def build(config):
        model = MaskedAutoencoder(config)
        built.append(next(model.parameters()).is_meta)
        return model

    def load_file(path, *args, **kwargs):
        loaded.append(str(path))
        raise AssertionError("the weights' data were read")

    monkeypatch.setattr(serialization, "MaskedAutoencoder", build)
    monkeypatch.setattr(serialization, "load_file", load_file)
    return built, loaded


def test_a_crafted_config_is_refused_naming_its_fields_before_anything_is_built(tmp_path, spy):
    built, loaded = spy
    folder, _ = crafted(tmp_path, "both", **CRAFTED)
    with pytest.raises(ConfigError, match=rf"both/config\.json: refused before building the model: {DEPTH}; {TOKENS}"):
        load_model(folder)
    folder, _ = crafted(tmp_path, "deep", depth=10000)
    with pytest.raises(ConfigError, match=rf"deep/config\.json: refused before building the model: {DEPTH}$"):
        load_model(folder)
    folder, _ = crafted(tmp_path, "wide", input_size=[100000, 100000], patch_size=16)
    with pytest.raises(ConfigError, match=rf"{TOKENS}: at width 192 a position table would hold 7,500,000,000 values"):
        load_model(folder)
    assert built == [] and loaded == []  # refused by arithmetic: not even a meta model was built


@pytest.mark.parametrize(
    "change, message",
    [
        ({"decoder_depth": 300}, r"model\.decoder_depth 300 is over the bound of 256 blocks"),
        ({"embed_dim": 100000, "num_heads": 1}, r"model\.embed_dim 100000 is over the bound of 16,384"),
        ({"decoder_dim": 20000}, r"model\.decoder_dim 20000 is over the bound of 16,384"),
        ({"num_heads": -3}, r"model\.num_heads -3 must be at least 1"),  # 0 means the size's own
        ({"depth": -1}, r"model\.depth -1 must be at least 0"),
        ({"patch_size": [0, 4]}, r"model\.patch_size \[0, 4\] must hold positive sizes"),
        ({"mlp_ratio": 0.0}, r"model\.mlp_ratio 0\.0 must be positive"),
        ({"size": "huge", "depth": None, "input_size": [8192, 8192]}, r"makes 4,194,304 tokens .* at width 1,280"),
        # no field is over its own bound, but one tensor would be: named from the model built on the meta device
        ({"mlp_ratio": 100000.0}, r"its encoder\.blocks\.0\.mlp\.fc1\.weight would be \(19200000, 192\)"),
        ({"patch_size": [32, 32], "in_chans": 300000}, r"its tokenizer\.proj\.weight would be \(192, 307200000\)"),
    ],
)
def test_each_bound_names_its_field(tmp_path, spy, change, message):
    built, loaded = spy
    folder, _ = crafted(tmp_path, "m", **change)
    with pytest.raises(ConfigError, match=rf"m/config\.json: refused before building the model: .*{message}"):
        load_model(folder)
    assert all(built) and loaded == []  # built on the meta device at most


def test_other_tokenizers_count_their_tokens(tmp_path):
    points = from_mapping(
        ModelConfig,
        {**SMALL, "input_size": [10**9, 3], "tokenizer": "point_groups", "tokenizer_options": {"groups": 10**7}},
    )
    with pytest.raises(ConfigError, match=r"model\.tokenizer_options\.groups 10,000,000 makes 10,000,000 tokens"):
        check_size(points)
    groups = from_mapping(
        ModelConfig,
        {**SMALL, "input_size": [40000, 40000], "in_chans": 4, "tokenizer": "channel_groups",
         "tokenizer_options": {"groups": [[0, 1], [2, 3]]}},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"makes 200,000,000 tokens \(model\.patch_size \[4, 4\], 2 channel groups\)"):
        check_size(groups)


def test_weights_that_do_not_fit_are_refused_from_the_header_alone(tmp_path, spy):
    built, loaded = spy
    folder, _ = crafted(tmp_path, "narrow", embed_dim=96)
    expected = r"tokenizer\.proj\.weight has shape \(192, 48\), the config expects \(96, 48\)"
    with pytest.raises(ValueError, match=expected):
        load_model(folder)
    folder, _ = crafted(tmp_path, "shallow", depth=1)
    with pytest.raises(ValueError, match=r"does not fit its config: missing \[\], unexpected \['encoder\.blocks\.1\."):
        load_model(folder)
    assert built == [True, True] and loaded == []  # shapes from a meta model and the header; no data read


def test_the_shapes_are_found_without_allocating_even_for_a_huge_grid(monkeypatch):
    # With the bounds lifted, the meta build alone: a 39-million-token sin-cos table (30 GB if computed) is a shape.
    monkeypatch.setattr(serialization, "MAX_TENSOR_VALUES", 2**50)
    monkeypatch.setattr(serialization, "MAX_MODEL_VALUES", 2**50)
    config = from_mapping(ModelConfig, {**SMALL, "input_size": [100000, 100000], "patch_size": 16})
    planned = planned_shapes(config)
    assert planned["pos.table"] == (1, 39_062_500, 192) and planned["decoder.pos.table"] == (1, 39_062_500, 64)
    groups = from_mapping(
        ModelConfig,
        {**SMALL, "input_size": [100000, 100000], "patch_size": 16, "in_chans": 4, "tokenizer": "channel_groups",
         "tokenizer_options": {"groups": [[0, 1], [2, 3]], "spacing": 10.0}},
    )  # fmt: skip
    assert planned_shapes(groups)["encoder.cls_token"] == (1, 1, 192)  # its tables are computed "on the CPU"


@pytest.mark.parametrize("name", [n for n in list_recipes() if n.endswith("-tiny") or n == "quickstart"])
def test_planned_shapes_are_the_built_models_for_every_tiny_recipe(name):
    config = load_recipe(name).model
    assert planned_shapes(config) == shapes(MaskedAutoencoder(config))


@pytest.mark.parametrize(
    "change",
    [
        {"masker": "hpm"},
        {"target": "ema_latent"},
        {"target": "hog"},
        {"masker": "block"},
        {"pos_embed": "learned", "drop_path": 0.1},
        {"decoder_fraction": 0.5},
        {"in_chans": 4, "tokenizer": "channel_groups", "tokenizer_options": {"groups": [[0, 1], [2, 3]]}},
    ],
)
def test_planned_shapes_are_the_built_models_for_the_variants(change):
    config = create_model(**SMALL, **change).config
    assert planned_shapes(config) == shapes(MaskedAutoencoder(config))
    encoder_only = planned_shapes(config, encoder_only=True)
    assert encoder_only and not any(k.startswith("decoder.") for k in encoder_only)


def test_every_shipped_recipe_is_within_the_bounds():
    for name in list_recipes():
        planned = planned_shapes(load_recipe(name).model)
        assert planned and max(torch.Size(s).numel() for s in planned.values()) <= MAX_TENSOR_VALUES, name


def test_good_models_still_load(tmp_path):
    model = create_model(**SMALL)
    loaded = load_model(save_model(model, tmp_path / "good"))
    assert shapes(loaded) == shapes(model)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.encode(x), model.eval().encode(x))


def test_pull_and_load_refuse_a_crafted_hub_repo(tmp_path, monkeypatch, spy):
    built, loaded = spy
    folder, config = crafted(tmp_path, "source", **CRAFTED)
    with FakeHub() as hub:
        point_client_at(monkeypatch, hub.url, tmp_path / "hf_home")
        files = {"config.json": (folder / "config.json").read_bytes()}
        hub.create("alice/crafted", {**files, "model.safetensors": (folder / "model.safetensors").read_bytes()})
        where = rf"alice/crafted at http://127\.0\.0\.1:\d+: config\.json: refused before building the model: {DEPTH}"
        with pytest.raises(ConfigError, match=rf"{where}; {TOKENS}"):
            pull("alice/crafted", tmp_path / "out")
        assert not (tmp_path / "out").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial download left
        with pytest.raises(ConfigError, match=where):
            load_model("alice/crafted")
    _http.close_session()
    assert built == [] and loaded == []
