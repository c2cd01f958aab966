"""The timm export for TorchGeo and TerraTorch users: 13 Sentinel-2 bands at a non-square size, with or without
a class token, the band facts in config.json, band lists checked (never padded), and a classifier fine-tuned on
real EuroSAT-MS tiles."""

import json
import shutil

import numpy as np
import pytest
import rasterio
import torch
from conftest import SHARED
from safetensors.torch import load_file, save_file
from timm.models import PretrainedCfg

from mimsdk import create_model
from mimsdk.adapters.multispectral import BANDS, EUROSAT_ORDER
from mimsdk.config import load_recipe
from mimsdk.hub import ExportError
from mimsdk.hub.timm_export import ExportMismatchError, export_timm, load_timm

EUROSAT = SHARED / "multispectral" / "eurosat_ms"
PNEUMONIA = SHARED / "medical2d" / "pneumoniamnist_balanced_trainval.npz"  # 28×28 chest X-rays, uint8
SIZE = [48, 32]  # non-square: a 64×64 EuroSAT tile's centre rows 8..56, columns 16..48
MODEL = dict(size="tiny", depth=2, input_size=SIZE, in_chans=13, decoder_dim=64, decoder_depth=1, decoder_heads=2)
# A tiny channel-group model (SatMAE's band groups), as in test_group_tokenizer.py
GROUPED = dict(size="tiny", embed_dim=48, depth=1, num_heads=3, input_size=[16, 16], patch_size=4, in_chans=10,
               decoder_dim=32, decoder_depth=1, decoder_heads=2, tokenizer="channel_groups",
               tokenizer_options={"groups": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]], "spacing": 10.0})  # fmt: skip
S2_TEN = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]  # the sentinel2 recipes' bands


@pytest.fixture(scope="module")
def tiles():
    """Two tiles of each EuroSAT-MS class, cropped to SIZE: raw reflectances 20×13×48×32, labels 20 (class folders)."""
    classes = sorted(p.name for p in EUROSAT.iterdir() if p.is_dir())
    arrays, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((EUROSAT / name).glob("*.tif"))[:2]:
            with rasterio.open(path) as f:
                arrays.append(f.read()[:, 8:56, 16:48].astype(np.float32))
            labels.append(label)
    return torch.from_numpy(np.stack(arrays)), torch.tensor(labels)


def metadata(x: torch.Tensor) -> dict:
    """What the multispectral adapter stores for EuroSAT's 13 bands, statistics from ``x`` B×13×H×W."""
    return {
        "bands": EUROSAT_ORDER,
        "channel_names": EUROSAT_ORDER,
        "wavelengths": [BANDS[b].wavelength for b in EUROSAT_ORDER],
        "gsd": [BANDS[b].gsd for b in EUROSAT_ORDER],
        "spacing": 10.0,
        "mean": x.mean(dim=(0, 2, 3)).tolist(),
        "std": x.std(dim=(0, 2, 3)).tolist(),
    }


def normalise(x: torch.Tensor, stats: dict) -> torch.Tensor:
    """Tiles B×C×H×W normalised per band by ``stats`` mean and std (a pretrained_cfg, a model's metadata)."""
    return (x - torch.tensor(stats["mean"])[:, None, None]) / torch.tensor(stats["std"])[:, None, None]


def pretrained(x: torch.Tensor, **kwargs):
    """A tiny 13-band model after 3 MAE steps on the tiles (away from its symmetric initial values), eval mode."""
    torch.manual_seed(0)
    model = create_model(**MODEL, metadata=metadata(x), **kwargs)
    x = normalise(x, model.config.metadata)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        model(x).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def exported(tiles, tmp_path_factory):
    """The class-token model and its timm export folder."""
    model = pretrained(tiles[0], patch_size=8)
    return model, export_timm(model, tmp_path_factory.mktemp("timm") / "s2")


