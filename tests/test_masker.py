import pytest
import torch

from mimsdk.masker import RandomMasker, build_masker


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
    with pytest.raises(ValueError, match="unknown masker 'tube'"):
        build_masker("tube", 0.9)
