"""Point groups (Point-MAE tokens) and the Chamfer target, against brute-force references."""

import pytest
import torch

from mimsdk import create_model
from mimsdk.config import ConfigError
from mimsdk.target import build_target
from mimsdk.variants.chamfer_target import ChamferTarget
from mimsdk.variants.point_groups import PointGroupTokenizer, farthest_point_sample, gather_points, knn_group


def greedy_fps(points: list[list[float]], count: int) -> list[int]:
    """Textbook FPS: start at point 0, then repeatedly the point farthest from all chosen."""
    chosen = [0]
    while len(chosen) < count:
        best, best_dist = None, -1.0
        for i, p in enumerate(points):
            if i in chosen:
                continue
            d = min(sum((a - b) ** 2 for a, b in zip(p, points[j])) for j in chosen)
            if d > best_dist:
                best, best_dist = i, d
        chosen.append(best)
    return chosen


def brute_chamfer(a: torch.Tensor, b: torch.Tensor, squared: bool) -> float:
    """Double loop over K×3 sets a and b."""

    def nearest(p, cloud):
        d = min(sum((p[i] - q[i]) ** 2 for i in range(3)) for q in cloud)
        return d if squared else d**0.5

    a, b = a.tolist(), b.tolist()
    ab = sum(nearest(p, b) for p in a) / len(a)
    ba = sum(nearest(q, a) for q in b) / len(b)
    return ab + ba if squared else (ab + ba) / 2


def point_model(**overrides):
    kwargs = dict(
        size="tiny", depth=2, input_size=[256, 3], tokenizer="point_groups",
        tokenizer_options={"groups": 16, "group_size": 16, "pointnet_width": 32},
        decoder_dim=32, decoder_depth=1, decoder_heads=2, target="chamfer", mask_ratio=0.6,
    )  # fmt: skip
    return create_model(**{**kwargs, **overrides})


def test_fps_matches_greedy_reference_and_returns_distinct_points():
    gen = torch.Generator().manual_seed(0)
    xyz = torch.randn(3, 60, 3, generator=gen)
    idx = farthest_point_sample(xyz, 12)
    assert idx.shape == (3, 12)
    for b in range(3):
        assert idx[b].tolist() == greedy_fps(xyz[b].tolist(), 12)
        assert len(set(idx[b].tolist())) == 12


def test_fps_indices_stay_distinct_on_duplicate_points():
    xyz = torch.zeros(2, 10, 3)
    xyz[:, 5:] = 1.0  # two distinct locations, each five times
    idx = farthest_point_sample(xyz, 10)
    assert sorted(idx[0].tolist()) == list(range(10))
    assert idx[0, :2].tolist() == [0, 5]  # the far location comes second


def test_knn_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    xyz = torch.rand(2, 80, 3, generator=gen)
    centres = gather_points(xyz, farthest_point_sample(xyz, 8))
    idx = knn_group(xyz, centres, 7)
    for b in range(2):
        for g in range(8):
            dists = [((xyz[b, i] - centres[b, g]) ** 2).sum().item() for i in range(80)]
            expected = sorted(range(80), key=lambda i: dists[i])[:7]
            assert idx[b, g].tolist() == expected
            assert dists[idx[b, g, 0]] == 0.0  # a centre is its own nearest point


@pytest.mark.parametrize("name,squared", [("chamfer", True), ("chamfer_l1", False)])
def test_chamfer_matches_double_loop_and_ignores_point_order(name, squared):
    gen = torch.Generator().manual_seed(2)
    k = 6
    pred = torch.randn(2, 5, k * 3, generator=gen)
    true = torch.randn(2, 5, k * 3, generator=gen)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 1, 1, 0]], dtype=torch.float32)
    target = build_target(name)
    assert isinstance(target, ChamferTarget)
    loss = target.loss(pred, target(true), mask)
    pairs = [(pred[b, t].view(k, 3), true[b, t].view(k, 3)) for b in range(2) for t in range(5) if mask[b, t]]
    expected = sum(brute_chamfer(a, c, squared) for a, c in pairs) / len(pairs)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    perm = torch.randperm(k, generator=gen)
    shuffled = pred.view(2, 5, k, 3)[:, :, perm].reshape(2, 5, k * 3)
    assert target.loss(shuffled, true, mask).item() == pytest.approx(loss.item(), rel=1e-6)
    # Unmasked tokens do not count.
    changed = true.clone()
    changed[0, 1] += 100.0
    assert target.loss(pred, changed, mask).item() == pytest.approx(loss.item(), rel=1e-6)


