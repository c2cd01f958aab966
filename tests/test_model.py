import torch

from mimsdk import create_model
from mimsdk.position import sincos_nd


def test_forward_shapes_and_masked_only_loss(tiny_kwargs):
    model = create_model(**tiny_kwargs)
    x = torch.randn(3, 3, 32, 32)
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (3, 64, 48) and out.mask.shape == (3, 64)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_changing_predictions_on_visible_tokens_leaves_loss_unchanged(tiny_kwargs):
    model = create_model(**tiny_kwargs)
    x = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 64)
    out = model(x, noise=noise)
    target = model.target(model.tokenizer.patchify(x))
    changed = out.pred + (1 - out.mask)[..., None] * 100.0
    assert torch.allclose(model.target.loss(changed, target, out.mask), out.loss)
    changed_masked = out.pred + out.mask[..., None] * 1.0
    assert not torch.allclose(model.target.loss(changed_masked, target, out.mask), out.loss)


def test_norm_pix_matches_direct_computation(tiny_kwargs):
    model = create_model(**tiny_kwargs)
    patches = torch.rand(2, 64, 48)
    expected = torch.empty_like(patches)
    for b in range(2):
        for t in range(64):
            p = patches[b, t]
            expected[b, t] = (p - p.mean()) / torch.sqrt(p.var(unbiased=True) + 1e-6)
    assert torch.allclose(model.target(patches), expected, atol=1e-5)
    raw = create_model(**tiny_kwargs, target="pixels")
    assert torch.equal(raw.target(patches), patches)


def test_encode_is_deterministic_and_sees_every_token(tiny_kwargs):
    model = create_model(**tiny_kwargs, drop_path=0.1).eval()
    x = torch.randn(2, 3, 32, 32)
    a, b = model.encode(x), model.encode(x)
    assert a.shape == (2, 65, 192) and torch.equal(a, b)
    assert model.features(x).shape == (2, 192)


def test_fresh_model_has_real_position_tables_and_tokens(tiny_kwargs):
    # transformers' ViTMAE built from a bare config has all-zero tables and tokens; ours must not
    model = create_model(**tiny_kwargs)
    coords = model.tokenizer.coords()
    assert torch.equal(model.pos()[0], sincos_nd(192, coords))
    assert torch.equal(model.decoder.pos()[0], sincos_nd(64, coords))
    assert model.encoder.cls_token.abs().sum() > 0 and model.decoder.mask_token.abs().sum() > 0


def test_3d_model_trains_a_step():
    model = create_model(size="tiny", depth=1, input_size=[16, 16, 16], patch_size=8, in_chans=1,
                         decoder_dim=32, decoder_depth=1, decoder_heads=2)  # fmt: skip
    x = torch.randn(2, 1, 16, 16, 16)
    out = model(x, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert model.tokenizer.proj.weight.grad is not None and out.pred.shape == (2, 8, 512)


def test_reconstruction_keeps_visible_patches(tiny_kwargs):
    model = create_model(**tiny_kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        rec = model.reconstruct(x, generator=torch.Generator().manual_seed(0))
    visible = rec["mask"] == 0
    assert torch.allclose(rec["reconstruction"][visible], x[visible], atol=1e-6)
    assert torch.all(rec["masked"][~visible] == 0)
