"""A video MAE exported as transformers' VideoMAE: strict keys, the same loss for the same mask, the same features."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from mimsdk import create_model
from mimsdk.hub import ExportError, load_model, save_pretrained
from mimsdk.hub.videomae_export import export_videomae
from mimsdk.hub.videomae_layout import (
    checkpoint_name,
    module_name,
    state_dict_from_videomae,
    videomae_key_map,
    videomae_state_dict,
)
from mimsdk.variants.videomae_target import PerChannelPixelTarget

IMAGENET_STD = [0.229, 0.224, 0.225]  # what VideoMAE un-normalises with (3 channels)
VIDEO = dict(size="tiny", embed_dim=48, depth=2, num_heads=2, input_size=[4, 32, 32], patch_size=[2, 8, 8],
             decoder_dim=32, decoder_depth=1, decoder_heads=2, masker="tube", mask_ratio=0.75, modality="video",
             class_token=False, pos_embed="sincos_index", decoder_embed_bias=False, target="norm_pix_per_channel",
             metadata={"mean": [0.485, 0.456, 0.406], "std": IMAGENET_STD, "frames": 4, "stride": 4})  # fmt: skip


def trained(**overrides) -> torch.nn.Module:
    """A tiny video MAE after three steps, away from its symmetric initial values."""
    torch.manual_seed(0)
    model = create_model(**{**VIDEO, **overrides})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        model(torch.randn(4, model.config.in_chans, *model.config.input_size)).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = trained()
    return model, export_videomae(model, tmp_path_factory.mktemp("videomae") / "out")


def clip_and_mask(model, batch: int = 3):
    """A clip B×C×T×H×W and our mask B×L (1 = masked) from seeded noise: the lowest noise is kept."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, model.config.in_chans, *model.config.input_size, generator=gen)
    return x, model.draw_noise(batch, gen)["noise"]


def test_config_and_keys_are_videomaes(exported):
    from transformers import VideoMAEConfig, VideoMAEForPreTraining

    _, out = exported
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["VideoMAEForPreTraining"]
    expected = dict(num_frames=4, tubelet_size=2, image_size=32, patch_size=8, num_channels=3, hidden_size=48,
                    decoder_hidden_size=32, use_mean_pooling=False, norm_pix_loss=True)  # fmt: skip
    assert {key: config[key] for key in expected} == expected
    assert config.get("qv_bias", config.get("qkv_bias"))  # transformers 5's name, or 4's
    # the file holds exactly VideoMAE's keys (q_bias and v_bias as its checkpoints name them, which
    # transformers 5 renames as it loads), and transformers' loader reports nothing missing or unexpected
    fresh = VideoMAEForPreTraining(VideoMAEConfig.from_pretrained(out))
    assert set(load_file(out / "model.safetensors")) == {checkpoint_name(key) for key in fresh.state_dict()}
    _, info = VideoMAEForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not any(info.values()), info


def test_loss_equals_videomaes_for_the_same_mask(exported):
    from transformers import VideoMAEForPreTraining

    model, out = exported
    hf = VideoMAEForPreTraining.from_pretrained(out).eval()
    x, noise = clip_and_mask(model)
    with torch.no_grad():
        ours = model(x, noise=noise)
        theirs = hf(pixel_values=x.transpose(1, 2), bool_masked_pos=ours.mask.bool())  # B×T×C×H×W, True = masked
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5  # measured 8e-6: the two eps below

    # With VideoMAE's two constants the rest is exact: its decoder norm's eps 1e-5 (ours 1e-6), and the
    # target's eps added to the std of un-normalised pixels, i.e. 1e-6 / ImageNet's std in our units.
    same = copy.deepcopy(model)
    same.decoder.norm.eps = 1e-5
    target = PerChannelPixelTarget(3, eps=[1e-6 / s for s in IMAGENET_STD])
    with torch.no_grad():
        pred = same(x, noise=noise).pred
        loss = target.loss(pred, target(model.tokenize(x).patches), ours.mask)
    assert abs(loss.item() - theirs.loss.item()) < 1e-6
    masked_pred = pred[ours.mask.bool()].reshape(theirs.logits.shape)  # masked tokens in index order, as VideoMAE's
    assert torch.allclose(masked_pred, theirs.logits, atol=1e-5)


