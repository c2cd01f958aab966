"""Continued pre-training from public MAE weights: transformers' ViTMAE and VideoMAE, timm's ViT (issue 17 item 5).

Each checkpoint is a real transformers or timm model built from its config and saved the way its library
saves, in a temporary folder (or served by the local Hub of tests/hub_server.py). The runs read real data.
"""

import copy
import json
import logging

import pytest
import timm
import torch
from conftest import CIFAR, SHARED
from hub_server import FakeHub, point_client_at
from huggingface_hub.utils import _http
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv, save_for_hf
from transformers import VideoMAEConfig, VideoMAEForPreTraining, ViTMAEConfig, ViTMAEForPreTraining

from mimsdk import ConfigError, create_model, load_recipe
from mimsdk.continued import adopt_public, load_into
from mimsdk.hub import load_model
from mimsdk.hub.card import model_card
from mimsdk.hub.public_weights import read_public
from mimsdk.pretraining import pretrain
from mimsdk.trainer import Trainer

PNEUMONIA = SHARED / "medical2d" / "pneumoniamnist_balanced_trainval.npz"
VIDEO = SHARED / "video"
# The tiny ViTMAE's architecture as a recipe's model fields: 32 wide, 2 blocks, 2 heads; decoder 16 × 1, 2 heads.
VITMAE_ARCH = dict(size="tiny", embed_dim=32, depth=2, num_heads=2, patch_size=4, decoder_dim=16, decoder_depth=1,
                   decoder_heads=2)  # fmt: skip
TRAIN = {"max_steps": 1, "log_every": 1, "seed": 0, "lr": 1e-3}


def images_recipe(**model) -> dict:
    """32² RGB images of CIFAR-10, the tiny ViTMAE's architecture unless ``model`` says otherwise."""
    fields = {**VITMAE_ARCH, "input_size": [32, 32], "target": "norm_pix", **model}
    data = {"modality": "images", "path": str(CIFAR / "train"), "batch_size": 8, "num_workers": 0}
    return {"name": "public", "model": fields, "data": data, "train": TRAIN}


