"""EMA teacher: latent targets from a moving average of the student encoder (data2vec).

The teacher sees every token; its target for a token is the average of its top
``top_k`` block outputs, each layer-normalised without affine parameters, then
normalised once more (Baevski et al. 2022, "data2vec", §3.3). The safeguards the
latent-MIM literature gives against collapse are all here: the teacher takes no
gradient, it moves slowly (momentum rising from ``momentum[0]`` to
``momentum[1]``), and the per-layer normalisation keeps targets from shrinking
to a constant. ``last_std`` records the spread of the last targets to watch for it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mimsdk.registry import TARGETS
from mimsdk.target import Target


class EMATeacher(nn.Module):
    """A frozen copy of (tokenizer, positions, encoder) that follows the student by EMA.

    Args:
        tokenizer, pos, encoder: the student's modules (copied, not shared).
        top_k: how many of the last blocks are averaged into the target.
        momentum: (start, end) EMA momentum; it rises linearly over training.

    Shapes: ``forward(tokens)`` with tokens.patches B×L×P -> B×L×D targets.
    """

    def __init__(
        self, tokenizer: nn.Module, pos: nn.Module, encoder: nn.Module, top_k: int = 6, momentum=(0.999, 0.9999)
    ) -> None:
        super().__init__()
        self.tokenizer, self.pos, self.encoder = (copy.deepcopy(m) for m in (tokenizer, pos, encoder))
        self.top_k = max(1, min(top_k, len(self.encoder.blocks)))
        self.momentum_range = tuple(momentum)
        self.requires_grad_(False)
        self.register_buffer("last_std", torch.zeros(()), persistent=False)

    def momentum(self, progress: float) -> float:
        """EMA momentum at ``progress`` in [0, 1] of training."""
        start, end = self.momentum_range
        return start + (end - start) * min(1.0, max(0.0, progress))

    @torch.no_grad()
    def update(self, student: list[nn.Module], progress: float) -> None:
        """teacher ← m·teacher + (1 − m)·student, for every parameter and buffer that is a float."""
        m = self.momentum(progress)
        ours = [p for module in (self.tokenizer, self.pos, self.encoder) for p in module.state_dict().values()]
        theirs = [p for module in student for p in module.state_dict().values()]
        for t, s in zip(ours, theirs, strict=True):
            if t.is_floating_point():
                t.mul_(m).add_(s.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def forward(self, patches: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        x = self.tokenizer.embed(patches) + self.pos(where)
        depth, p = len(self.encoder.blocks), self.encoder.num_prefix
        top = self.encoder.intermediates(x, list(range(max(depth - self.top_k, 0), depth)))  # the last top_k blocks
        layers = [F.layer_norm(h[:, p:].float(), h.shape[-1:]) for h in top]
        target = F.layer_norm(torch.stack(layers).mean(0), x.shape[-1:])
        self.last_std.copy_(target.std(dim=1).mean())
        return target


@dataclass
class EMALatentOptions:
    """``model.target_options`` of the ``ema_latent`` target (data2vec's values): the last ``top_k`` blocks are
    averaged, and the EMA momentum rises from ``momentum[0]`` to ``momentum[1]`` over training."""

    top_k: int = 6
    momentum: list[float] = field(default_factory=lambda: [0.999, 0.9999])


class LatentTarget(Target):
    """Features of an EMA teacher (data2vec), scored by MSE. The teacher is made at ``bind``, as a copy of
    the initialised student, and follows it after every optimiser step."""

    name = "ema_latent"

    def __init__(self, width: int, top_k: int = 6, momentum: list[float] | tuple[float, float] = (0.999, 0.9999)):
        super().__init__()
        if len(momentum) != 2 or not 0.0 <= momentum[0] <= momentum[1] <= 1.0:
            raise ValueError(f"model.target_options.momentum: expected [start, end] in [0, 1], got {momentum}")
        self.width, self.top_k, self.momentum = width, top_k, tuple(momentum)
        self.teacher: EMATeacher | None = None

    def dim(self, patch_dim: int) -> int:
        return self.width

    def bind(self, model: nn.Module) -> None:
        self.teacher = EMATeacher(model.tokenizer, model.pos, model.encoder, self.top_k, self.momentum)

    def after_step(self, model: nn.Module) -> None:
        self.teacher.update([model.tokenizer, model.pos, model.encoder], model.progress)

    def forward(
        self, patches: torch.Tensor, weights: torch.Tensor | None = None, where: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.teacher(patches, where)


@TARGETS.register("ema_latent", EMALatentOptions)
def ema_latent(tokenizer: Any, width: int, top_k: int = 6, momentum: list[float] | None = None) -> LatentTarget:
    return LatentTarget(width, top_k, momentum or (0.999, 0.9999))
