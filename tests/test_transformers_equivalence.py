"""Our MAE is the MAE: weights copied into transformers' ViTMAEForPreTraining give the same loss and predictions."""

import torch

from mimsdk import create_model
from mimsdk.hub.transformers_export import to_vitmae


def test_loss_and_predictions_match_transformers_vitmae():
    torch.manual_seed(0)
    model = create_model(size="tiny", depth=3, input_size=[32, 32], patch_size=4, decoder_dim=64,
                         decoder_depth=2, decoder_heads=2, target="norm_pix").eval()  # fmt: skip
    # train a few steps so weights are not at their symmetric initial values
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        model(torch.randn(4, 3, 32, 32)).loss.backward()
        opt.step()
        opt.zero_grad()
    hf = to_vitmae(model)
    x = torch.randn(4, 3, 32, 32)
    noise = torch.rand(4, 64)
    with torch.no_grad():
        ours = model(x, noise=noise)
        theirs = hf(pixel_values=x, noise=noise)
    assert torch.equal(ours.mask, theirs.mask)
    assert torch.allclose(ours.pred, theirs.logits, atol=1e-5)
    assert abs(ours.loss.item() - theirs.loss.item()) < 1e-5


def test_raw_pixel_target_matches_too():
    model = create_model(size="tiny", depth=1, input_size=[48, 48], patch_size=8, decoder_dim=32,
                         decoder_depth=1, decoder_heads=2, target="pixels").eval()  # fmt: skip
    hf = to_vitmae(model)
    x, noise = torch.randn(2, 3, 48, 48), torch.rand(2, 36)
    with torch.no_grad():
        assert abs(model(x, noise=noise).loss.item() - hf(pixel_values=x, noise=noise).loss.item()) < 1e-5


def test_non_square_models_are_refused_by_name():
    import pytest

    model = create_model(size="tiny", depth=1, input_size=[32, 48], patch_size=8, decoder_dim=32, decoder_heads=2)
    with pytest.raises(ValueError, match=r"square 2D images.*\[32, 48\]"):
        to_vitmae(model)