@pytest.mark.parametrize(
    "kwargs",
    [dict(patch_size=8), dict(patch_size=[8, 4], class_token=False, pos_embed="sincos_index")],
    ids=["class_token", "no_class_token-patch8x4-sincos_index"],
)
def test_13_band_non_square_export_loads_strictly_and_gives_the_same_tokens(tiles, tmp_path, kwargs):
    import timm

    model = pretrained(tiles[0], **kwargs)
    out = export_timm(model, tmp_path / "timm")
    config = json.loads((out / "config.json").read_text())
    args, prefix = config["model_args"], int(kwargs.get("class_token", True))
    assert (args["img_size"], args["in_chans"], args["class_token"]) == (SIZE, 13, bool(prefix))
    weights = load_file(out / "model.safetensors")
    assert ("cls_token" in weights) == bool(prefix) and weights["pos_embed"].shape[1] == prefix + model.num_tokens

    overlay = dict(config["pretrained_cfg"], file=str(out / "model.safetensors"))
    by_args = timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=overlay, **args)
    x, layers = normalise(tiles[0][:4], config["pretrained_cfg"]), [0, -1]
    for vit in (by_args.eval(), timm.create_model(f"local-dir:{out}", pretrained=True).eval()):
        with torch.no_grad():
            assert torch.allclose(vit.forward_features(x), model.encode(x), atol=1e-5)  # B×(prefix+L)×D
            assert torch.allclose(vit(x), model.features(x), atol=1e-5)  # mean of the patch tokens
            grids = vit.forward_intermediates(x, indices=layers, norm=False, output_fmt="NCHW", intermediates_only=True)
        ours = model.features(x, layers=layers)  # B×D×G1×G2 before the final norm
        assert [g.shape for g in grids] == [(4, 192, *model.tokenizer.grid_size)] * 2
        assert all(torch.allclose(g, o, atol=1e-5) for g, o in zip(grids, ours))


def test_a_1_channel_x_ray_model_without_class_token_exports_at_a_non_square_size(tmp_path):
    import timm

    x = torch.from_numpy(np.load(PNEUMONIA)["val_images"][:4, :, 4:24] / 255.0).float()[:, None]  # 4×1×28×20
    torch.manual_seed(0)
    model = create_model(size="tiny", depth=1, input_size=[28, 20], patch_size=[7, 4], in_chans=1, decoder_dim=32,
                         decoder_heads=2, class_token=False, metadata={"channel_names": ["X-ray"]}).eval()  # fmt: skip
    out = export_timm(model, tmp_path / "xray")
    vit = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        assert vit.forward_features(x).shape == (4, 20, 192)  # 4×5 patches of 7×4, no class token
        assert torch.allclose(vit.forward_features(x), model.encode(x), atol=1e-5)
    assert load_timm(out, bands=["X-ray"]).patch_embed.proj.weight.shape == (192, 1, 7, 4)


def test_band_facts_are_in_config_json_where_torchgeo_and_terratorch_read_them(exported, tiles):
    model, out = exported
    config = json.loads((out / "config.json").read_text())
    meta, cfg = config["meta"], config["pretrained_cfg"]
    assert meta["bands"] == EUROSAT_ORDER and meta["bands"][-1] == "B8A"  # EuroSAT's file order, as trained
    assert meta["wavelengths"][:3] == [0.443, 0.49, 0.56] and len(meta["wavelengths"]) == 13  # µm, as DOFA's
    assert meta["gsd"][:3] == [60, 10, 10] and meta["resolution"] == 10.0
    assert (meta["in_chans"], meta["img_size"], meta["model"], meta["ssl_method"]) == (
        13,
        SIZE,
        config["architecture"],
        "mae",
    )
    assert cfg["mean"] == model.config.metadata["mean"] and cfg["std"] == model.config.metadata["std"]
    assert cfg["input_size"] == [13, *SIZE] and cfg["first_conv"] is None
    PretrainedCfg(**cfg)  # only timm's fields: timm (and TorchGeo's Weights) build this dataclass from it

    card = (out / "README.md").read_text()
    assert "# A mimsdk images encoder for timm (TorchGeo, TerraTorch)" in card
    assert "| channels, in order | B01, B02, B03, B04, B05, B06, B07, B08, B09, B10, B11, B12, B8A |" in card
    assert "| wavelengths (nm) | 443, 490, 560," in card and f'load_timm("{out}", bands=' in card


