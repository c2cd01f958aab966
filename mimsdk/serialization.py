"""Model directories: ``config.json`` + ``model.safetensors``, written so a kill never leaves a half file.

A model directory is what :func:`save_model` writes and :func:`read_model` reads; a run directory
holds one under ``model/``. Only safetensors are read: nothing is unpickled.

This is core: it reads and writes folders on disk and knows nothing of the Hub. ``mimsdk.hub``
builds on it (``load_model`` takes a Hub id as well, ``save_pretrained`` adds a model card).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mimsdk.atomic import atomic_write
from mimsdk.config import ModelConfig, from_mapping
from mimsdk.errors import ConfigError
from mimsdk.model import MaskedAutoencoder
from mimsdk.version import __version__

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# What an encoder-only checkpoint keeps: enough for ``encode`` / ``features``.
ENCODER_PREFIXES = ("tokenizer.", "pos.", "encoder.")
# Weight files mimsdk never opens: loading them means unpickling, which can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


class _AbsentDecoder(torch.nn.Module):
    """Stands in for the decoder of a model loaded from an encoder-only checkpoint."""

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise RuntimeError(
            "this model was loaded from an encoder-only checkpoint (config.json has encoder_only: true): it has no "
            "decoder, so forward() and reconstruct() cannot run; use encode() or features(), or load a full checkpoint"
        )


def is_encoder_only(model: MaskedAutoencoder) -> bool:
    """True for a model whose decoder was left out (loaded from an encoder-only checkpoint)."""
    return isinstance(model.decoder, _AbsentDecoder)


def drop_decoder(model: MaskedAutoencoder) -> MaskedAutoencoder:
    """Replace the decoder by a stand-in whose forward raises a clear error; returns ``model``."""
    model.decoder = _AbsentDecoder()
    return model


def config_dict(model: MaskedAutoencoder, encoder_only: bool = False) -> dict[str, Any]:
    """config.json's content: format version, the writing mimsdk's version, the whole ModelConfig."""
    out = {
        "format_version": FORMAT_VERSION,
        "mimsdk_version": __version__,
        "model": dataclasses.asdict(model.config),
    }
    if encoder_only or is_encoder_only(model):
        out["encoder_only"] = True
    return out


def save_model(model: MaskedAutoencoder, directory: str | Path, *, encoder_only: bool = False) -> Path:
    """Write ``model`` to ``directory`` (weights first, config last, each atomically).

    ``encoder_only`` keeps the tokenizer, positions and encoder and marks config.json so.
    """
    directory = Path(directory)
    encoder_only = encoder_only or is_encoder_only(model)
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if not encoder_only or k.startswith(ENCODER_PREFIXES)
    }
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, p, metadata={"format": "pt"}))
    text = json.dumps(config_dict(model, encoder_only), indent=2)
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


def read_header(directory: Path) -> dict[str, Any]:
    """config.json of a model directory, parsed, its format version checked."""
    path = directory / CONFIG_NAME
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object with format_version and model")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ConfigError(
            f"{path}: format_version {version!r} is not one this mimsdk reads (expected {FORMAT_VERSION})"
        )
    return data


def read_model(path: str | Path, device: str | torch.device = "cpu") -> MaskedAutoencoder:
    """A model from a local model directory or run directory, in eval mode.

    The core reader; users call ``mimsdk.load_model`` (:func:`mimsdk.hub.load_model`), which also
    takes a Hub repo id. Weights must fit the config exactly: no missing, extra or reshaped tensors.
    """
    directory = model_directory(path)
    header = read_header(directory)
    model = MaskedAutoencoder(from_mapping(ModelConfig, header.get("model"), "model."))
    encoder_only = bool(header.get("encoder_only", False))
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        unsafe = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if unsafe:
            raise FileNotFoundError(
                f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}, only {', '.join(unsafe)}: mimsdk reads "
                "safetensors only, because loading pickle files can run arbitrary code"
            )
        raise FileNotFoundError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    try:
        state = load_file(weights)
    except SafetensorError as err:
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from err
    if encoder_only:
        drop_decoder(model)
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
