"""MONAI export: the encoder as MONAI's ViT and as UNETR's backbone, built by MONAI from the written arguments,
and the transforms the card names checked against the medical adapter on a real NIfTI volume."""

import json
import logging

import pytest
import torch
from conftest import SHARED
from safetensors.torch import load_file, save_file

from mimsdk import create_model, load_recipe, save_model
from mimsdk.adapter import get_adapter
from mimsdk.adapters.medical.stored import UNIT_STEPS
from mimsdk.cli import main
from mimsdk.hub import ExportError, save_pretrained
from mimsdk.hub.monai_export import export_monai, monai_vit, unetr
from mimsdk.hub.monai_transforms import monai_transforms

# MONAI's own warnings: its sin-cos builder calls meshgrid bare, LoadImage registers a GPU DICOM reader
pytestmark = [pytest.mark.filterwarnings("ignore:torch.meshgrid"), pytest.mark.filterwarnings("ignore:NvImgCodec")]

NIFTI = SHARED / "medical3d" / "nifti"
VOLUME = NIFTI / "sub-01_ses-01_dwi_desc-b0_dwi.nii.gz"  # 81×106×76 at 2 mm, the smallest of the four
IMAGE = dict(size="tiny", depth=2, input_size=[32, 32], patch_size=4, in_chans=3, class_token=False)
CT_TINY = dict(size="tiny", depth=2, input_size=[32, 32, 32], patch_size=8, in_chans=1, class_token=False)
# The shape MONAI's UNETR fixes (patch 16, 12 blocks), narrow so it runs in a second: 8 tokens of width 48.
UNETR_SHAPED = dict(size="tiny", embed_dim=48, depth=12, num_heads=3, input_size=[32, 32, 32], patch_size=16,
                    in_chans=1, class_token=False)  # fmt: skip
DECODER = dict(decoder_dim=32, decoder_depth=1, decoder_heads=2)


@pytest.fixture(autouse=True)
def shared_data():
    if not VOLUME.is_file():
        pytest.fail(f"shared sample data missing at {VOLUME}: tests expect ../shared beside the checkout")


def model_of(**kwargs):
    """A model whose every weight is moved off its initial value (LayerNorms not 1 and 0, biases not 0)."""
    torch.manual_seed(0)
    model = create_model(**kwargs, **DECODER)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model.eval()


def as_grid(hidden, like):
    """MONAI's block output B×L×D as the token grid B×D×G1..Gn of ``model.features(x, layers=...)``."""
    return hidden.transpose(1, 2).reshape(like.shape)


def max_diff(a, b):
    return (a - b).abs().max().item()


def close(block_output, grid):
    """A block output equals the grid to 1e-5 of its size: the residual stream grows with depth (to ~8 here)."""
    return max_diff(as_grid(block_output, grid), grid) < 1e-5 * max(1.0, grid.abs().max().item())