def test_other_band_lists_and_channel_counts_are_refused_never_padded(exported, tmp_path):
    import timm

    _, out = exported
    swapped = ["B01", "B04", "B03", "B02", *EUROSAT_ORDER[4:]]
    cases = {
        "another order": swapped,
        "it lacks B01, B09, B10, which are never filled in": S2_TEN,
        "extra bands B13": [*EUROSAT_ORDER, "B13"],
    }
    for problem, bands in cases.items():
        with pytest.raises(ExportMismatchError) as err:
            load_timm(out, bands=bands, num_classes=10)
        message = str(err.value)
        assert f"data bands {', '.join(bands)} differ from the export's {', '.join(EUROSAT_ORDER)}" in message
        assert problem in message and "\n" not in message

    # a channel count that is not the export's: refused by load_timm, and by timm's own loader (no first_conv)
    with pytest.raises(ExportMismatchError, match=r"in_chans=10 differs from the export's 13 \(model_args.in_chans\)"):
        load_timm(out, in_chans=10)
    with pytest.raises(RuntimeError, match="size mismatch for patch_embed.proj.weight"):
        timm.create_model(f"local-dir:{out}", pretrained=True, in_chans=10)
    vit = load_timm(out, bands=EUROSAT_ORDER)
    with pytest.raises(RuntimeError):
        vit(torch.zeros(1, 10, *SIZE))  # nor does a 13-band model take 10 bands

    plain = create_model(size="tiny", depth=1, input_size=[16, 16], patch_size=8, decoder_dim=32, decoder_heads=2)
    with pytest.raises(ExportMismatchError, match=r"config.json names no bands \(meta.bands\)"):
        load_timm(export_timm(plain, tmp_path / "rgb"), bands=["R", "G", "B"])


def test_a_channel_group_model_is_refused_pointing_to_the_sentinel2_vit_recipe(tmp_path):
    grouped = create_model(**GROUPED)
    pattern = r"^timm export: only patch-tokenizer 2D models export to a plain timm ViT \(.*the sentinel2-vit recipe"
    with pytest.raises(ExportError, match=pattern + r".*\); this model uses the channel_groups tokenizer$"):
        export_timm(grouped, tmp_path / "grouped")
    assert not (tmp_path / "grouped").exists()

    # the recipe it points to: a patch tokenizer over the sentinel2 recipes' 10 bands, masked at random
    recipe = load_recipe("sentinel2-vit")
    assert (recipe.model.tokenizer, recipe.model.masker, recipe.model.in_chans) == ("patch", "random", 10)
    assert recipe.data.options["bands"] == S2_TEN and recipe.data.modality == "multispectral"
    small = dict(size="tiny", depth=1, input_size=[32, 32], decoder_dim=32, decoder_depth=1, decoder_heads=2)
    model = create_model(recipe.model, **small, metadata={"bands": S2_TEN})
    assert load_timm(export_timm(model, tmp_path / "vit"), bands=S2_TEN).patch_embed.proj.in_channels == 10


def test_fine_tuning_a_13_band_classifier_on_eurosat_tiles_lowers_its_loss(exported, tiles, tmp_path):
    _, out = exported
    config = json.loads((out / "config.json").read_text())
    assert not [k for k in load_file(out / "model.safetensors") if k.startswith("head")]  # the file has no head
    vit = load_timm(out, bands=config["meta"]["bands"], num_classes=10)
    assert vit.head.weight.shape == (10, 192) and vit.num_classes == 10  # a fresh head on the loaded encoder

    # 20 real tiles, 2 per class, normalised as the export says; labels from their class folders
    x, y = normalise(tiles[0], config["pretrained_cfg"]), tiles[1]
    torch.manual_seed(0)
    opt, losses = torch.optim.AdamW(vit.parameters(), lr=1e-3), []
    vit.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(vit(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(torch.nn.functional.cross_entropy(vit.eval()(x), y).item())
    assert losses[-1] < losses[0], losses

    # the encoder still loads with strict keys under a head (timm's own num_classes=10 would load it non-strictly)
    tampered = shutil.copytree(out, tmp_path / "tampered")
    save_file({**load_file(out / "model.safetensors"), "extra.weight": torch.zeros(1)}, tampered / "model.safetensors")
    with pytest.raises(RuntimeError, match="extra.weight"):
        load_timm(tampered, num_classes=10)
