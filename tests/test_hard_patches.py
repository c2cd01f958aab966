import torch

from mimsdk import create_model
from mimsdk.variants.hard_patches import ranking_accuracy, ranking_loss


def test_ranking_loss_and_accuracy_on_known_orders():
    loss = torch.tensor([[0.1, 0.5, 0.9, 0.3]])
    mask = torch.ones(1, 4)
    assert ranking_accuracy(loss * 2, loss, mask) == 1.0
    assert ranking_accuracy(-loss, loss, mask) == 0.0
    assert ranking_loss(loss * 50, loss, mask) < ranking_loss(-loss * 50, loss, mask)
    # unmasked tokens take no part
    assert ranking_accuracy(torch.tensor([[0.1, 0.5, 0.9, 9.0]]), loss, torch.tensor([[1.0, 1.0, 1.0, 0.0]])) == 1.0


def test_hpm_loss_predictor_learns_to_rank_and_masks_what_it_predicts_hardest(tiny_kwargs):
    torch.manual_seed(0)
    model = create_model(**tiny_kwargs, masker="hpm", masker_options={"alpha": 0.5})
    # A fixed batch whose left half is noise (hard to predict) and right half flat (easy).
    x = torch.zeros(8, 3, 32, 32)
    x[..., :16] = torch.rand(8, 3, 32, 16, generator=torch.Generator().manual_seed(1))
    x[..., 16:] = 0.5 + 0.01 * torch.rand(8, 3, 32, 16, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    noise = torch.rand(8, 64, generator=torch.Generator().manual_seed(3))
    accuracy = []
    for _ in range(30):
        model.progress = 0.0  # random masks while the predictor learns
        out = model(x, noise=noise)
        accuracy.append(ranking_accuracy(out.difficulty, out.token_loss, out.mask))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert sum(accuracy[-5:]) / 5 > sum(accuracy[:5]) / 5 + 0.1, accuracy
    # Late in training (progress 1) half the masked tokens are the ones it predicts hardest.
    model.progress = 1.0
    tokens = model.embed(model.tokenize(x).patches)
    difficulty = model.masker.predictor(model.hidden_all_visible(tokens))
    hard = model.masker.num_hard(64, 1.0)
    assert hard == round(0.5 * 48)
    out = model(x, noise=noise)
    top = torch.topk(difficulty, hard, dim=1).indices
    assert torch.all(torch.gather(out.mask, 1, top) == 1)
    assert out.mask.sum(1).eq(48).all()
