"""Continued pre-training: a run that starts from a trained model's configuration and weights.

The model's config replaces the recipe's model section (explicit model overrides apply on top), its
metadata travels on, and the data are normalised as the model was unless the recipe says otherwise.
An encoder-only model gets a freshly initialised decoder.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch

from mimsdk.config import ModelConfig, Recipe, from_mapping, merge
from mimsdk.errors import ConfigError
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import is_encoder_only

log = logging.getLogger(__name__)


@dataclass
class StartingPoint:
    """The weights a run starts from (on the CPU), and whether they lack a decoder."""

    state: dict[str, torch.Tensor]
    encoder_only: bool


def adopt(
    recipe: Recipe, source: MaskedAutoencoder, overrides: dict[str, Any], base_model: str | None = None
) -> StartingPoint:
    """Make ``source``'s config (plus ``overrides``, model fields) the recipe's model section, in place.

    ``base_model`` (a Hub repo id) is recorded in the model's metadata, for its card.
    """
    model = from_mapping(ModelConfig, merge(dataclasses.asdict(source.config), overrides), "model.")
    if model.modality != recipe.data.modality:
        raise ConfigError(
            f"the model to continue from is for {model.modality!r} but data.modality is {recipe.data.modality!r}"
        )
    if base_model is not None:
        model.metadata["base_model"] = base_model
    # Data read as the model was trained: its normalisation, unless the recipe sets one.
    if recipe.data.mean is None and model.metadata.get("mean") is not None:
        recipe.data.mean = list(model.metadata["mean"])
    if recipe.data.std is None and model.metadata.get("std") is not None:
        recipe.data.std = list(model.metadata["std"])
    recipe.model = model
    state = {k: v.detach().cpu() for k, v in source.state_dict().items()}
    return StartingPoint(state, is_encoder_only(source))


def load_into(model: MaskedAutoencoder, start: StartingPoint) -> None:
    """Load the starting weights into the run's freshly built ``model``; a mismatch names the tensor."""
    expected = model.state_dict()
    for key, value in start.state.items():
        if key in expected and value.shape != expected[key].shape:
            raise ConfigError(
                f"the model to continue from does not fit the model section: {key} has shape "
                f"{tuple(value.shape)}, the model section makes {tuple(expected[key].shape)}"
            )
    missing, unexpected = model.load_state_dict(start.state, strict=False)
    allowed = [k for k in missing if start.encoder_only and k.startswith("decoder.")]
    if unexpected or len(allowed) != len(missing):
        raise ConfigError(
            f"the model to continue from does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if allowed:
        log.warning("continuing from an encoder-only model: the decoder starts from a fresh initialisation")
