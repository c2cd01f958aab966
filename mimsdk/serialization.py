"""Model directories: ``config.json`` + ``model.safetensors``, written so a kill never leaves a half file.

A model directory is what :func:`save_model` writes and :func:`read_model` reads; a run directory
holds one under ``model/``. Only safetensors are read: nothing is unpickled.

A config.json is checked before its model is built, since a crafted one (``depth: 10000``, an
``input_size`` of 100000²) would otherwise fill the memory: :func:`check_size` bounds its fields by
arithmetic alone, :func:`planned_shapes` then builds the model on PyTorch's ``meta`` device (shapes,
no storage) and bounds every tensor, and :func:`check_weights` compares those shapes with the
safetensors header, reading no tensor data. Only a model that fits its weights is built.

This is core: it reads and writes folders on disk and knows nothing of the Hub. ``mimsdk.hub``
builds on it (``load_model`` takes a Hub id as well, ``save_pretrained`` adds a model card).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from mimsdk.atomic import atomic_write
from mimsdk.config import ModelConfig, check_model, from_mapping
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

# Sane bounds on the model a config.json may describe, checked before anything is built. The largest
# ViTs have 48 blocks, widths of 6144 and 4 billion parameters; a position table of 4096 tokens at
# width 1280 holds 5 million values.
MAX_DEPTH = 256  # blocks, in the encoder (model.depth) and in the decoder (model.decoder_depth)
MAX_WIDTH = 16_384  # model.embed_dim, model.decoder_dim
MAX_TENSOR_VALUES = 2**28  # 268,435,456 values (1 GiB in float32) in one tensor: a position table, a projection
MAX_MODEL_VALUES = 2**33  # 8,589,934,592 values (32 GiB in float32) in the whole model, parameters and buffers


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


def save_model(
    model: MaskedAutoencoder,
    directory: str | Path,
    *,
    encoder_only: bool = False,
    state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` to ``directory`` (weights first, config last, each atomically).

    ``encoder_only`` keeps the tokenizer, positions and encoder and marks config.json so. ``state`` is the
    whole model's state when ``model`` itself holds only a shard of it (FSDP).
    """
    directory = Path(directory)
    encoder_only = encoder_only or is_encoder_only(model)
    state = {
        k: v.detach().contiguous().cpu()
        for k, v in (model.state_dict() if state is None else state).items()
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


def _grid_tokens(config: ModelConfig) -> tuple[int, str] | None:
    """How many tokens the shipped tokenizers make of ``config`` and from which fields, by arithmetic alone;
    None for a tokenizer whose count is not known here (its model is still bounded by :func:`planned_shapes`)."""
    options = config.tokenizer_options or {}
    if config.tokenizer == "point_groups":
        groups = options.get("groups", 64)
        return (groups, f"model.tokenizer_options.groups {groups:,} makes {groups:,} tokens") if groups > 0 else None
    if config.tokenizer not in ("patch", "channel_groups") or len(config.patch_size) != len(config.input_size):
        return None
    groups = len(options.get("groups") or []) if config.tokenizer == "channel_groups" else 0
    tokens = math.prod(s // p for s, p in zip(config.input_size, config.patch_size)) * max(groups, 1)
    how = f"model.input_size {config.input_size} makes {tokens:,} tokens (model.patch_size {config.patch_size}"
    how += f", {groups} channel groups)" if groups > 1 else ")"
    return tokens, how


def check_size(config: ModelConfig) -> ModelConfig:
    """Refuse, by arithmetic on its fields alone, a config whose model would not fit in any memory.

    Depths, widths and heads, and the tokens a tokenizer makes times the widest width (the size of the
    position tables an ``__init__`` computes): a ConfigError naming each field over its bound (``MAX_*``)
    and what it would make. Returns ``config``. Nothing is built or allocated.
    """
    dim, depth, heads = config.width
    named = {  # what a message calls each number: the field set, or the size it came from
        "embed_dim": "model.embed_dim" if config.embed_dim is not None else f"model.size {config.size!r}",
        "depth": "model.depth" if config.depth is not None else f"model.size {config.size!r}",
        "num_heads": "model.num_heads" if config.num_heads is not None else f"model.size {config.size!r}",
    }
    problems = []
    for key, value, low, high, unit in (
        (named["depth"], depth, 0, MAX_DEPTH, " blocks"),
        ("model.decoder_depth", config.decoder_depth, 0, MAX_DEPTH, " blocks"),
        (named["embed_dim"], dim, 1, MAX_WIDTH, ""),
        ("model.decoder_dim", config.decoder_dim, 1, MAX_WIDTH, ""),
        (named["num_heads"], heads, 1, None, ""),
        ("model.decoder_heads", config.decoder_heads, 1, None, ""),
        ("model.in_chans", config.in_chans, 1, None, ""),
    ):
        if value < low:
            problems.append(f"{key} {value} must be at least {low}")
        elif high is not None and value > high:
            problems.append(f"{key} {value} is over the bound of {high:,}{unit}")
    if not config.mlp_ratio > 0:
        problems.append(f"model.mlp_ratio {config.mlp_ratio} must be positive")
    sizes_ok = True
    for key, values in (("model.input_size", config.input_size), ("model.patch_size", config.patch_size)):
        if not values or min(values) < 1:
            problems.append(f"{key} {values} must hold positive sizes")
            sizes_ok = False
    if sizes_ok:
        counted = _grid_tokens(config)
        width = max(dim, config.decoder_dim)
        if counted is not None and counted[0] * width > MAX_TENSOR_VALUES:
            tokens, how = counted
            problems.append(
                f"{how}: at width {width:,} a position table would hold {tokens * width:,} values, over the "
                f"bound of {MAX_TENSOR_VALUES:,}"
            )
    if problems:
        raise ConfigError(f"refused before building the model: {'; '.join(problems)}")
    return config


class _ShapesOnly(TorchFunctionMode):
    """Used inside ``torch.device("meta")`` while a model is built for its shapes (:func:`planned_shapes`).

    Two things an ``__init__`` does need values, which meta tensors do not have: the drop-path schedule
    is a ``torch.linspace`` read back with ``.tolist()`` (made on the CPU here: at most ``MAX_DEPTH``
    numbers), and a channel-group position table is computed "on the CPU" (``.cpu()``, which keeps a meta
    tensor on the meta device here, so the table is a shape too).
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.linspace and kwargs.get("device") is None:
            kwargs = {**kwargs, "device": "cpu"}
        elif func is torch.Tensor.cpu and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **kwargs)


@contextmanager
def _on_meta() -> Iterator[None]:
    with torch.device("meta"), _ShapesOnly():
        yield


def planned_shapes(config: ModelConfig, encoder_only: bool = False) -> dict[str, tuple[int, ...]] | None:
    """The state dict's tensor shapes the model of ``config`` would have, found without allocating it.

    :func:`check_size` first; then the model is built on the ``meta`` device (shapes, no storage), and a
    tensor over ``MAX_TENSOR_VALUES`` or a model over ``MAX_MODEL_VALUES`` (parameters and buffers) is a
    ConfigError naming it. ``encoder_only``: the shapes of an encoder-only checkpoint. None when a part
    (a tokenizer, masker or target registered outside mimsdk) cannot be built on the meta device: its
    model is then only bounded by :func:`check_size`.
    """
    check_size(check_model(config))
    try:
        with _on_meta():
            model = MaskedAutoencoder(config)
    except (NotImplementedError, RuntimeError) as err:  # a part's __init__ read a tensor's values
        if "meta" not in str(err):
            raise
        return None
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name, tensor in tensors.items():
        if tensor.numel() > MAX_TENSOR_VALUES:
            raise ConfigError(
                f"refused before building the model: its {name} would be {tuple(tensor.shape)}, {tensor.numel():,} "
                f"values, over the bound of {MAX_TENSOR_VALUES:,} for one tensor"
            )
    total = sum(t.numel() for t in tensors.values())
    if total > MAX_MODEL_VALUES:
        raise ConfigError(
            f"refused before building the model: it would hold {total:,} values (parameters and buffers), over the "
            f"bound of {MAX_MODEL_VALUES:,}"
        )
    if encoder_only:
        drop_decoder(model)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a safetensors file, read from its header alone (no tensor data)."""
    try:
        with safe_open(weights, framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except SafetensorError as err:
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from err


def check_weights(weights: Path, expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> None:
    """Refuse weights ``found`` in ``weights`` that do not fit the ``expected`` shapes: missing, extra or
    reshaped tensors (the first named, with both shapes)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{weights} does not fit its config: missing {missing[:3]}, unexpected {unexpected[:3]}")
    for key, shape in expected.items():
        if tuple(found[key]) != tuple(shape):
            raise ValueError(f"{weights}: {key} has shape {tuple(found[key])}, the config expects {tuple(shape)}")


def read_model(path: str | Path, device: str | torch.device = "cpu") -> MaskedAutoencoder:
    """A model from a local model directory or run directory, in eval mode.

    The core reader; users call ``mimsdk.load_model`` (:func:`mimsdk.hub.load_model`), which also
    takes a Hub repo id. Weights must fit the config exactly: no missing, extra or reshaped tensors.
    Both are checked before the model is built: the config's size (:func:`planned_shapes`) and the
    weights' shapes from the safetensors header, so a crafted config.json is refused in one line
    naming the field, having allocated nothing.
    """
    directory = model_directory(path)
    header = read_header(directory)
    config = from_mapping(ModelConfig, header.get("model"), "model.")
    encoder_only = bool(header.get("encoder_only", False))
    try:
        expected = planned_shapes(config, encoder_only)
    except ConfigError as err:
        raise ConfigError(f"{directory / CONFIG_NAME}: {err}") from None
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        unsafe = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if unsafe:
            raise FileNotFoundError(
                f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}, only {', '.join(unsafe)}: mimsdk reads "
                "safetensors only, because loading pickle files can run arbitrary code"
            )
        raise FileNotFoundError(f"{directory} has {CONFIG_NAME} but no {WEIGHTS_NAME}")
    found = weight_shapes(weights)
    if expected is not None:
        check_weights(weights, expected, found)
    model = MaskedAutoencoder(config)
    if encoder_only:
        drop_decoder(model)
    if expected is None:  # shapes known only now (a part that cannot be built on the meta device)
        check_weights(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()}, found)
    try:
        state = load_file(weights)
    except SafetensorError as err:
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from err
    model.load_state_dict(state)
    return model.to(device).eval()
