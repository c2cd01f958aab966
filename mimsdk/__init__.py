"""mimsdk: masked-autoencoder foundation models that adapt to your domain."""

__version__ = "0.1.0"

from mimsdk.config import ConfigError, DataConfig, ModelConfig, Recipe, TrainConfig, list_recipes, load_recipe
from mimsdk.data import DataError
from mimsdk.model import MAEOutput, MaskedAutoencoder, create_model
from mimsdk.serialization import load_model, save_model
from mimsdk.trainer import PretrainResult, pretrain

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
    "create_model",
    "list_recipes",
    "load_model",
    "load_recipe",
    "pretrain",
    "save_model",
]
