import pytest
import torch

from mimsdk import create_model
from mimsdk.config import ConfigError
from mimsdk.variants.channel_groups import ChannelGroupTokenizer

GROUPS = [[0, 1, 2, 6], [3, 4, 5, 7], [8, 9]]  # SatMAE's Sentinel-2 grouping of 10 bands


def tiny(**overrides) -> dict:
    kwargs = dict(
        size="tiny", embed_dim=48, depth=2, num_heads=3, input_size=[16, 16], patch_size=4, in_chans=10,
        decoder_dim=32, decoder_depth=1, decoder_heads=2, tokenizer="channel_groups",
        tokenizer_options={"groups": GROUPS, "spacing": 10.0},
    )  # fmt: skip
    return {**kwargs, **overrides}


def test_shapes_grid_and_padding_weights():
    tok = ChannelGroupTokenizer((16, 16), 4, 10, 32, GROUPS)
    assert tok.grid_size == (3, 4, 4) and tok.num_tokens == 48 and tok.patch_dim == 4 * 4 * 4
    x = torch.randn(2, 10, 16, 16)
    t = tok.tokenize(x)
    assert t.patches.shape == (2, 48, 64) and t.where is None
    # the SWIR group has 2 of 4 channels: its last 32 values are padding, weight 0 and value 0
    swir = slice(32, 48)
    assert torch.all(t.weights[:, swir, 32:] == 0) and torch.all(t.patches[:, swir, 32:] == 0)
    assert torch.all(t.weights[:, swir, :32] == 1) and torch.all(t.weights[:, :32] == 1)
    # group 0's token 0 is the top-left 4×4 of channels 0, 1, 2, 6, channel last
    assert torch.equal(t.patches[0, 0], x[0, [0, 1, 2, 6], :4, :4].permute(1, 2, 0).reshape(-1))
    assert torch.equal(tok.untokenize(t.patches), x)


def test_nan_is_nodata_with_weight_zero():
    tok = ChannelGroupTokenizer((8, 8), 4, 4, 16, [[0, 1], [2, 3]])
    x = torch.randn(1, 4, 8, 8)
    x[0, 3, 0, 0] = float("nan")
    t = tok.tokenize(x)
    assert not torch.isnan(t.patches).any()
    assert t.weights[0, 4].tolist().count(0.0) == 1 and t.weights.sum() == x.numel() - 1


def test_each_group_has_its_own_embedding():
    tok = ChannelGroupTokenizer((8, 8), 4, 4, 16, [[0, 1], [2, 3]])
    x = torch.randn(1, 4, 8, 8)
    before = tok.embed(tok.tokenize(x).patches)
    with torch.no_grad():
        tok.embeds[1].proj.weight.add_(1.0)
    after = tok.embed(tok.tokenize(x).patches)
    assert torch.equal(before[:, :4], after[:, :4]) and not torch.allclose(before[:, 4:], after[:, 4:])
    assert len({id(e.proj) for e in tok.embeds}) == 2


def test_positions_follow_spacing_and_groups():
    model = create_model(**tiny())
    x = torch.randn(2, 10, 16, 16)
    default = model.pos(None)  # 1×L×D at the configured 10 m
    at_10 = model.pos(model.tokenize(x, spacing=10.0).where)
    at_20 = model.pos(model.tokenize(x, spacing=20.0).where)
    assert torch.allclose(default.expand_as(at_10), at_10)
    assert not torch.allclose(at_10, at_20)
    per_sample = model.pos(model.tokenize(x, spacing=torch.tensor([10.0, 20.0])).where)
    assert torch.allclose(per_sample[0], at_10[0]) and torch.allclose(per_sample[1], at_20[1])
    # same place, different group: spatial part equal, group part different
    n, spatial = 16, model.pos.spatial_dim
    assert torch.equal(default[0, 0, :spatial], default[0, n, :spatial])
    assert not torch.equal(default[0, 0, spatial:], default[0, n, spatial:])
    with pytest.raises(ValueError, match="spacing must be positive"):
        model.tokenize(x, spacing=0.0)
    # the spacing changes what the encoder computes
    assert not torch.allclose(model.features(x, spacing=10.0), model.features(x, spacing=40.0))


def test_tube_masking_is_consistent_across_groups_and_random_is_not():
    x = torch.randn(4, 10, 16, 16)
    gen = torch.Generator().manual_seed(0)
    out = create_model(**tiny(masker="tube"))(x, generator=gen)
    mask = out.mask.reshape(4, 3, 16)
    assert torch.equal(mask[:, 0], mask[:, 1]) and torch.equal(mask[:, 0], mask[:, 2])
    out = create_model(**tiny(masker="random"))(x, generator=torch.Generator().manual_seed(0))
    mask = out.mask.reshape(4, 3, 16)
    assert not torch.equal(mask[:, 0], mask[:, 1])


def test_padding_and_nodata_stay_out_of_the_loss():
    model = create_model(**tiny(masker="tube")).eval()
    x = torch.randn(2, 10, 16, 16)
    noise = torch.rand(2, model.num_tokens, generator=torch.Generator().manual_seed(1))
    noise[:, [0, 16, 32]] = 2.0  # the top-left place is masked in every group
    base = model(x, noise=noise).loss

    def shift_padding(module, inputs, output):
        output = output.clone()
        output[:, 32:, 32:] += 100.0  # SWIR tokens (32..47) carry 64 values, of which the first 32 are real
        return output

    hook = model.decoder.pred.register_forward_hook(shift_padding)
    assert torch.allclose(model(x, noise=noise).loss, base)
    hook.remove()

    def shift_token_0(module, inputs, output):
        output = output.clone()
        output[:, 0] += 100.0
        return output

    hook = model.decoder.pred.register_forward_hook(shift_token_0)
    assert model(x, noise=noise).loss > base + 1.0  # token 0 is real data: its prediction counts
    y = x.clone()
    y[:, [0, 1, 2, 6], :4, :4] = float("nan")  # token 0 (group 0, top-left) is all nodata
    hook.remove()
    clean = model(y, noise=noise).loss
    hook = model.decoder.pred.register_forward_hook(shift_token_0)
    assert torch.isfinite(clean) and torch.allclose(model(y, noise=noise).loss, clean)
    hook.remove()


def test_time_series_grid_and_temporal_encoding():
    model = create_model(**tiny(input_size=[3, 16, 16], patch_size=[1, 4, 4], masker="tube"))
    assert model.tokenizer.grid_size == (3, 3, 4, 4) and model.num_tokens == 144
    x = torch.randn(2, 10, 3, 16, 16)
    out = model(x)
    assert out.pred.shape == (2, 144, 64) and torch.isfinite(out.loss)
    table = model.pos(None)[0]
    spatial, group = model.pos.spatial_dim, model.pos.group_dim
    # date 0 and date 1 of the same place and group differ only in the date encoding
    assert torch.equal(table[0, : spatial + group], table[16, : spatial + group])
    assert not torch.equal(table[0, spatial + group :], table[16, spatial + group :])
    assert torch.equal(model.tokenizer.untokenize(model.tokenize(x).patches), x)


def test_bad_groups_and_options_name_the_key():
    with pytest.raises(ValueError, match=r"tokenizer_options.groups .* exactly once"):
        create_model(**tiny(tokenizer_options={"groups": [[0, 1], [1, 2]]}))
    with pytest.raises(ConfigError, match="model.tokenizer_options.spacings"):
        create_model(**tiny(tokenizer_options={"spacings": 10.0}))
