"""HPM's loss predictor: learn which tokens are hard, by ranking (Wang et al. 2023, "Hard Patches Mining").

The predictor reads the decoder's last hidden state of each masked token and
outputs a score. It is trained with HPM's relative objective: for every pair of
masked tokens of a sample, the one with the larger true reconstruction loss
should score higher (binary cross-entropy on the score difference). Only the
order matters, so the predictor need not track the loss's scale as training
lowers it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MAX_PAIRED = 256  # tokens per sample paired all-with-all; beyond, a random subset


class LossPredictor(nn.Module):
    """Score per token from the decoder's hidden state: B×L×Dd -> B×L."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden).squeeze(-1)


def _pairs(score: torch.Tensor, loss: torch.Tensor, mask: torch.Tensor):
    """Score and loss differences over ordered pairs of masked tokens: B×M×M each, and the pair weights."""
    if score.shape[1] > MAX_PAIRED:
        keep = torch.argsort(torch.rand_like(mask) - mask, dim=1)[:, :MAX_PAIRED]  # masked tokens first
        score, loss, mask = (torch.gather(t, 1, keep) for t in (score, loss, mask))
    ds = score[:, :, None] - score[:, None, :]
    dl = loss[:, :, None] - loss[:, None, :]
    weight = mask[:, :, None] * mask[:, None, :] * (dl != 0)
    return ds, dl, weight


def ranking_loss(score: torch.Tensor, loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """HPM's relative loss. score, loss, mask: B×L (mask 1 on the tokens to rank); loss is detached."""
    ds, dl, weight = _pairs(score.float(), loss.detach().float(), mask.float())
    bce = F.binary_cross_entropy_with_logits(ds, (dl > 0).float(), reduction="none")
    return (bce * weight).sum() / weight.sum().clamp_min(1.0)


@torch.no_grad()
def ranking_accuracy(score: torch.Tensor, loss: torch.Tensor, mask: torch.Tensor) -> float:
    """Share of pairs of masked tokens whose scores are ordered as their true losses are."""
    ds, dl, weight = _pairs(score.float(), loss.float(), mask.float())
    right = ((ds > 0) == (dl > 0)).float()
    return float((right * weight).sum() / weight.sum().clamp_min(1.0))
