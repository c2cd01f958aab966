"""``pretrain``: the one call that starts, resumes or continues a pre-training run (see :mod:`mimsdk.trainer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mimsdk.config import Recipe, keyword_overrides, load_recipe, merge, parse_overrides
from mimsdk.loader_rate import LoaderRate, measure_loader
from mimsdk.model import MaskedAutoencoder
from mimsdk.trainer import PretrainResult, Trainer

__all__ = ["PretrainResult", "measure_data", "pretrain"]


def pretrain(
    recipe: str | Path | Recipe | dict = "quickstart",
    data: str | Path | dict | None = None,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overrides: list[str] | None = None,
    init: str | Path | MaskedAutoencoder | None = None,
    init_revision: str | None = None,
    **fields: Any,
) -> PretrainResult:
    """Pre-train a masked autoencoder.

    Args:
        recipe: a shipped recipe name (``mimsdk recipes``), a YAML path, a dict or a Recipe.
        data: training data path (sets ``data.path``), or a dict of data fields; None uses the recipe's
            path, or the shipped sample.
        out: run directory; None makes ``runs/<recipe>-<time>``.
        resume: continue the run in ``out`` from its last checkpoint, exactly.
        overrides: dotted ``key=value`` strings, as on the command line.
        init: continue pre-training from a model: a Hub repo id (``"user/name"``), a model or run
            directory, or a MaskedAutoencoder. The recipe's model section is replaced by that model's
            config (metadata kept); model fields given here as overrides still apply on top of it.
            Public MAE weights start a run too: a transformers ``ViTMAEForPreTraining`` or
            ``VideoMAEForPreTraining`` directory or Hub id (encoder and decoder), or a timm ViT in timm's
            Hub layout (encoder; the decoder starts fresh). Then the recipe's model section stays and must
            have their architecture (a mismatch is refused, naming both); other channels or input sizes
            adapt, each said in a log line; ``base_model`` in the metadata names where they came from.
        init_revision: the Hub revision of ``init``.
        **fields: recipe fields by name (``max_steps=50``) or by section (``train={...}``).

    >>> result = pretrain("quickstart", out=tmp / "run", max_steps=2, log_every=1)  # doctest: +SKIP
    """
    if resume:
        if out is None:
            raise ValueError("resume=True needs out= (the run directory to continue)")
        if init is not None:
            raise ValueError("init= starts a new run from a model; resume=True continues a run: pass one of them")
        changes = merge(parse_overrides(overrides), keyword_overrides(fields))
        return Trainer.resume(out, changes).fit()
    changes = recipe_changes(data, overrides, fields)
    cfg = load_recipe(recipe, changes)
    if init is None:
        return Trainer(cfg, out).fit()
    explicit = changes.get("model", {})
    return Trainer(cfg, out, init=init, init_revision=init_revision, init_overrides=explicit).fit()


def measure_data(
    recipe: str | Path | Recipe | dict = "quickstart",
    data: str | Path | dict | None = None,
    *,
    batches: int = 50,
    overrides: list[str] | None = None,
    **fields: Any,
) -> LoaderRate:
    """Time the recipe's data loader alone for ``batches`` batches (``mimsdk pretrain RECIPE --data-only``);
    arguments as :func:`pretrain`'s. Nothing is trained or written."""
    return measure_loader(load_recipe(recipe, recipe_changes(data, overrides, fields)), batches)


def recipe_changes(data: str | Path | dict | None, overrides: list[str] | None, fields: dict[str, Any]) -> dict:
    """The recipe changes that ``data``, dotted ``overrides`` and keyword ``fields`` ask for."""
    changes = merge(parse_overrides(overrides), keyword_overrides(fields))
    if isinstance(data, dict):  # pretrain(..., data={"batch_size": 8}): the data section
        changes.setdefault("data", {}).update(data)
    elif data is not None:
        changes.setdefault("data", {})["path"] = str(data)
    return changes
