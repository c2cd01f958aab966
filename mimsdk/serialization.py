"""Model directories: ``config.json`` + ``model.safetensors``, written so a kill never leaves a half file.

A model directory is what ``save_model`` writes and ``load_model`` reads; a run
directory holds one under ``model/``. Only safetensors are read: nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mimsdk.config import ConfigError, ModelConfig, from_mapping
from mimsdk.model import MaskedAutoencoder

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move it over ``path`` in one rename, after fsync.

    The previous file stays whole until the new one is complete on disk.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def config_dict(model: MaskedAutoencoder) -> dict[str, Any]:
    from mimsdk import __version__

    return {"format_version": FORMAT_VERSION, "mimsdk_version": __version__, "model": dataclasses.asdict(model.config)}


def save_model(model: MaskedAutoencoder, directory: str | Path) -> Path:
    """Write ``model`` to ``directory`` (weights first, config last, each atomically)."""
    directory = Path(directory)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": "pt"}))
    text = json.dumps(config_dict(model), indent=2)
    atomic_write(directory / CONFIG_NAME, lambda p: Path(p).write_text(text))
    return directory


def model_directory(path: str | Path) -> Path:
    """The model directory in ``path``: itself, or ``path/model`` for a run directory."""
    path = Path(path)
    for candidate in (path, path / "model"):
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"model path {path} does not exist")
    raise FileNotFoundError(f"{path} holds no {CONFIG_NAME}; expected a model directory or a run directory with model/")


def read_config(directory: Path) -> ModelConfig:
    path = directory / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{path}: format_version {version!r} is not one this mimsdk reads (expected {FORMAT_VERSION})"
        )
    return from_mapping(ModelConfig, data.get("model"), "model.")


def load_model(path: str | Path, device: str | torch.device = "cpu") -> MaskedAutoencoder:
    """A model from a model directory or a run directory, in eval mode."""
    directory = model_directory(path)
    model = MaskedAutoencoder(read_config(directory))
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    try:
        state = load_file(weights)
    except SafetensorError as err:
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, value in state.items():
        if value.shape != expected[key].shape:
            raise ValueError(
                f"{weights}: {key} has shape {tuple(value.shape)}, the config expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict(state)
    return model.to(device).eval()
