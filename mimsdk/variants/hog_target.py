"""HOG features as the target (MaskFeat, Wei et al. 2022)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from mimsdk.registry import TARGETS
from mimsdk.target import Target


@dataclass
class HOGOptions:
    """``model.target_options`` of the ``hog`` target: orientation bins and cell side in pixels (MaskFeat's)."""

    bins: int = 9
    cell: int = 8


class HOGTarget(Target):
    """Histograms of oriented gradients per patch, after MaskFeat (Wei et al. 2022).

    Gradients are central differences over the whole image (zero on its border),
    orientations unsigned in [0, 180) cast into ``bins`` equal bins, magnitudes
    averaged per ``cell``×``cell`` cell (8 pixels, or the patch's side when that
    is not a multiple of 8) and each cell's histogram L2-normalised;
    per channel. This is scikit-image's ``hog(..., cells_per_block=(1, 1),
    block_norm="L2")`` with MaskFeat's defaults (9 bins, 8-pixel cells).

    Shapes: patches B×L×(p·p·C) of a 2D grid -> B×L×((p/cell)²·C·bins).
    """

    pixels = False
    per_value = False
    name = "hog"

    def __init__(self, tokenizer: Any, bins: int = 9, cell: int = 8, eps: float = 1e-5) -> None:
        if getattr(tokenizer, "ndim", None) != 2 or len(set(tokenizer.patch_size)) != 1:
            raise ValueError(
                f"the hog target needs square 2D patches; got patch size {getattr(tokenizer, 'patch_size', None)}"
            )
        super().__init__()
        # MaskFeat's 8-pixel cells where the patch holds whole cells; smaller patches are one cell each.
        cell = math.gcd(cell, tokenizer.patch_size[0])
        self.bins, self.cell, self.eps = bins, cell, eps
        # The tokenizer's geometry and its way back to images, not the tokenizer itself: as a submodule
        # its weights would enter the state dict a second time.
        self.in_chans, self.grid_size, self.unpatchify = tokenizer.in_chans, tokenizer.grid_size, tokenizer.unpatchify
        self.cells = tuple(p // cell for p in tokenizer.patch_size)

    def dim(self, patch_dim: int) -> int:
        return math.prod(self.cells) * self.in_chans * self.bins

    def histograms(self, image: torch.Tensor) -> torch.Tensor:
        """B×C×H×W -> B×C×bins×(H/cell)×(W/cell), each cell's histogram L2-normalised."""
        image = image.float()
        g_row = torch.zeros_like(image)
        g_col = torch.zeros_like(image)
        g_row[..., 1:-1, :] = image[..., 2:, :] - image[..., :-2, :]
        g_col[..., :, 1:-1] = image[..., :, 2:] - image[..., :, :-2]
        magnitude = torch.hypot(g_row, g_col)
        orientation = torch.rad2deg(torch.atan2(g_row, g_col)) % 180.0
        index = (orientation / (180.0 / self.bins)).floor().long().clamp_(0, self.bins - 1)
        b, c, h, w = image.shape
        votes = torch.zeros(b, c, self.bins, h, w, device=image.device)
        votes.scatter_(2, index[:, :, None], magnitude[:, :, None])
        hist = F.avg_pool2d(votes.reshape(b, c * self.bins, h, w), self.cell).reshape(b, c, self.bins, -1)
        hist = hist / (hist.pow(2).sum(dim=2, keepdim=True) + self.eps**2).sqrt()
        return hist.reshape(b, c, self.bins, h // self.cell, w // self.cell)

    def forward(
        self, patches: torch.Tensor, weights: torch.Tensor | None = None, where: torch.Tensor | None = None
    ) -> torch.Tensor:
        hist = self.histograms(self.unpatchify(patches))  # B×C×K×(H/c)×(W/c)
        b, c, k = hist.shape[:3]
        (gh, gw), (ch, cw) = self.grid_size, self.cells
        hist = hist.reshape(b, c, k, gh, ch, gw, cw).permute(0, 3, 5, 4, 6, 1, 2)  # B, gh, gw, ch, cw, C, K
        return hist.reshape(b, gh * gw, -1)



@TARGETS.register("hog", HOGOptions)
def hog(tokenizer: Any, width: int = 0, bins: int = 9, cell: int = 8) -> HOGTarget:
    return HOGTarget(tokenizer, bins=bins, cell=cell)
