import pytest
import torch

from mimsdk.tokenizer import PatchTokenizer


@pytest.mark.parametrize(
    "channels, size, patch",
    [
        (3, (32, 32), (4, 4)),
        (1, (96, 128), (16, 16)),  # non-square, one channel
        (13, (64, 64), (8, 8)),  # Sentinel-2's 13 bands
        (5, (64, 64), 16),
        (3, (16, 64, 64), (2, 16, 16)),  # video tubelets
        (1, (24, 32, 40), (8, 8, 4)),  # anisotropic volume patches
    ],
)
def test_patchify_then_unpatchify_is_identity(channels, size, patch):
    tok = PatchTokenizer(size, patch, channels, embed_dim=8)
    x = torch.randn(2, channels, *size)
    patches = tok.patchify(x)
    assert patches.shape == (2, tok.num_tokens, tok.patch_dim)
    assert torch.equal(tok.unpatchify(patches), x)


def test_patch_vectors_are_pixels_of_one_patch_channel_last():
    tok = PatchTokenizer((4, 6), (2, 3), 2, embed_dim=4)
    x = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    patches = tok.patchify(x)
    # token 1 is grid cell (row 0, col 1): rows 0-1, cols 3-5, stored as (p, q, C)
    expected = x[0, :, 0:2, 3:6].permute(1, 2, 0).reshape(-1)
    assert torch.equal(patches[0, 1], expected)


def test_coords_follow_patchify_order():
    tok = PatchTokenizer((4, 6, 8), (2, 3, 4), 1, embed_dim=4)
    coords = tok.coords()
    assert coords.shape == (tok.num_tokens, 3)
    assert coords[1].tolist() == [0, 0, 1] and coords[-1].tolist() == [1, 1, 1]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="not divisible"):
        PatchTokenizer((30, 32), 4, 3, 8)
    tok = PatchTokenizer((32, 32), 4, 3, 8)
    with pytest.raises(ValueError, match=r"expected B×3×32×32"):
        tok.patchify(torch.zeros(1, 1, 32, 32))


def test_model_builds_the_named_tokenizer_and_checks_its_options(tiny_kwargs):
    from mimsdk import create_model
    from mimsdk.config import ConfigError

    model = create_model(**tiny_kwargs)
    tok = model.tokenize(torch.rand(2, 3, 32, 32))
    assert tok.patches.shape == (2, 64, 48) and tok.weights is None and tok.where is None
    with pytest.raises(ConfigError, match="model.tokenizer: 'grid' is not allowed"):
        create_model(**tiny_kwargs, tokenizer="grid")
    with pytest.raises(ValueError, match="model.tokenizer_options: the patch tokenizer takes none"):
        create_model(**tiny_kwargs, tokenizer_options={"groups": 2})
