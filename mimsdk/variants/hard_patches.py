"""Hard patches mining (Wang et al. 2023, "Hard Patches Mining"): mask what a learned predictor expects to be hard.

The predictor reads the decoder's last hidden state of each masked token and
outputs a score. It is trained with HPM's relative objective: for every pair of
masked tokens of a sample, the one with the larger true reconstruction loss
should score higher (binary cross-entropy on the score difference). Only the
order matters, so the predictor need not track the loss's scale as training
lowers it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mimsdk.masker import RandomMasker
from mimsdk.registry import MASKERS

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


@dataclass
class HPMOptions:
    """``model.masker_options`` of the ``hpm`` masker: the largest share of masked tokens chosen as hardest
    (reached at the end of training), and the weight of the predictor's ranking loss."""

    alpha: float = 0.5
    weight: float = 1.0


@MASKERS.register("hpm", HPMOptions)
class HardPatchMasker(RandomMasker):
    """Masks the tokens a learned predictor expects to be hardest, after HPM (Wang et al. 2023).

    The loss predictor (made at ``bind``, at the decoder's width) scores every token; a share of
    the masked tokens rising linearly from 0 to ``alpha`` over training (easy to hard) is taken
    from the highest scores, the rest at random. ``weight`` scales the predictor's ranking loss
    in the total loss.
    """

    name = "hpm"

    def __init__(self, ratio: float, grid_size: Sequence[int] | None = None, alpha: float = 0.5, weight: float = 1.0):
        super().__init__(ratio, grid_size)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"model.masker_options.alpha must be in [0, 1], got {alpha}")
        self.alpha, self.weight = alpha, weight
        self.predictor: LossPredictor | None = None

    def bind(self, model: nn.Module) -> None:
        self.predictor = LossPredictor(model.config.decoder_dim)

    def num_hard(self, num_tokens: int, progress: float) -> int:
        return round(self.alpha * min(1.0, max(0.0, progress)) * (num_tokens - self.num_visible(num_tokens)))

    def harden(self, noise: torch.Tensor, difficulty: torch.Tensor, progress: float) -> torch.Tensor:
        """noise B×L, difficulty B×L -> noise whose top ``num_hard`` difficulties sort last (masked)."""
        hard = self.num_hard(noise.shape[1], progress)
        if hard == 0:
            return noise
        top = torch.topk(difficulty, hard, dim=1).indices
        return noise.scatter(1, top, 2.0 + torch.gather(noise, 1, top))

    def guide(self, noise: torch.Tensor, hidden: Callable[[], torch.Tensor], progress: float) -> torch.Tensor:
        """Harden ``noise`` B×L with the predictor's scores of the decoder's hidden state, every token visible."""
        with torch.no_grad():
            return self.harden(noise, self.predictor(hidden()), progress)

    def auxiliary_loss(
        self, hidden: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, scored: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted ranking loss, plus the predicted difficulty and the true loss of the scored tokens."""
        token_loss = ((pred.detach().float() - target.float()) ** 2).mean(-1)  # B×L'
        score = self.predictor(hidden)
        ranking = ranking_loss(score, token_loss, scored)
        info = {"ranking_loss": ranking, "difficulty": score.detach(), "token_loss": token_loss}
        return self.weight * ranking, info
