import math
import random

import pytest
import torch

from mimsdk.masker import RandomMasker, build_masker
from mimsdk.variants.block_masking import BlockMasker
from mimsdk.variants.partial_decoding import decoder_selection, running_cell_priority
from mimsdk.variants.tube_masking import TubeMasker


@pytest.mark.parametrize("ratio, tokens", [(0.75, 196), (0.9, 1568), (0.6, 64), (0.5, 7), (0.0, 10)])
def test_keeps_exactly_round_l_times_one_minus_r(ratio, tokens):
    masker = RandomMasker(ratio)
    m = masker(masker.noise(5, tokens, torch.Generator().manual_seed(0)))
    keep = round(tokens * (1 - ratio))
    assert m.keep.shape == (5, keep)
    assert torch.all(m.mask.sum(1) == tokens - keep)
    # the kept tokens are exactly the unmasked ones
    visible = torch.zeros(5, tokens).scatter_(1, m.keep, 1.0)
    assert torch.equal(visible, 1 - m.mask)
    assert torch.equal(torch.argsort(m.restore, 1).sort(1).values, torch.arange(tokens).expand(5, -1))


def test_reproducible_under_a_seed_and_different_across_seeds():
    masker = RandomMasker(0.75)
    a = masker(masker.noise(4, 64, torch.Generator().manual_seed(1)))
    b = masker(masker.noise(4, 64, torch.Generator().manual_seed(1)))
    c = masker(masker.noise(4, 64, torch.Generator().manual_seed(2)))
    assert torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)
    assert not torch.equal(a.mask[0], a.mask[1])  # samples differ within a batch


def test_bad_ratio_and_name():
    with pytest.raises(ValueError, match="mask ratio"):
        RandomMasker(1.0)
    with pytest.raises(ValueError, match="unknown masker 'tubes'"):
        build_masker("tubes", 0.9)
    with pytest.raises(ValueError, match="tube masking needs a token grid of 2 or more axes"):
        build_masker("tube", 0.9, (64,))


def test_tube_mask_is_identical_across_the_first_axis():
    grid = (8, 14, 14)  # T×H×W tubelets
    masker = TubeMasker(0.9, grid)
    m = masker(masker.noise(3, math.prod(grid), torch.Generator().manual_seed(0)))
    per_time = m.mask.reshape(3, *grid)
    assert torch.equal(per_time, per_time[:, :1].expand_as(per_time))
    assert torch.all(per_time[:, 0].sum((1, 2)) == 196 - round(196 * 0.1))
    assert m.keep.shape == (3, 8 * round(196 * 0.1))
    assert not torch.equal(per_time[0, 0], per_time[1, 0])


@pytest.mark.parametrize("grid, ratio", [((14, 14), 0.4), ((14, 14), 0.75), ((2, 16, 16), 0.5), ((8, 10), 0.3)])
def test_block_masks_have_exact_count_and_blocks_within_bounds(grid, ratio):
    masker = BlockMasker(ratio, grid)
    plane = grid[-2] * grid[-1]
    owed = plane - round(plane * (1 - ratio))
    filled_singly = 0
    for seed in range(50):
        mask, blocks = masker.blocks(random.Random(seed))
        assert int(mask.sum()) == owed
        union = torch.zeros_like(mask)
        for b in blocks:
            assert b.height * b.width >= masker.min_tokens
            assert 0.3 <= b.height / b.width <= 1 / 0.3
            union[b.top : b.top + b.height, b.left : b.left + b.width] = 1
        filled_singly += int(mask.sum() - union.sum())
        assert torch.all(mask >= union)
    assert filled_singly <= 0.02 * 50 * owed  # measured: 0.003-0.6% of masked tokens
    m = masker(masker.noise(4, math.prod(grid), torch.Generator().manual_seed(0)))
    assert torch.all(m.mask.sum(1) == owed * math.prod(grid[:-2]))


def test_block_masks_reproducible_under_a_seed():
    masker = BlockMasker(0.4, (14, 14))
    a = masker(masker.noise(4, 196, torch.Generator().manual_seed(3))).mask
    b = masker(masker.noise(4, 196, torch.Generator().manual_seed(3))).mask
    c = masker(masker.noise(4, 196, torch.Generator().manual_seed(4))).mask
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("fraction", [1.0, 0.5, 0.25])
def test_decoder_selection_takes_only_masked_tokens(fraction):
    masker = RandomMasker(0.75)
    m = masker(masker.noise(4, 64, torch.Generator().manual_seed(0)))
    num_decode = round(48 * fraction)
    decode, selected = decoder_selection(m.mask, num_decode, torch.rand(4, 64))
    assert decode.shape == (4, num_decode)
    assert torch.all(torch.gather(m.mask, 1, decode) == 1)
    assert torch.all(selected.sum(1) == num_decode) and torch.all(selected <= m.mask)


def test_running_cell_pattern_shifts_over_time():
    priority = running_cell_priority((4, 2, 2), torch.zeros(1, 16)).reshape(4, 2, 2)
    # each 2×2 cell holds every priority once, and the pattern moves one step per time index
    for t in range(4):
        assert sorted(priority[t].flatten().tolist()) == [0, 1, 2, 3]
        assert torch.equal(priority[t], (priority[0] + t) % 4)


def _low_frequency_share(masks: torch.Tensor) -> float:
    """Share of the masks' spectral energy (mean removed) within radius 0.15 cycles/token."""
    grid = masks.shape[-2:]
    fy, fx = torch.meshgrid(*[torch.fft.fftfreq(n) for n in grid], indexing="ij")
    low = (fy**2 + fx**2).sqrt() <= 0.15
    energy = torch.fft.fft2(masks - masks.mean(dim=(-2, -1), keepdim=True)).abs() ** 2
    return float(energy[..., low].sum() / energy.sum())


@pytest.mark.parametrize("color", ["white", "red", "blue", "green"])
def test_colored_masks_keep_the_exact_ratio(color):
    masker = build_masker("colored", 0.75, (14, 14), {"color": color})
    m = masker(masker.noise(6, 196, torch.Generator().manual_seed(0)))
    assert torch.all(m.mask.sum(1) == 196 - round(196 * 0.25))


def test_colored_masks_have_the_intended_spectrum():
    gen = torch.Generator().manual_seed(0)
    shares = {}
    for color in ["white", "red", "blue", "green"]:
        masker = build_masker("colored", 0.5, (14, 14), {"color": color})
        shares[color] = _low_frequency_share(masker(masker.noise(64, 196, gen)).mask.reshape(64, 14, 14))
    # low-pass masks put more energy at low frequencies than random ones, high-pass less
    assert shares["red"] > 2 * shares["white"], shares
    assert shares["blue"] < 0.5 * shares["white"], shares
    assert shares["blue"] < shares["green"] < shares["red"], shares


def test_masker_options_are_checked():
    with pytest.raises(ValueError, match="unknown key model.masker_options.colour for the colored masker"):
        build_masker("colored", 0.5, (14, 14), {"colour": "red"})
    with pytest.raises(ValueError, match="model.masker_options.color: 'pink'"):
        build_masker("colored", 0.5, (14, 14), {"color": "pink"})
