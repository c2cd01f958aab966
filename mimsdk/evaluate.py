"""Label-free and labelled checks of a model on a dataset."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from mimsdk.model import MaskedAutoencoder


def _loader(dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)


@torch.no_grad()
def masked_loss(
    model: MaskedAutoencoder, dataset, batch_size: int = 64, max_batches: int | None = None, seed: int = 0
) -> float:
    """Mean masked-token loss over ``dataset`` (deterministic view) under a fixed mask seed."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for i, (x, _) in enumerate(_loader(dataset, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        noise = model.masker.noise(x.shape[0], model.num_tokens, generator).to(device)
        out = model(x.to(device), noise=noise, decode_all=True)
        total += out.loss.item() * x.shape[0]
        count += x.shape[0]
    return total / max(1, count)


@torch.no_grad()
def extract_features(
    model: MaskedAutoencoder, dataset, batch_size: int = 64, pool: str = "mean", num_workers: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled encoder features N×D and labels N of a dataset, in its order."""
    model.eval()
    device = next(model.parameters()).device
    feats, labels = [], []
    for x, y in _loader(dataset, batch_size, num_workers):
        feats.append(model.features(x.to(device), pool=pool).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(feats), torch.cat(labels)
