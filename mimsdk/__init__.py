"""mimsdk: masked-autoencoder foundation models that adapt to your domain.

The core (config, model and its parts, data, serialization) is imported here; ``pretrain`` and
``load_model``, which reach the Hub, are imported on first use, so ``import mimsdk.model`` never
loads ``huggingface_hub``.
"""

from typing import Any

from mimsdk.config import DataConfig, ModelConfig, Recipe, TrainConfig, list_recipes, load_recipe
from mimsdk.errors import ConfigError, DataError
from mimsdk.model import MAEOutput, MaskedAutoencoder, create_model
from mimsdk.serialization import save_model
from mimsdk.version import __version__

__all__ = [
    "ConfigError",
    "DataConfig",
    "DataError",
    "MAEOutput",
    "MaskedAutoencoder",
    "ModelConfig",
    "PretrainResult",
    "Recipe",
    "TrainConfig",
    "__version__",
    "create_model",
    "list_recipes",
    "load_model",
    "load_recipe",
    "pretrain",
    "save_model",
]


def __getattr__(name: str) -> Any:
    if name in ("pretrain", "PretrainResult"):
        from mimsdk import pretraining

        return getattr(pretraining, name)
    if name == "load_model":  # a run or model directory, or a Hub repo id
        from mimsdk.hub import load_model

        return load_model
    raise AttributeError(f"module 'mimsdk' has no attribute {name!r}")
