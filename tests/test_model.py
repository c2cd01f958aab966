import pytest
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
    target = model.target(model.tokenize(x).patches)
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


def _decoder_token_counts(model, x, **kwargs) -> tuple[list[int], object]:
    seen = []
    handle = model.decoder.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    out = model(x, **kwargs)
    handle.remove()
    return seen, out


def test_partial_decoding_feeds_and_scores_only_the_chosen_masked_tokens(tiny_kwargs):
    full = create_model(**tiny_kwargs, mask_ratio=0.75)
    x, noise, dnoise = torch.randn(2, 3, 32, 32), torch.rand(2, 64), torch.rand(2, 64)
    for fraction, decoded in [(1.0, 48), (0.5, 24), (0.25, 12)]:
        model = create_model(**tiny_kwargs, mask_ratio=0.75, decoder_fraction=fraction)
        model.load_state_dict(full.state_dict())
        seen, out = _decoder_token_counts(model, x, noise=noise, decoder_noise=dnoise)
        assert seen == [1 + 16 + decoded]  # class token, visible tokens, decoded mask tokens
        if fraction == 1.0:
            assert out.decoded is None
            continue
        assert torch.all(out.decoded.sum(1) == decoded) and torch.all(out.decoded <= out.mask)
        target = model.target(model.tokenize(x).patches)
        manual = ((out.pred - target) ** 2).mean(-1)
        assert torch.allclose((manual * out.decoded).sum() / out.decoded.sum(), out.loss)
        assert torch.all(out.pred[out.decoded == 0] == 0)
        # evaluation decodes every masked token, exactly as the full model does
        assert torch.allclose(model(x, noise=noise, decode_all=True).loss, full(x, noise=noise).loss)


def test_running_cell_decoding_follows_the_cell_pattern(tiny_kwargs):
    model = create_model(**tiny_kwargs, mask_ratio=0.5, decoder_fraction=0.5, decoder_masking="running_cell")
    out = model(torch.randn(4, 3, 32, 32), noise=torch.rand(4, 64), decoder_noise=torch.zeros(4, 64))
    priority = model.decoding.priority(torch.zeros(1, 64))[0]
    for row in range(4):
        chosen = priority[out.decoded[row] == 1]
        left = priority[(out.mask[row] == 1) & (out.decoded[row] == 0)]
        assert chosen.max() <= left.min()  # lower cell priority is always decoded first


def test_nan_is_nodata_kept_out_of_statistics_and_loss(tiny_kwargs):
    model = create_model(**tiny_kwargs, target="norm_pix")
    x = torch.rand(2, 3, 32, 32)
    x[:, :, :8, :] = float("nan")  # the top two rows of patches hold no data
    x[0, 1, 20, 20] = float("nan")  # and one stray value
    noise = torch.rand(2, 64)
    out = model(x, noise=noise)
    assert torch.isfinite(out.loss)
    # The encoder sees 0 where the data is missing, so predictions equal those for zero-filled input,
    # while the zero-filled input's loss also scores the filled pixels.
    filled = model(torch.nan_to_num(x, nan=0.0), noise=noise)
    assert torch.allclose(out.pred, filled.pred)
    assert not torch.allclose(out.loss, filled.loss)
    valid = model.tokenizer.patchify((~torch.isnan(x)).float())
    patches = model.tokenizer.patchify(torch.nan_to_num(x))
    count = valid.sum(-1, keepdim=True)
    mean = (patches * valid).sum(-1, keepdim=True) / count.clamp_min(1)
    var = (valid * (patches - mean) ** 2).sum(-1, keepdim=True) / (count - 1).clamp_min(1)
    target = (patches - mean) / (var + 1e-6) ** 0.5
    weights = valid * out.mask[..., None]
    expected = (((out.pred - target) ** 2) * weights).sum() / weights.sum()
    assert torch.allclose(out.loss, expected, atol=1e-6)


def test_without_class_token_the_patch_tokens_are_all_there_is(tiny_kwargs):
    # UNETR's ViT and VideoMAE have no class token; such a model trains, pools and decodes (all or part) without one
    for fraction in (1.0, 0.5):
        model = create_model(**tiny_kwargs, class_token=False, decoder_fraction=fraction)
        assert model.encoder.cls_token.shape == (1, 0, 192) and model.encoder.num_prefix == 0
        x = torch.randn(2, 3, 32, 32)
        out = model(x, generator=torch.Generator().manual_seed(0))
        out.loss.backward()
        assert torch.isfinite(out.loss) and model.decoder.embed.weight.grad.abs().sum() > 0
    assert model.encode(x).shape == (2, 64, 192)
    assert torch.allclose(model.features(x), model.encode(x).mean(1))
    with pytest.raises(ValueError, match="no class token"):
        model.features(x, pool="cls")


def test_features_of_chosen_blocks_are_token_grids(tiny_kwargs):
    model = create_model(**tiny_kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    first, last = model.features(x, layers=[0, -1])
    assert first.shape == last.shape == (2, 192, 8, 8) and not torch.allclose(first, last)
    # the last block's output, normalised, is what encode returns for the patch tokens (row-major grid order)
    assert torch.allclose(model.encoder.norm(last.flatten(2).transpose(1, 2)), model.encode(x)[:, 1:], atol=1e-5)
    volume = create_model(size="tiny", depth=2, input_size=[16, 16, 16], patch_size=8, in_chans=1, decoder_dim=32,
                          decoder_depth=1, decoder_heads=2, class_token=False)  # fmt: skip
    (grid,) = volume.features(torch.randn(1, 1, 16, 16, 16), layers=[1])
    assert grid.shape == (1, 192, 2, 2, 2)
    with pytest.raises(ValueError, match=r"layers \[2\]"):
        model.features(x, layers=[2])


def test_decoder_input_projection_may_go_without_bias(tiny_kwargs):
    keys = create_model(**tiny_kwargs, decoder_embed_bias=False).state_dict()
    assert "decoder.embed.weight" in keys and "decoder.embed.bias" not in keys