def perturbed(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> torch.nn.Module:
    """Weights moved off their initial values (norms at 1, biases at 0 would hide a mapping error)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not any(s in name for s in skip):
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.fixture(scope="module")
def vitmae(tmp_path_factory):
    """A tiny ViTMAEForPreTraining (norm_pix_loss) saved by transformers: (its directory, the model)."""
    config = ViTMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                          image_size=32, patch_size=4, decoder_hidden_size=16, decoder_num_hidden_layers=1,
                          decoder_num_attention_heads=2, decoder_intermediate_size=64, norm_pix_loss=True)  # fmt: skip
    hf = ViTMAEForPreTraining(config)
    # Published checkpoints hold ViTMAE's fixed sin-cos tables; a model built from a config (transformers 5)
    # leaves them for initialize_weights, which a fresh model skips: run it, as the original weights did.
    embeddings = hf.vit.embeddings
    embeddings.patch_embeddings.projection._is_hf_initialized = False
    embeddings.initialize_weights()
    hf.decoder.initialize_weights(embeddings.patch_embeddings.num_patches)
    perturbed(hf, skip=("position_embeddings", "pos_embed"))
    folder = tmp_path_factory.mktemp("public") / "vit-mae-tiny"
    hf.save_pretrained(folder)
    return folder, hf


def test_vitmae_first_step_loss_is_transformers_own(vitmae, tmp_path):
    folder, hf = vitmae
    trainer = Trainer(load_recipe(images_recipe()), tmp_path / "run", init=folder)
    cfg = trainer.recipe.model
    assert (cfg.class_token, cfg.pos_embed, cfg.decoder_embed_bias, cfg.target) == (True, "sincos", True, "norm_pix")
    # The trainer's first batch of CIFAR images and its masking noise, fed to transformers' model: ViTMAE's
    # ``noise`` keeps the lowest-noise patches, as ours does, so both mask the same patches.
    x, _ = next(trainer._batches(0))
    noise = trainer._noise(0, x.shape[0])["noise"]
    with torch.no_grad():
        theirs = hf(pixel_values=x, noise=noise).loss.item()
        assert abs(create_model(cfg)(x, noise=noise).loss.item() - theirs) > 1e-3  # random weights: another loss
    result = trainer.fit()
    assert abs(result.history[0]["loss"] - theirs) < 1e-5
    assert result.model.config.metadata["base_model"] == "vit-mae-tiny"


def test_pretrain_from_a_vitmae_directory_records_base_model(vitmae, tmp_path):
    folder, _ = vitmae
    result = pretrain(images_recipe(), out=tmp_path / "run", init=folder, max_steps=2)
    assert len(result.history) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    written = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["model"]
    assert written["metadata"]["base_model"] == "vit-mae-tiny"
    card = model_card(load_model(tmp_path / "run"))
    assert card.data.base_model == "vit-mae-tiny" and "continued from: `vit-mae-tiny`" in card.text


def test_a_one_channel_xray_recipe_starts_from_the_rgb_checkpoint(vitmae, tmp_path, caplog):
    """chest-xray-tiny (1 channel, no class token) at the checkpoint's widths, on PneumoniaMNIST X-rays."""
    caplog.set_level(logging.INFO, logger="mimsdk.continued")
    folder, hf = vitmae
    recipe = load_recipe("chest-xray-tiny", {"model": VITMAE_ARCH, "data": {"path": str(PNEUMONIA), "batch_size": 8},
                                              "train": TRAIN})  # fmt: skip
    trainer = Trainer(recipe, tmp_path / "run", init=folder)
    assert "model.in_chans: vit-mae-tiny takes 3 channels, the recipe 1: its patch embedding is summed" in caplog.text
    assert "class_token True (the recipe's: False)" in caplog.text  # the checkpoint's encoder has one
    conv = hf.vit.embeddings.patch_embeddings.projection.weight.detach()  # D×3×p×p
    expected = adapt_input_conv(1, conv, 3).permute(0, 2, 3, 1).reshape(32, -1)  # ours: D×(p·p·C), C last
    assert torch.equal(trainer.model.tokenizer.proj.weight, expected)
    head = hf.decoder.decoder_pred.weight.detach().reshape(16, 3, 16).mean(dim=1)  # p·p rows per channel, C last
    assert torch.allclose(trainer.model.decoder.pred.weight, head)
    assert torch.isfinite(torch.tensor(trainer.fit().history[0]["loss"]))


def test_a_13_band_recipe_spreads_the_rgb_patch_embedding(vitmae, caplog):
    caplog.set_level(logging.INFO, logger="mimsdk.continued")
    folder, hf = vitmae
    recipe = load_recipe({**images_recipe(in_chans=13), "data": {"modality": "multispectral"}})
    start = adopt_public(recipe, read_public(folder, None, recipe.model))
    model = create_model(recipe.model)
    load_into(model, start)
    assert (
        "takes 3 channels, the recipe 13: its patch embedding is repeated over the 13 and scaled by 3/13" in caplog.text
    )
    conv = hf.vit.embeddings.patch_embeddings.projection.weight.detach()
    expected = adapt_input_conv(13, conv, 3).permute(0, 2, 3, 1).reshape(32, -1)
    assert torch.equal(model.tokenizer.proj.weight, expected)
    assert torch.isfinite(model(torch.randn(2, 13, 32, 32)).loss)


def test_another_input_size_recomputes_sincos_positions(vitmae, caplog):
    caplog.set_level(logging.INFO, logger="mimsdk.continued")
    folder, hf = vitmae
    recipe = load_recipe(images_recipe(input_size=[48, 40]))
    start = adopt_public(recipe, read_public(folder, None, recipe.model))
    model = create_model(recipe.model)
    load_into(model, start)
    assert (
        "trained on [32, 32] (8×8 tokens), the recipe takes [48, 40] (12×10): its fixed sincos positions are"
        in caplog.text
    )
    fresh = create_model(recipe.model)
    assert model.pos.table.shape == (1, 120, 32) and torch.equal(model.pos.table, fresh.pos.table)
    assert torch.equal(model.encoder.norm.weight, hf.vit.layernorm.weight)  # the rest is the checkpoint's


def test_patch_size_and_width_mismatches_are_refused_naming_both(vitmae, tmp_path):
    folder, _ = vitmae
    with pytest.raises(ConfigError, match=r"model.patch_size: the recipe has \[8, 8\], vit-mae-tiny has \[4, 4\]"):
        Trainer(load_recipe(images_recipe(patch_size=8)), tmp_path / "a", init=folder)
    with pytest.raises(ConfigError, match=r"model.decoder_dim: the recipe has 64, vit-mae-tiny has 16"):
        pretrain(images_recipe(), out=tmp_path / "b", init=folder, decoder_dim=64)


# -- timm ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_vit(tmp_path_factory):
    """timm's ViT-Tiny at depth 2 on 32² images in patches of 4, saved by timm in its Hub layout."""
    torch.manual_seed(2)
    vit = perturbed(timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, patch_size=4))
    folder = tmp_path_factory.mktemp("timm") / "vit-tiny-timm"
    save_for_hf(vit, str(folder), model_args=dict(depth=2, img_size=32, patch_size=4), safe_serialization=True)
    return folder, vit