def test_chamfer_gradient_is_finite_where_points_coincide():
    true = torch.randn(1, 2, 12)
    pred = true.clone().requires_grad_(True)  # every distance to the nearest point is exactly 0
    for squared in (True, False):
        loss = ChamferTarget(squared).loss(pred, true, torch.ones(1, 2))
        (grad,) = torch.autograd.grad(loss, pred)
        assert loss.item() == 0.0 and torch.isfinite(grad).all()


def test_untokenize_gives_back_the_grouped_input_points():
    tok = PointGroupTokenizer(num_points=128, groups=8, group_size=10, embed_dim=32, pointnet_width=16)
    x = torch.rand(2, 128, 3)
    tokens = tok.tokenize(x)
    assert tokens.patches.shape == (2, 8, 30) and tokens.where.shape == (2, 8, 3) and tokens.weights is None
    points = tok.untokenize(tokens.patches, tokens.where)  # B×(G·K)×3
    assert points.shape == (2, 80, 3)
    members = knn_group(x, tokens.where, 10)
    for b in range(2):
        torch.testing.assert_close(points[b], x[b][members[b].flatten()])
        # Centres are input points, chosen by FPS.
        torch.testing.assert_close(tokens.where[b], x[b][farthest_point_sample(x[b : b + 1], 8)[0]])


def test_loss_is_invariant_to_the_order_of_input_points():
    """Same centres (the first point stays first, so FPS starts there), same groups, same loss."""
    torch.manual_seed(0)
    model = point_model().eval()
    x = torch.randn(3, 256, 3)
    perm = torch.cat([torch.zeros(1, dtype=torch.long), 1 + torch.randperm(255)])
    noise = torch.rand(3, model.num_tokens)
    with torch.no_grad():
        a = model(x, noise=noise)
        b = model(x[:, perm], noise=noise)
    torch.testing.assert_close(model.tokenize(x[:, perm]).where, model.tokenize(x).where)
    assert a.loss.item() == pytest.approx(b.loss.item(), rel=1e-5)
    torch.testing.assert_close(model.features(x[:, perm]), model.features(x), rtol=1e-5, atol=1e-5)


def test_model_trains_and_reconstructs_points():
    torch.manual_seed(0)
    model = point_model()
    x = torch.randn(2, 256, 3)
    out = model(x)
    assert out.pred.shape == (2, 16, 48) and int(out.mask.sum()) == 2 * 10  # 0.6 of 16 groups masked, rounded
    out.loss.backward()
    assert all(p.grad is not None for p in model.tokenizer.parameters())
    recon = model.eval().reconstruct(x, generator=torch.Generator().manual_seed(0))
    assert recon["reconstruction"].shape == (2, 256, 3)


def test_bad_input_and_config_are_named():
    with pytest.raises(ConfigError, match="model.tokenizer_options.groupz"):
        point_model(tokenizer_options={"groupz": 4})
    with pytest.raises(ConfigError, match="model.tokenizer_options"):
        point_model(input_size=[8, 3])  # fewer points than 16 groups
    with pytest.raises(ConfigError, match="model.input_size"):
        point_model(input_size=[256, 256])
    model = point_model()
    with pytest.raises(ValueError, match="NaN"):
        model(torch.full((1, 256, 3), float("nan")))
    with pytest.raises(ValueError, match="B×N×3"):
        model(torch.zeros(1, 3, 256))