def test_encoder_gives_encode(exported):
    from transformers import VideoMAEModel

    model, out = exported
    encoder, info = VideoMAEModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    assert all(key.startswith(("decoder.", "encoder_to_decoder.", "mask_token")) for key in info["unexpected_keys"])
    x, _ = clip_and_mask(model)
    with torch.no_grad():
        assert torch.allclose(encoder.eval()(x.transpose(1, 2)).last_hidden_state, model.encode(x), atol=1e-5)


def test_processor_card_and_fine_tuning_head(exported):
    import numpy as np
    from transformers import VideoMAEForVideoClassification, VideoMAEImageProcessor

    model, out = exported
    processor = VideoMAEImageProcessor.from_pretrained(out)
    assert list(processor.image_mean) == model.config.metadata["mean"] and list(processor.image_std) == IMAGENET_STD
    frames = list(np.random.default_rng(0).integers(0, 256, (4, 40, 48, 3), dtype=np.uint8))
    pixel_values = processor(frames, return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 4, 3, 32, 32)  # short side 32, centre crop 32×32, frames before channels

    card = (out / "README.md").read_text()
    assert "transformers (VideoMAE)" in card and "| frames per clip | 4 |" in card and "use_mean_pooling=True" in card

    # the card's fine-tuning head: mean pooling with a new fc_norm, every encoder weight loaded
    head, info = VideoMAEForVideoClassification.from_pretrained(out, num_labels=3, use_mean_pooling=True,
                                                                output_loading_info=True)  # fmt: skip
    assert set(info["missing_keys"]) == {"fc_norm.weight", "fc_norm.bias", "classifier.weight", "classifier.bias"}
    loss = head(pixel_values, labels=torch.tensor([2])).loss
    loss.backward()
    assert torch.isfinite(loss) and head.videomae.embeddings.patch_embeddings.projection.weight.grad is not None


def test_non_square_single_channel_clip_matches_with_videomaes_decoder_eps(tmp_path):
    """One channel: VideoMAE normalises the target without un-normalising, so only its decoder eps differs."""
    from transformers import VideoMAEForPreTraining

    model = trained(in_chans=1, input_size=[4, 16, 24], metadata={})
    out = export_videomae(model, tmp_path / "gray")
    hf = VideoMAEForPreTraining.from_pretrained(out).eval()
    assert hf.config.image_size == [16, 24] and hf.config.num_channels == 1
    x, noise = clip_and_mask(model)
    same = copy.deepcopy(model)
    same.decoder.norm.eps = 1e-5
    with torch.no_grad():
        ours = same(x, noise=noise)
        theirs = hf(pixel_values=x.transpose(1, 2), bool_masked_pos=ours.mask.bool())
        assert abs(ours.loss.item() - theirs.loss.item()) < 1e-6
        assert abs(model(x, noise=noise).loss.item() - theirs.loss.item()) < 1e-5


REFUSED = [  # overrides, the field the error names, whether the encoder alone still exports
    ({"input_size": [32, 32], "patch_size": [8, 8], "masker": "random"}, "model.input_size", False),
    ({"tokenizer": "channel_groups", "pos_embed": "sincos", "target": "norm_pix"}, "model.tokenizer", False),
    ({"patch_size": [2, 8, 4]}, "model.patch_size", False),
    ({"class_token": True}, "model.class_token", False),
    ({"pos_embed": "sincos"}, "model.pos_embed", False),
    ({"decoder_embed_bias": True}, "model.decoder_embed_bias", True),
    ({"target": "norm_pix"}, "model.target", True),
]