def timm_recipe(**model) -> dict:
    return images_recipe(**{"size": "tiny", "embed_dim": None, "depth": 2, "num_heads": None, **model})


def test_a_timm_vit_starts_a_run_with_its_encoder_and_a_fresh_decoder(timm_vit, tmp_path, caplog):
    folder, vit = timm_vit
    trainer = Trainer(load_recipe(timm_recipe()), tmp_path / "run", init=folder)
    assert "the decoder starts from a fresh initialisation" in caplog.text
    assert trainer.recipe.model.pos_embed == "learned"  # timm's table is not MAE's sin-cos: it keeps learning
    x = torch.stack([trainer.view_set[i][0] for i in range(4)])
    with torch.no_grad():
        assert torch.allclose(trainer.model.encode(x), vit.forward_features(x), atol=1e-5)  # class-token row too
    assert trainer.fit().history[0]["loss"] > 0


def test_another_input_size_resamples_learned_positions(timm_vit, caplog):
    caplog.set_level(logging.INFO, logger="mimsdk.continued")
    folder, vit = timm_vit
    recipe = load_recipe(timm_recipe(input_size=[48, 48]))
    start = adopt_public(recipe, read_public(folder, None, recipe.model))
    model = create_model(recipe.model)
    load_into(model, start)
    assert "its learned positions are resampled (timm's resample_abs_pos_embed)" in caplog.text
    expected = resample_abs_pos_embed(vit.pos_embed[:, 1:].detach(), [12, 12], [8, 8], num_prefix_tokens=0)
    assert torch.equal(model.pos.table.detach(), expected)


def test_a_timm_vit_with_mae_positions_keeps_them_fixed(tmp_path):
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, patch_size=4)
    sincos = create_model(timm_recipe(depth=1)["model"]).pos.table
    with torch.no_grad():
        vit.pos_embed.copy_(torch.cat([torch.zeros(1, 1, 192), sincos], dim=1))  # MAE's table, as timm's .mae weights
    save_for_hf(
        vit, str(tmp_path / "mae"), model_args=dict(depth=1, img_size=32, patch_size=4), safe_serialization=True
    )
    recipe = load_recipe(timm_recipe(depth=1))
    start = adopt_public(recipe, read_public(tmp_path / "mae", None, recipe.model))
    assert recipe.model.pos_embed == "sincos" and "pos.table" not in start.state


@pytest.mark.parametrize("export", ["timm", "transformers", "videomae"])
def test_mimsdk_exports_start_a_run_with_the_same_weights(export, tmp_path):
    """Reading public weights is each export run backwards: a model exported, then read, is the same model."""
    from mimsdk.hub.timm_export import export_timm
    from mimsdk.hub.transformers_export import export_transformers
    from mimsdk.hub.videomae_export import export_videomae

    video = export == "videomae"
    fields = {**VITMAE_ARCH, "input_size": [4, 32, 32] if video else [32, 32], "patch_size": [2, 8, 8] if video else 4}
    # what VideoMAE's layout needs, which the read checkpoint then sets on the recipe's model section by itself
    facts = {
        "class_token": False,
        "pos_embed": "sincos_index",
        "decoder_embed_bias": False,
        "target": "norm_pix_per_channel",
    }
    source = perturbed(create_model({**fields, **(facts if video else {})}))
    write = {"timm": export_timm, "transformers": export_transformers, "videomae": export_videomae}[export]
    write(source, tmp_path / "out")
    recipe = load_recipe({"model": fields, "data": {"modality": "video" if video else "images"}})
    start = adopt_public(recipe, read_public(tmp_path / "out", None, recipe.model))
    model = create_model(recipe.model)
    load_into(model, start)
    x = torch.randn(2, 3, *fields["input_size"])
    with torch.no_grad():
        # exact up to VideoMAE's missing key bias, which softmax ignores in exact arithmetic only
        assert torch.allclose(model.encode(x), source.encode(x), atol=1e-6)
        if export != "timm":  # the decoder came too
            noise = torch.rand(2, model.num_tokens)
            if video:  # read back as VideoMAE's, the target takes VideoMAE's eps (1e-6 on un-normalised pixels)
                assert model.target.eps == pytest.approx([1e-6 / s for s in (0.229, 0.224, 0.225)])
                source.target.eps = model.target.eps
            assert abs(model(x, noise=noise).loss.item() - source(x, noise=noise).loss.item()) < 1e-6


