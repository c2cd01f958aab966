import numpy as np
import torch

from mimsdk.position import GridPositionEncoding, sincos_nd
from mimsdk.tokenizer import PatchTokenizer


def mae_reference(embed_dim: int, grid_size: int) -> np.ndarray:
    """facebookresearch/mae's get_2d_sincos_pos_embed, restated in numpy (without the class row)."""

    def one_d(dim, pos):
        omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    gh = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(gh, gh), axis=0)  # w first, as MAE
    return np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)


def test_2d_table_matches_mae():
    coords = PatchTokenizer((56, 56), 4, 3, 8).coords()
    ours = sincos_nd(64, coords).numpy()
    np.testing.assert_allclose(ours, mae_reference(64, 14), atol=1e-6)


def test_3d_table_is_distinct_per_token_and_pads_uneven_widths():
    coords = PatchTokenizer((8, 8, 8), 2, 1, 8).coords()
    table = sincos_nd(1024, coords)  # 1024 does not split into three even sin-cos shares
    assert table.shape == (64, 1024)
    assert torch.unique(table, dim=0).shape[0] == 64
    assert torch.all(table[:, 1020:] == 0)


def test_learned_encoding_is_a_parameter_fixed_is_a_buffer():
    coords = PatchTokenizer((8, 8), 2, 1, 8).coords()
    learned = GridPositionEncoding(coords, 16, "learned")
    fixed = GridPositionEncoding(coords, 16, "sincos")
    assert [n for n, _ in learned.named_parameters()] == ["table"]
    assert list(fixed.parameters()) == [] and torch.equal(fixed(), learned().detach())


def test_index_table_is_videomaes():
    # transformers recomputes VideoMAE's table at init instead of loading it: ours must be the same numbers
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    coords = PatchTokenizer((4, 16, 16), (2, 8, 8), 3, 8).coords()
    ours = GridPositionEncoding(coords, 48, "sincos_index")()
    assert torch.allclose(ours, get_sinusoid_encoding_table(len(coords), 48), atol=1e-6)
    big = GridPositionEncoding(PatchTokenizer((16, 224, 224), (2, 16, 16), 3, 8).coords(), 768, "sincos_index")()
    assert torch.allclose(big, get_sinusoid_encoding_table(1568, 768), atol=1e-6)  # video-kinetics size
    assert "table" in dict(GridPositionEncoding(coords, 48, "sincos_index").named_buffers())