@pytest.mark.parametrize("proj_type", ["conv", "perceptron"])
@pytest.mark.parametrize("kwargs", [IMAGE, CT_TINY], ids=["2d", "3d-radiology-ct-tiny"])
def test_vit_loads_strictly_and_gives_encode_and_the_block_outputs(kwargs, proj_type, tmp_path):
    from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
    from monai.networks.nets import ViT

    model = model_of(**kwargs)
    out = export_monai(model, tmp_path / "monai", proj_type=proj_type)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.safetensors", "monai_args.json"]
    args = json.loads((out / "monai_args.json").read_text())
    assert args["vit"]["spatial_dims"] == len(kwargs["input_size"]) and args["vit"]["proj_type"] == proj_type
    x = torch.rand(2, kwargs["in_chans"], *kwargs["input_size"])
    ours, layers = model.encode(x), model.features(x, layers=[0, -1])

    vit = monai_vit(out)
    with torch.no_grad():
        tokens, hidden = vit(x)
    assert max_diff(tokens, ours) < 1e-5  # B×L×D: no class token on either side
    for h, grid in zip((hidden[0], hidden[-1]), layers):  # before the final norm, as features(layers=...)
        assert close(h, grid)
    # MONAI keeps the loaded table (it computes its own only when built); its 3D sin-cos table is not ours
    table = vit.patch_embedding.position_embeddings
    assert torch.equal(table, model.pos())
    grid = [s // p for s, p in zip(kwargs["input_size"], model.config.patch_size)]
    theirs = max_diff(build_sincos_position_embedding(grid, table.shape[2], len(grid)), table)
    assert theirs > 0.1 if len(grid) == 3 else theirs < 1e-6  # in 2D both are MAE's

    # built by hand from the written arguments: strict keys too, and only MONAI's LayerNorm eps (1e-5) differs
    hand = ViT(**args["vit"]).eval()
    hand.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    with torch.no_grad():
        by_hand = max_diff(hand(x)[0], ours)
    assert max_diff(tokens, ours) < by_hand < 1e-3

    weights = load_file(out / "model.safetensors")  # an unknown key is refused: the load is strict
    save_file({**weights, "extra.weight": torch.zeros(1)}, out / "model.safetensors")
    with pytest.raises(RuntimeError, match="extra.weight"):
        monai_vit(out)


def test_vit_from_a_model_a_model_directory_or_the_command_line(tmp_path, capsys):
    model = model_of(**CT_TINY)
    saved = save_pretrained(model, tmp_path / "shared", encoder_only=True)
    assert main(["export", "monai", str(saved), str(tmp_path / "cli")]) == 0
    assert "monai_vit" in capsys.readouterr().out
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        for source in (model, saved, tmp_path / "cli"):  # in memory, exported in memory, the written folder
            assert max_diff(monai_vit(source)(x)[0], model.encode(x)) < 1e-5


@pytest.mark.parametrize("kind", ["learned", "sincos_index"])
def test_every_position_kind_is_carried_as_monai_s_learnable_table(kind):
    model = model_of(**CT_TINY, pos_embed=kind)
    vit = monai_vit(model)  # exported in memory
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(vit.patch_embedding.position_embeddings, model.pos())
        assert max_diff(vit(x)[0], model.encode(x)) < 1e-5


def test_unetr_holds_the_encoder_and_fine_tunes_on_a_real_volume(tmp_path):
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNETR
    from monai.transforms import Compose, LoadImage, Resize, ScaleIntensityRangePercentiles

    model = model_of(**UNETR_SHAPED)
    out = export_monai(model, tmp_path / "monai")
    args = json.loads((out / "monai_args.json").read_text())
    assert args["unetr"]["hidden_size"] == 48 and args["unetr"]["img_size"] == [32, 32, 32]
    hand = UNETR(out_channels=2, **args["unetr"])  # the card's MONAI-only recipe loads strictly too
    hand.vit.load_state_dict(load_file(out / "model.safetensors"), strict=True)

    x = torch.rand(1, 1, 32, 32, 32)
    layers = model.features(x, layers=[3, 6, 9])  # the blocks UNETR's skips read
    for source in (out, save_model(model, tmp_path / "model")):  # the folder, and a model directory
        net = unetr(source, out_channels=2, feature_size=8).eval()
        with torch.no_grad():
            tokens, hidden = net.vit(x)
            assert max_diff(tokens, model.encode(x)) < 1e-5
            for i, grid in zip((3, 6, 9), layers):
                assert close(hidden[i], grid)
            assert net(x).shape == (1, 2, 32, 32, 32)

    # fine-tuning: a real brain volume at 32³, a label map made up by thresholding it, three Adam steps
    load = LoadImage(image_only=True, ensure_channel_first=True)
    prepare = Compose([load, ScaleIntensityRangePercentiles(0.5, 99.5, 0.0, 1.0, clip=True), Resize((32, 32, 32))])
    image = torch.as_tensor(prepare(str(VOLUME)))[None].float()  # 1×1×32×32×32
    label = (image > image.mean()).long()
    torch.manual_seed(0)
    net = unetr(out, out_channels=2, feature_size=8).train()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = loss_fn(net(image), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(loss_fn(net(image), label).item())
    assert all(a > b for a, b in zip(losses, losses[1:])), losses  # falls at every step


def test_a_class_token_is_left_out_with_a_warning(tmp_path, caplog):
    model = model_of(**{**IMAGE, "class_token": True})
    with caplog.at_level(logging.WARNING, logger="mimsdk.hub.monai_export"):
        out = export_monai(model, tmp_path / "monai")
    warned = [r.getMessage() for r in caplog.records if "model.class_token" in r.getMessage()]
    assert len(warned) == 1 and "differ from model.encode" in warned[0] and "\n" not in warned[0]
    assert "left out, so MONAI's features differ" in (out / "README.md").read_text()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():  # the patch tokens attended to the class token in pre-training: not the same features
        assert max_diff(monai_vit(out)(x)[0], model.encode(x)[:, 1:]) > 1e-3


@pytest.mark.parametrize("recipe", ["radiology-ct-tiny", "radiology-mri-tiny"])
def test_card_names_the_transforms_that_prepare_a_volume_as_pre_training_did(recipe, tmp_path):
    overrides = {"model": {"depth": 1, "decoder_depth": 1}, "data": {"options": {"cache": "none"}}}
    if recipe == "radiology-mri-tiny":
        overrides["data"] |= {"mean": [0.2], "std": [0.3]}
    cfg = load_recipe(recipe, overrides)
    adapter = get_adapter("medical")
    cfg.model.metadata = adapter.metadata(cfg.data, cfg.model)  # as pretrain stores them
    model = create_model(cfg.model)
    out = export_monai(model, tmp_path / "monai")

    card = (out / "README.md").read_text()
    assert "Orientationd(keys='image', axcodes='RAS', labels=[['L', 'R'], ['P', 'A'], ['I', 'S']])" in card
    assert "Spacingd(keys='image', pixdim=[2.0, 2.0, 2.0], mode='bilinear')" in card
    assert "CropForegroundd(" in card and "CenterSpatialCropd(keys='image', roi_size=[32, 32, 32])" in card
    if recipe == "radiology-ct-tiny":
        assert "ScaleIntensityRanged(keys='image', a_min=-1000.0, a_max=1000.0, b_min=0.0, b_max=1.0" in card
        assert "Percentiles" not in card and "NormalizeIntensityd" not in card  # mean 0, std 1: nothing to undo
    else:
        assert "ScaleIntensityRangePercentilesd(keys='image', lower=0.5, upper=99.5" in card
        assert "NormalizeIntensityd(keys='image', subtrahend=[0.2], divisor=[0.3], channel_wise=True)" in card
        assert "ScaleIntensityRanged" not in card

    # what those transforms make of a real volume is what the medical adapter gave the model, which stores a
    # scaled volume as uint16: up to half a step of 1/65535 apart, divided by data.std
    stored = 0.5 / UNIT_STEPS / (cfg.data.std or [1.0])[0] + 1e-6
    expected, _ = adapter.dataset(VOLUME, cfg.data, model.config, train=False)[0]
    got = torch.as_tensor(monai_transforms(out)({"image": str(VOLUME)})["image"])
    assert got.shape == expected.shape == (1, 32, 32, 32) and expected.std() > 0.1
    assert max_diff(got, expected) < stored

    # the card's snippet runs as written, on that volume: the helpers' ViT, then MONAI's alone
    code = card.split("```python\n")[1].split("\n```")[0].replace("scan.nii.gz", str(VOLUME))
    scope = {}
    exec(code, scope)
    x = scope["x"]
    assert max_diff(x[0], expected) < stored
    assert max_diff(scope["tokens"], model.encode(x)) < 1e-5
    assert max_diff(torch.as_tensor(scope["prepare"]({"image": str(VOLUME)})["image"]), expected) < stored
    with torch.no_grad():
        assert max_diff(scope["vit"](x)[0], model.encode(x)) < 1e-4  # eps 1e-5, the only difference


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size="tiny", embed_dim=48, depth=1, num_heads=3, input_size=[16, 16], patch_size=4, in_chans=10,
             tokenizer="channel_groups", tokenizer_options={"groups": [[0, 1, 2, 6], [3, 4, 5, 7], [8, 9]]}),
        dict(size="tiny", depth=1, input_size=[256, 3], tokenizer="point_groups", target="chamfer", mask_ratio=0.6,
             tokenizer_options={"groups": 16, "group_size": 16, "pointnet_width": 32}),
    ],
    ids=["channel_groups", "point_groups"],
)  # fmt: skip
def test_other_tokenizers_are_refused_in_one_line_naming_the_tokenizer(kwargs, tmp_path, capsys):
    model = create_model(**kwargs, **DECODER)
    name = kwargs["tokenizer"]
    with pytest.raises(ExportError, match=rf"^MONAI export: only patch-tokenizer .*uses the {name} tokenizer$"):
        export_monai(model, tmp_path / "monai")
    with pytest.raises(ExportError, match=rf"uses the {name} tokenizer$"):
        unetr(model, out_channels=2)
    assert not list(tmp_path.iterdir())  # refused before anything was written

    saved = save_model(model, tmp_path / "model")  # the command line: one `mimsdk: error:` line
    assert main(["export", "monai", str(saved), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mimsdk: error: MONAI export") and err.count("\n") == 1 and f"the {name} tokenizer" in err
    assert not (tmp_path / "out").exists()


def test_unetr_refuses_an_encoder_it_cannot_hold_and_arguments_the_encoder_fixes(tmp_path):
    out = export_monai(model_of(**CT_TINY), tmp_path / "tiny")
    assert json.loads((out / "monai_args.json").read_text())["unetr"] is None
    assert "MONAI's UNETR fixes patch_size 16 and 12 blocks" in (out / "README.md").read_text()
    with pytest.raises(ExportError, match=r"^MONAI's UNETR fixes patch_size 16 and 12 blocks; this encoder has "
                                          r"patch_size \[8, 8, 8\] and 2 blocks"):  # fmt: skip
        unetr(out, out_channels=2)
    shaped = export_monai(model_of(**UNETR_SHAPED), tmp_path / "shaped")
    with pytest.raises(ValueError, match=r"^unetr: hidden_size, img_size is fixed by the pre-trained encoder"):
        unetr(shaped, out_channels=2, hidden_size=96, img_size=64)