# -- the Hub -------------------------------------------------------------------------------------


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with FakeHub() as server:
        point_client_at(monkeypatch, server.url, tmp_path / "hf_home")
        yield server
    _http.close_session()


def test_a_hub_id_is_downloaded_and_recorded_as_base_model(vitmae, hub, tmp_path):
    folder, _ = vitmae
    files = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    hub.create("facebook/vit-mae-tiny", files | {"pytorch_model.bin": b"never read"})
    trainer = Trainer(load_recipe(images_recipe()), tmp_path / "run", init="facebook/vit-mae-tiny")
    assert trainer.recipe.model.metadata["base_model"] == "facebook/vit-mae-tiny"
    local = Trainer(load_recipe(images_recipe()), tmp_path / "local", init=folder)
    ours, theirs = trainer.model.state_dict(), local.model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert not any("pytorch_model.bin" in r.path for r in hub.requests)  # the pickle is never fetched


# -- VideoMAE ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videomae(tmp_path_factory):
    """A tiny VideoMAEForPreTraining (4 frames of 32², tubelets 2×8×8) saved by transformers."""
    config = VideoMAEConfig(num_frames=4, tubelet_size=2, image_size=32, patch_size=8, hidden_size=32,
                            num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, decoder_hidden_size=16,
                            decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
                            use_mean_pooling=False, norm_pix_loss=True, layer_norm_eps=1e-6)  # fmt: skip
    hf = perturbed(VideoMAEForPreTraining(config))
    folder = tmp_path_factory.mktemp("public") / "videomae-tiny"
    hf.save_pretrained(folder)
    return folder, hf


def test_videomae_first_step_loss_is_transformers_own(videomae, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mimsdk.continued")
    folder, hf = videomae
    model = {**VITMAE_ARCH, "input_size": [4, 32, 32], "patch_size": [2, 8, 8], "mask_ratio": 0.75,
             "target": "norm_pix", "class_token": True, "pos_embed": "sincos", "decoder_embed_bias": True}  # fmt: skip
    data = {"path": str(VIDEO), "batch_size": 2, "num_workers": 0, "options": {"short_side": 40, "clips_per_video": 1}}
    recipe = load_recipe("video-tiny", {"model": model, "data": data, "train": TRAIN})
    trainer = Trainer(recipe, tmp_path / "run", init=folder)
    cfg = trainer.recipe.model
    assert (cfg.class_token, cfg.pos_embed, cfg.decoder_embed_bias) == (False, "sincos_index", False)
    assert (
        cfg.target == "norm_pix_per_channel"
        and "target 'norm_pix_per_channel' (the recipe's: 'norm_pix')" in caplog.text
    )
    x, _ = next(trainer._batches(0))  # B×C×T×H×W clips
    noise = trainer._noise(0, x.shape[0])["noise"]
    with torch.no_grad():
        mask = trainer.model(x, noise=noise).mask.bool()  # the tube masker's mask, handed to VideoMAE as it is
        theirs = hf(pixel_values=x.transpose(1, 2), bool_masked_pos=mask).loss.item()
        # VideoMAE's target eps comes over (1e-6 on the std of un-normalised pixels: 1e-6 / ImageNet's std in
        # ours); its decoder norm's eps 1e-5 (ours 1e-6) is the one constant left, and it is what remains.
        assert trainer.model.target.eps == pytest.approx([1e-6 / s for s in (0.229, 0.224, 0.225)])
        same = copy.deepcopy(trainer.model).eval()
        same.decoder.norm.eps = 1e-5
        assert abs(same(x, noise=noise).loss.item() - theirs) < 1e-6
    assert abs(trainer.fit().history[0]["loss"] - theirs) < 1e-5  # as run
