"""Does the encoder know something? kNN, linear probe and fine-tuning accuracy.

kNN and the linear probe use frozen pooled features; fine-tuning trains the
whole encoder with MAE's layer-wise learning-rate decay.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from mimsdk.adapter import get_adapter
from mimsdk.errors import ConfigError, DataError
from mimsdk.evaluate import extract_features, masked_loss
from mimsdk.labels import LABEL_COLUMN
from mimsdk.model import MaskedAutoencoder, create_model

METHODS = ("knn", "linear", "finetune")


class SingleSampleWarning(UserWarning):
    """A probe's data hold classes with a single sample, so its accuracy cannot be read."""


def knn_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Weighted kNN on cosine similarity (k=20, weights exp(sim/T), as in DINO's and MAE's kNN monitors)."""
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    k = min(k, train_x.shape[0])
    classes = int(max(train_y.max(), test_y.max())) + 1
    sims, idx = (test_x @ train_x.T).topk(k, dim=1)  # N×k
    votes = torch.zeros(test_x.shape[0], classes).scatter_add_(1, train_y[idx], (sims / temperature).exp())
    return (votes.argmax(1) == test_y).float().mean().item()


def linear_probe_accuracy(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
    epochs: int = 300, lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0,
) -> float:  # fmt: skip
    """Logistic regression on standardised frozen features (MAE's probe: BatchNorm without affine, then linear)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(seed)
    head = nn.Linear(train_x.shape[1], int(train_y.max()) + 1)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(epochs):  # full batch: the probe sets are small
        opt.zero_grad()
        F.cross_entropy(head(train_x), train_y).backward()
        opt.step()
    with torch.no_grad():
        return (head(test_x).argmax(1) == test_y).float().mean().item()


class Classifier(nn.Module):
    """MAE's fine-tuning model: encoder on all tokens, mean pool, LayerNorm, linear head."""

    def __init__(self, mae: MaskedAutoencoder, num_classes: int) -> None:
        super().__init__()
        self.tokenizer, self.pos, self.encoder = mae.tokenizer, mae.pos, mae.encoder
        dim = mae.encoder.dim
        self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tok = self.tokenizer.tokenize(x)
        tokens = self.tokenizer.embed(tok.patches) + self.pos(tok.where)
        latent = self.encoder(tokens)
        return self.head(self.fc_norm(latent[:, self.encoder.num_prefix :].mean(1)))


def layer_decay_groups(model: Classifier, lr: float, weight_decay: float, decay: float) -> list[dict]:
    """Parameter groups with lr × decay^(depth − layer): embeddings lowest, head highest (MAE's fine-tuning)."""
    depth = len(model.encoder.blocks)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if name.startswith(("tokenizer.", "pos.")) or name == "encoder.cls_token":
            layer = 0
        elif name.startswith("encoder.blocks."):
            layer = int(name.split(".")[2]) + 1
        else:
            layer = depth + 1
        no_decay = param.ndim <= 1 or name.endswith("cls_token")
        key = (layer, no_decay)
        group = groups.setdefault(
            key,
            {"params": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": decay ** (depth + 1 - layer)},
        )
        group["params"].append(param)
    for group in groups.values():
        group["lr"] = lr * group["lr_scale"]
    return list(groups.values())


def finetune_accuracy(
    mae: MaskedAutoencoder, train_set, test_set, num_classes: int,
    epochs: int = 10, batch_size: int = 64, lr: float = 1e-3, layer_decay: float = 0.75,
    weight_decay: float = 0.05, seed: int = 0,
) -> float:  # fmt: skip
    """Fine-tune a copy of the encoder end to end (AdamW, layer-wise lr decay, cosine) and score ``test_set``."""
    torch.manual_seed(seed)
    device = next(mae.parameters()).device
    model = Classifier(copy.deepcopy(mae), num_classes).to(device)
    opt = torch.optim.AdamW(layer_decay_groups(model, lr, weight_decay, layer_decay), betas=(0.9, 0.999))
    loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=len(train_set) > batch_size)
    total = max(1, epochs * len(loader))
    step = 0
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            scale = 0.5 * (1 + torch.cos(torch.tensor(step / total * torch.pi))).item()
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"] * scale
            loss = F.cross_entropy(model(x.to(device)), torch.as_tensor(y).to(device), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    model.eval()
    correct = count = 0
    with torch.no_grad():
        for x, y in DataLoader(test_set, batch_size=batch_size):
            correct += (model(x.to(device)).argmax(1).cpu() == torch.as_tensor(y)).sum().item()
            count += len(y)
    return correct / max(1, count)


def read_dataset(
    model: MaskedAutoencoder,
    path: str | Path,
    labels: str | None = None,
    train: bool = False,
    label_column: str | None = None,
):
    """Files at ``path`` read the way ``model`` was trained (its adapter and stored data settings).

    ``labels`` is a CSV of paths and labels; ``label_column`` names its column of labels (default ``label``).
    Only an adapter with a ``label_column`` option (``data.options.label_column``: documents) reads another
    column; for the others any name but ``label`` is a ConfigError, as is a column without a CSV.
    """
    adapter = get_adapter(model.config.modality)
    data = adapter.data_config(model.config, labels)
    if label_column is not None:
        if not labels:
            raise ConfigError(f"label column {label_column!r} names a column of a labels CSV; give the CSV (--labels)")
        fields = {f.name for f in dataclasses.fields(adapter.Options)} if adapter.Options else set()
        if "label_column" in fields:
            data = dataclasses.replace(data, options={**data.options, "label_column": label_column})
        elif label_column != LABEL_COLUMN:
            raise ConfigError(
                f"label column {label_column!r}: the {adapter.name} adapter reads labels from a CSV's "
                f"'{LABEL_COLUMN}' column only (documents read another); rename the column"
            )
    return adapter.dataset(path, data, model.config, train=train)


def item_labels(dataset) -> list[int]:
    """The label of every sample: the dataset's ``labels`` list (per file or page) where it has one, else
    read item by item."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = [dataset[i][1] for i in range(len(dataset))]
    return [int(y) for y in labels]


def warn_single_samples(dataset, data: str | Path, limit: int = 8) -> list[str]:
    """Warn once, in one line, when classes of ``dataset`` hold a single sample; returns those classes.

    Split into a training and a held-out part, such a class is learnt from or tested on, never both (six
    video clips of six classes score kNN 0.000 whatever the encoder); with held-out data apart, one sample
    is all there is to learn the class from. Either way the accuracy says nothing about the encoder.
    """
    counts = Counter(y for y in item_labels(dataset) if y >= 0)
    single = [dataset.classes[y] for y in sorted(counts) if counts[y] == 1]
    if single:
        shown = ", ".join(single[:limit]) + (f" and {len(single) - limit} more" if len(single) > limit else "")
        warnings.warn(
            f"{data}: {len(single)} of {len(counts)} classes have a single sample ({shown}); "
            "the probe's accuracy cannot be read (give every class several samples)",
            SingleSampleWarning,
            stacklevel=3,
        )
    return single


def _split(dataset, fraction: float, seed: int):
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    cut = int(len(order) * (1 - fraction))
    return torch.utils.data.Subset(dataset, order[:cut]), torch.utils.data.Subset(dataset, order[cut:])


def probe_model(
    model: MaskedAutoencoder,
    data: str | Path,
    eval_data: str | Path | None = None,
    labels: str | None = None,
    methods: tuple[str, ...] | list[str] = METHODS,
    epochs: int = 10,
    seed: int = 0,
    label_column: str | None = None,
    report: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Accuracy of ``model``'s encoder under each probe method; 20 % of ``data`` held out if ``eval_data`` is None.

    ``labels`` (a CSV) and ``label_column`` as in :func:`read_dataset`. Classes of ``data`` with a single
    sample give one :class:`SingleSampleWarning` naming them. ``report`` is told what starts, as it starts.
    """
    report = report or (lambda text: None)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"probe methods {unknown}; expected some of {', '.join(METHODS)}")
    train_view = read_dataset(model, data, labels, label_column=label_column)
    if not train_view.classes:
        raise DataError(f"{data} has no labels: use class sub-folders or --labels CSV")
    warn_single_samples(train_view, data)
    num_classes = len(train_view.classes)
    if eval_data:
        test_view = read_dataset(model, eval_data, labels, label_column=label_column)
        train_aug = read_dataset(model, data, labels, train=True, label_column=label_column)
    else:
        train_view, test_view = _split(train_view, 0.2, seed)
        train_aug = train_view
    out: dict[str, float] = {}
    sizes = f"{len(train_view)} training and {len(test_view)} test samples in {num_classes} classes"
    if {"knn", "linear"} & set(methods):
        report(f"features of {sizes} ...")
        train_x, train_y = extract_features(model, train_view)
        test_x, test_y = extract_features(model, test_view)
        if "knn" in methods:
            out["knn"] = knn_accuracy(train_x, train_y, test_x, test_y)
        if "linear" in methods:
            out["linear"] = linear_probe_accuracy(train_x, train_y, test_x, test_y, seed=seed)
    if "finetune" in methods:
        report(f"fine-tuning for {epochs} epochs on {len(train_aug)} samples ...")
        out["finetune"] = finetune_accuracy(model, train_aug, test_view, num_classes, epochs=epochs, seed=seed)
    return out


def random_like(model: MaskedAutoencoder, seed: int = 0) -> MaskedAutoencoder:
    """An untrained model of ``model``'s configuration, the baseline a probe compares against."""
    torch.manual_seed(seed)
    return create_model(model.config).eval()


def held_out_metrics(
    model: MaskedAutoencoder, view_set: Any, eval_set: Any, batch_size: int, max_batches: int
) -> dict[str, float]:
    """What a run monitors: the masked loss on ``eval_set`` and, when both sets are labelled, the kNN
    accuracy of ``eval_set`` against the training data's deterministic view ``view_set``."""
    result = {"eval_loss": masked_loss(model, eval_set, batch_size, max_batches)}
    if view_set.classes and eval_set.classes:
        train_x, train_y = extract_features(model, view_set, batch_size)
        test_x, test_y = extract_features(model, eval_set, batch_size)
        result["knn_acc"] = knn_accuracy(train_x, train_y, test_x, test_y)
    return result