@pytest.mark.parametrize("overrides, field, encoder_ok", REFUSED, ids=[r[1] for r in REFUSED])
def test_what_videomae_cannot_hold_is_refused_by_name(overrides, field, encoder_ok, tmp_path):
    model = create_model(**{**VIDEO, "depth": 1, **overrides}).eval()
    with pytest.raises(ExportError, match=rf"^VideoMAE export: {field} is "):
        export_videomae(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    if not encoder_ok:
        with pytest.raises(ExportError, match=field):
            export_videomae(model, tmp_path / "enc", encoder_only=True)
        return
    from transformers import VideoMAEModel

    out = export_videomae(model, tmp_path / "enc", encoder_only=True)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["VideoMAEModel"]
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        theirs = VideoMAEModel.from_pretrained(out)(x.transpose(1, 2)).last_hidden_state
    assert torch.allclose(theirs, model.encode(x), atol=1e-5)


def test_encoder_only_checkpoint_exports_the_encoder_alone(exported, tmp_path):
    model, _ = exported
    encoder_only = load_model(save_pretrained(model, tmp_path / "enc", encoder_only=True))
    with pytest.raises(ExportError, match="encoder-only checkpoint.*encoder_only=True"):
        export_videomae(encoder_only, tmp_path / "full")
    out = export_videomae(encoder_only, tmp_path / "encoder", encoder_only=True)
    assert set(load_file(out / "model.safetensors")) == set(videomae_state_dict(model, encoder_only=True))


def test_key_map_goes_both_ways(exported):
    """What the continued pre-training from VideoMAE checkpoints uses: VideoMAE's weights back into a model."""
    model, _ = exported
    mapped = {item.ours for item in videomae_key_map(model)}
    assert mapped == {name for name, p in model.named_parameters() if p.numel()}  # all but the empty class token

    theirs = videomae_state_dict(model)  # the checkpoints' names; transformers 5's module names work as well
    again = create_model(**VIDEO).eval()
    as_modules = {module_name(key): value for key, value in theirs.items()}
    assert as_modules != theirs
    again.load_state_dict(state_dict_from_videomae(again, as_modules), strict=True)
    x, noise = clip_and_mask(model)
    with torch.no_grad():  # the key bias came back as zero: the same loss, as softmax ignores it
        assert abs(again(x, noise=noise).loss.item() - model(x, noise=noise).loss.item()) < 1e-5

    # VideoMAEModel's weights (no prefix, no decoder): the encoder only, the decoder stays the model's own
    fresh = create_model(**VIDEO).eval()
    own_decoder = fresh.decoder.pred.weight.clone()
    fresh.load_state_dict(state_dict_from_videomae(fresh, videomae_state_dict(model, encoder_only=True)), strict=True)
    assert torch.allclose(fresh.encode(x), model.encode(x), atol=1e-5)
    assert torch.equal(fresh.decoder.pred.weight, own_decoder)
    with pytest.raises(KeyError, match="lack videomae.layernorm.weight"):
        state_dict_from_videomae(fresh, {key: v for key, v in theirs.items() if key != "videomae.layernorm.weight"})


def test_per_channel_target_is_videomaes_normalisation_and_skips_nodata():
    target = PerChannelPixelTarget(channels=2)
    patches = torch.randn(1, 3, 8 * 2) * torch.tensor([1.0, 5.0]).repeat(8) + torch.tensor([0.0, 3.0]).repeat(8)
    out = target(patches).unflatten(-1, (8, 2))  # B×L×n×C
    by_channel = patches.unflatten(-1, (8, 2))
    expected = (by_channel - by_channel.mean(2, keepdim=True)) / (by_channel.std(2, keepdim=True) + 1e-6)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(target.to_pixels(target(patches), patches), patches, atol=1e-5)

    # NaN (nodata) at one value of channel 1 of token 0: that channel's statistics come from its 7 real
    # values, and channel 0 keeps its target
    x = patches.clone()
    x[0, 0, 1] = float("nan")  # position 0, channel 1
    weights = (~x.isnan()).float()
    with_nodata = target(x.nan_to_num(0.0), weights).unflatten(-1, (8, 2))
    assert torch.allclose(with_nodata[..., 0], out[..., 0], atol=1e-6)
    real = by_channel[0, 0, 1:, 1]
    assert torch.allclose(with_nodata[0, 0, 1:, 1], (real - real.mean()) / (real.std() + 1e-6), atol=1e-6)
    assert torch.isfinite(target.loss(torch.zeros_like(x), target(x.nan_to_num(0.0), weights),
                                      torch.ones(1, 3), weights))  # fmt: skip
