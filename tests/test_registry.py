"""The registries: one name per part, the recipe's allowed values read from them, adapters found by module."""

import subprocess
import sys

import pytest

from mimsdk import ConfigError, load_recipe
from mimsdk.registry import ADAPTERS, MASKERS, TARGETS, TOKENIZERS, Registry

# What each optional extra provides, as pyproject.toml declares it; a missing one must say which extra to install.
MISSING = [
    ("chest-xray-tiny", "monai", "medical"),
    ("sentinel2-tiny", "rasterio", "geo"),
    ("video-tiny", "decord", "video"),
    ("pointcloud-tiny", "open3d", "points"),
    ("documents-tiny", "pypdfium2", "docs"),
]


def test_every_shipped_part_is_registered_once_by_name():
    assert {"patch", "channel_groups", "point_groups"} <= set(TOKENIZERS.names())
    assert {"random", "tube", "block", "colored", "hpm"} <= set(MASKERS.names())
    assert {"norm_pix", "pixels", "pixels_l1", "frequency", "hog", "ema_latent", "chamfer"} <= set(TARGETS.names())
    assert set(ADAPTERS.names()) == {"images", "medical", "multispectral", "video", "pointcloud", "documents"}
    registry = Registry("thing", "model.thing")
    registry.register("a")(int)
    with pytest.raises(ValueError, match="two things registered as 'a'"):
        registry.register("a")(float)


def test_recipe_values_and_options_come_from_the_registries():
    with pytest.raises(ConfigError, match="model.target: 'hogg' is not allowed.*hog"):
        load_recipe("quickstart", ["model.target=hogg"])
    with pytest.raises(ConfigError, match="unknown key model.target_options.binz for the hog target; allowed: bins"):
        load_recipe("quickstart", ["model.target=hog", "model.target_options={binz: 4}"])
    recipe = load_recipe("quickstart", ["model.target=hog", "model.target_options={bins: 6, cell: 4}"])
    assert recipe.model.target_options == {"bins": 6, "cell": 4}
    with pytest.raises(ConfigError, match="data.modality: 'sonar' is not allowed.*documents, images"):
        ADAPTERS.get("sonar")


@pytest.mark.parametrize("recipe,module,extra", MISSING)
def test_a_missing_extra_is_one_line_naming_what_to_install(tmp_path, recipe, module, extra):
    code = (
        f"import sys; sys.modules[{module!r}] = None; from mimsdk.cli import main; "
        f"sys.exit(main(['pretrain', {recipe!r}, '--out', {str(tmp_path / 'run')!r}, 'train.max_steps=1']))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert lines == [lines[-1]] and "Traceback" not in result.stderr, result.stderr
    assert module in lines[-1] and f'pip install "mimsdk[{extra}]"' in lines[-1], lines[-1]
