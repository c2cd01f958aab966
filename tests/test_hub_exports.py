"""Exports: the encoder as a timm VisionTransformer, the whole MAE as transformers' ViTMAEForPreTraining."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mimsdk import create_model, save_model
from mimsdk.cli import main
from mimsdk.hub import ExportError, load_model, save_pretrained
from mimsdk.hub.timm_export import export_timm, load_timm
from mimsdk.hub.transformers_export import export_transformers

KWARGS = dict(size="tiny", depth=2, input_size=[32, 32], patch_size=4, decoder_dim=64, decoder_depth=2,
              decoder_heads=2, metadata={"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]})  # fmt: skip


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = create_model(**KWARGS)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):  # away from the symmetric initial values
        model(torch.randn(4, 3, 32, 32)).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


def test_timm_export_loads_strictly_and_gives_the_same_features(model, tmp_path):
    import timm

    out = export_timm(model, tmp_path / "timm")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch16_224" and config["pretrained_cfg"]["num_classes"] == 0
    assert config["pretrained_cfg"]["mean"] == [0.4, 0.5, 0.6] and config["model_args"]["img_size"] == [32, 32]
    x = torch.randn(3, 3, 32, 32)
    ours = model.encode(x)

    # as the export's README would say: the architecture, its pretrained_cfg with the file, the model args
    overlay = dict(config["pretrained_cfg"], file=str(out / "model.safetensors"))
    vit = timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=overlay,
                            **config["model_args"]).eval()  # fmt: skip
    with torch.no_grad():
        assert torch.allclose(vit.forward_features(x), ours, atol=1e-5)  # B×(1+L)×D, class token first
        assert torch.allclose(vit(x), model.features(x), atol=1e-5)  # num_classes=0: the mean-pooled features
    # timm's own folder format, and our helper, load it too
    for loaded in (timm.create_model(f"local-dir:{out}", pretrained=True).eval(), load_timm(out)):
        with torch.no_grad():
            assert torch.allclose(loaded.forward_features(x), ours, atol=1e-5)

    # keys are exactly timm's: the file loads strictly into a bare timm model, and timm's loader is strict
    bare = timm.create_model(config["architecture"], pretrained=False, **config["model_args"])
    bare.load_state_dict(load_file(out / "model.safetensors"), strict=True)
    weights = load_file(out / "model.safetensors")
    save_file({**weights, "extra.weight": torch.zeros(1)}, out / "model.safetensors")
    with pytest.raises(RuntimeError, match="extra.weight"):
        load_timm(out)


def test_timm_export_refuses_3d_models_and_works_for_encoder_only(model, tmp_path):
    volume = create_model(size="tiny", depth=1, input_size=[16, 16, 16], patch_size=8, in_chans=1, decoder_dim=32,
                          decoder_depth=1, decoder_heads=2)  # fmt: skip
    with pytest.raises(ValueError, match=r"timm's VisionTransformer takes 2D images; this model is 3D"):
        export_timm(volume, tmp_path / "vol")
    assert not (tmp_path / "vol").exists()

    enc = load_model(save_pretrained(model, tmp_path / "enc", encoder_only=True))
    x = torch.randn(2, 3, 32, 32)
    vit = load_timm(export_timm(enc, tmp_path / "t"))
    with torch.no_grad():
        assert torch.allclose(vit.forward_features(x), model.encode(x), atol=1e-5)
    with pytest.raises(ValueError, match="needs the decoder.*encoder-only"):
        export_transformers(enc, tmp_path / "hf")


def test_transformers_export_loads_and_gives_the_same_loss(model, tmp_path):
    from transformers import ViTMAEForPreTraining, ViTMAEModel

    out = export_transformers(model, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.bin"))
    hf, info = ViTMAEForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    x, noise = torch.randn(3, 3, 32, 32), torch.rand(3, 64)
    with torch.no_grad():
        ours, theirs = model(x, noise=noise), hf.eval()(pixel_values=x, noise=noise)
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5
    assert torch.allclose(ours.pred, theirs.logits, atol=1e-5)
    assert json.loads((out / "preprocessor_config.json").read_text())["image_mean"] == [0.4, 0.5, 0.6]
    # the card's snippet: every patch visible, in order when the noise is the token index
    card = (out / "README.md").read_text()
    assert "ViTMAEModel.from_pretrained" in card and "| mean (per channel) | 0.4, 0.5, 0.6 |" in card
    encoder = ViTMAEModel.from_pretrained(out, mask_ratio=0.0).eval()
    with torch.no_grad():
        hidden = encoder(pixel_values=x, noise=torch.arange(64.0).expand(3, -1)).last_hidden_state
    assert torch.allclose(hidden, model.encode(x), atol=1e-5)


def test_export_command(model, tmp_path, capsys):
    saved = save_model(model, tmp_path / "model")
    assert main(["export", "timm", str(saved), str(tmp_path / "timm")]) == 0
    assert "local-dir:" in capsys.readouterr().out
    assert (tmp_path / "timm" / "model.safetensors").is_file()
    assert main(["export", "timm", str(saved), str(tmp_path / "timm")]) == 2  # never over an earlier export
    assert "already exists" in capsys.readouterr().err
    assert main(["export", "transformers", str(tmp_path / "nothing"), str(tmp_path / "hf")]) == 2
    assert "nothing does not exist" in capsys.readouterr().err


# Tiny models of the two non-patch tokenizers (as in test_group_tokenizer.py / test_point_tokenizer.py).
GROUPED = dict(size="tiny", embed_dim=48, depth=1, num_heads=3, input_size=[16, 16], patch_size=4, in_chans=10,
               decoder_dim=32, decoder_depth=1, decoder_heads=2, tokenizer="channel_groups",
               tokenizer_options={"groups": [[0, 1, 2, 6], [3, 4, 5, 7], [8, 9]], "spacing": 10.0})  # fmt: skip
POINTS = dict(size="tiny", depth=1, input_size=[256, 3], tokenizer="point_groups",
              tokenizer_options={"groups": 16, "group_size": 16, "pointnet_width": 32},
              decoder_dim=32, decoder_depth=1, decoder_heads=2, target="chamfer", mask_ratio=0.6)  # fmt: skip


@pytest.mark.parametrize("kwargs", [GROUPED, POINTS], ids=["channel_groups", "point_groups"])
def test_non_patch_tokenizers_are_refused_in_one_line_naming_the_tokenizer(kwargs, tmp_path, capsys):
    model = create_model(**kwargs)
    name = kwargs["tokenizer"]
    with pytest.raises(ExportError, match=rf"^timm export: only patch-tokenizer 2D .*uses the {name} tokenizer$"):
        export_timm(model, tmp_path / "timm")
    with pytest.raises(ExportError, match=rf"^transformers export: only patch-tokenizer .*uses the {name} tokenizer$"):
        export_transformers(model, tmp_path / "hf")
    assert not list(tmp_path.iterdir())  # refused before anything was written

    saved = save_model(model, tmp_path / "model")  # the command line: one `mimsdk: error:` line, no traceback
    for fmt in ("timm", "transformers"):
        assert main(["export", fmt, str(saved), str(tmp_path / fmt)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mimsdk: error: {fmt} export: only patch-tokenizer") and err.count("\n") == 1
        assert f"the {name} tokenizer" in err and not (tmp_path / fmt).exists()
