"""Typed recipe configuration, validated on load.

A recipe is three sections, ``model``, ``data`` and ``train``. Every key is a
dataclass field with a type; loading checks each key and value and names the
dotted key that is wrong, with what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mimsdk.errors import ConfigError
from mimsdk.position import KINDS as POSITION_KINDS
from mimsdk.registry import MASKERS, TARGETS, TOKENIZERS, Registry


def choice(default: Any, *allowed: Any) -> Any:
    return field(default=default, metadata={"choices": allowed})


def registered(default: str, registry: Registry) -> Any:
    """A field whose allowed values are the names in ``registry``."""
    return field(default=default, metadata={"registry": registry})


SIZES: dict[str, tuple[int, int, int]] = {
    # name: (width, depth, heads), the standard ViT widths and depths
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "huge": (1280, 32, 16),
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model: it travels with the weights."""

    size: str = choice("base", *SIZES)
    input_size: list[int] = field(default_factory=lambda: [224, 224])
    patch_size: int | list[int] = field(default_factory=lambda: [16, 16])  # an int: the same for every dim
    in_chans: int = 3
    embed_dim: int | None = None  # None: from size
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 16
    tokenizer: str = registered("patch", TOKENIZERS)
    tokenizer_options: dict[str, Any] = field(default_factory=dict)  # the tokenizer's own Options
    masker: str = registered("random", MASKERS)
    masker_options: dict[str, Any] = field(default_factory=dict)  # the masker's own Options (block sizes, color)
    mask_ratio: float = 0.75
    decoder_fraction: float = 1.0  # share of the masked tokens the decoder predicts (CrossMAE, VideoMAE V2)
    decoder_masking: str = choice("random", "random", "running_cell")  # which of them, when fraction < 1
    target: str = registered("norm_pix", TARGETS)
    target_options: dict[str, Any] = field(default_factory=dict)  # the target's own Options (HOG bins, EMA top-k)
    pos_embed: str = choice("sincos", *POSITION_KINDS)
    class_token: bool = True  # False: none, as UNETR's ViT and VideoMAE (MAE pools the patch tokens either way)
    decoder_embed_bias: bool = True  # False: VideoMAE's bias-free encoder_to_decoder
    modality: str = "images"
    metadata: dict[str, Any] = field(default_factory=dict)  # adapter facts: channel names, normalisation, ...

    def __post_init__(self) -> None:
        if isinstance(self.patch_size, int):
            self.patch_size = [self.patch_size] * len(self.input_size)

    @property
    def width(self) -> tuple[int, int, int]:
        """(embed_dim, depth, num_heads) after applying ``size`` defaults."""
        dim, depth, heads = SIZES[self.size]
        return (self.embed_dim or dim, self.depth or depth, self.num_heads or heads)


@dataclass
class DataConfig:
    modality: str = "images"
    path: str | None = None  # None: the sample that ships with mimsdk
    eval_path: str | None = None  # held-out data for evaluation loss and probes
    labels: str | None = None  # CSV with columns path,label (else class sub-folders)
    batch_size: int = 64
    num_workers: int = 2
    # The four keys below apply only to adapters that use them; setting one for another adapter is an error.
    crop_scale: list[float] | None = None  # random crop's area range; None: the adapter's default ([0.2, 1.0])
    hflip: bool | None = None  # random horizontal flips; None: the adapter's default
    mean: list[float] | None = None  # None: the adapter's default
    std: list[float] | None = None
    strict: bool = False  # True: an unreadable file is an error, not a warning
    options: dict[str, Any] = field(default_factory=dict)  # the adapter's own keys, checked by adapter_options


@dataclass
class TrainConfig:
    max_steps: int | None = None  # optimiser steps; None: from epochs
    epochs: float | None = None
    warmup_steps: int | None = None  # None: from warmup_epochs
    warmup_epochs: float = 0.0
    base_lr: float = 1.5e-4  # lr = base_lr × effective batch / 256
    lr: float | None = None  # absolute lr; overrides base_lr
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    accum_steps: int = 1
    clip_grad: float | None = None
    parallel: str = choice("ddp", "ddp", "fsdp")  # several processes: whole model each (ddp) or sharded (fsdp)
    activation_checkpointing: bool = False  # recompute each block's activations in backward: memory for compute
    compile: bool = False  # torch.compile each transformer block
    on_nonfinite: str = choice("stop", "stop", "skip", "rollback")  # a non-finite loss or gradient: see nonfinite.py
    max_nonfinite: int = 5  # skip: non-finite steps in a row before stopping; rollback: rollbacks in a run
    precision: str = choice("auto", "auto", "fp32", "bf16")
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 500
    recon_every: int = 500
    probe_every: int = 0  # 0: only at the end, when labels exist
    eval_batches: int = 8  # held-out batches for the evaluation loss


@dataclass
class Recipe:
    name: str = "custom"
    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _check_value(value: Any, tp: Any, key: str) -> Any:
    """Return ``value`` converted to ``tp``, or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_value(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[-1])
    if tp is Any:
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_check_value(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    scalar = _SCALARS.get(origin or tp)
    if scalar is None:
        raise ConfigError(f"{key}: unsupported type {tp}")
    accepts, expected = scalar
    if not accepts(value):
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
    return float(value) if tp is float else value


_SCALARS: dict[Any, tuple[Any, str]] = {
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
    dict: (lambda v: isinstance(v, dict), "a mapping"),
}


def from_mapping(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and value."""
    where = prefix.rstrip(".") or "recipe"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]!s}; allowed keys in {where}: {', '.join(fields)}")
    values = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            values[name] = from_mapping(tp, value, f"{key}.")
            continue
        value = _check_value(value, tp, key)
        registry = fields[name].metadata.get("registry")
        if registry is not None:
            registry.get(value)  # a ConfigError naming the key and the registered names
        allowed = fields[name].metadata.get("choices")
        if allowed and value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; expected one of {', '.join(map(str, allowed))}")
        values[name] = value
    return cls(**values)


def part_options(registry: Registry, name: str, options: dict[str, Any]) -> Any:
    """``options`` (the recipe's ``model.<part>_options``) checked against the ``Options`` dataclass of the
    part ``registry`` holds as ``name``; None for a part that takes no options."""
    key = f"{registry.key}_options"
    cls = registry.options_type(name)
    if cls is None and options:
        raise ConfigError(f"{key}: the {name} {registry.kind} takes none, got {options}")
    allowed = [f.name for f in dataclasses.fields(cls)] if cls is not None else []
    unknown = sorted(set(options or {}) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown key {key}.{unknown[0]} for the {name} {registry.kind}; allowed: {', '.join(allowed) or 'none'}"
        )
    return from_mapping(cls, options, f"{key}.") if cls is not None else None


def build_part(registry: Registry, name: str, options: dict[str, Any] | None, *args: Any) -> Any:
    """The part ``registry`` holds as ``name``, called with ``args`` and its checked options as keywords."""
    opts = part_options(registry, name, options or {})
    return registry.get(name)(*args, **(dataclasses.asdict(opts) if opts is not None else {}))


def check_model(model: ModelConfig) -> ModelConfig:
    """Every part the model section names exists, and its options are its own: errors name the dotted key."""
    part_options(TOKENIZERS, model.tokenizer, model.tokenizer_options)
    part_options(MASKERS, model.masker, model.masker_options)
    part_options(TARGETS, model.target, model.target_options)
    return model


def adapter_options(cls: type, data: DataConfig) -> Any:
    """``data.options`` checked against an adapter's options dataclass ``cls``.

    Each modality has keys of its own (voxel spacing, bands, frames, DPI); they
    live under ``data.options`` and get the same checks as every other key, so a
    misspelt one is an error naming ``data.options.<key>`` and the allowed keys.
    """
    return from_mapping(cls, data.options, "data.options.")


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {part} is not a section")
    node[parts[-1]] = value


def parse_overrides(items: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["train.max_steps=50", "data.batch_size=8"]`` -> nested dict (values parsed as YAML); a nested dict
    is returned as it is."""
    if isinstance(items, dict):
        return items
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_steps=50)")
        key, raw = item.split("=", 1)
        _set_dotted(out, key.strip(), yaml.safe_load(raw))
    return out


def keyword_overrides(fields: dict[str, Any]) -> dict[str, Any]:
    """``pretrain(..., max_steps=5, data={"batch_size": 8})`` -> nested recipe overrides.

    A bare keyword names a field of exactly one section; ``model``, ``data`` and
    ``train`` take dicts of that section's fields.
    """
    out: dict[str, Any] = {}
    sections = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
    owners = {f.name: section for section, cls in sections.items() for f in dataclasses.fields(cls)}
    for key, value in fields.items():
        if key in sections and isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        elif key in owners:
            out.setdefault(owners[key], {})[key] = value
        else:
            raise ConfigError(f"unknown override {key!r}; use a field of model, data or train (e.g. max_steps=50)")
    return out


def merge(base: dict, update: dict) -> dict:
    """Recursive dict update (update wins)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def recipe_dir() -> Path:
    """Folder of the recipes that ship with mimsdk."""
    from mimsdk import recipes

    return Path(recipes.__file__).parent


def list_recipes() -> dict[str, str]:
    """Shipped recipe names -> one-line descriptions."""
    out = {}
    for path in sorted(recipe_dir().glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        out[path.stem] = str(data.get("description", "")).strip().splitlines()[0] if data.get("description") else ""
    return out


def recipe_source(recipe: str | Path) -> tuple[dict, str]:
    """Raw mapping of a recipe name or YAML path, and where it came from."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
    else:
        path = recipe_dir() / f"{recipe}.yaml"
        if not path.is_file():
            names = ", ".join(list_recipes())
            raise ConfigError(f"unknown recipe {recipe!r}; shipped recipes: {names} (or give a path to a YAML file)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"recipe file {path} must hold a mapping with sections model, data, train")
    data.setdefault("name", path.stem)
    return data, str(path)


def load_recipe(recipe: str | Path | Recipe | dict, overrides: dict | list[str] | None = None) -> Recipe:
    """A validated ``Recipe`` from a shipped name, a YAML path, a mapping or a Recipe, plus overrides.

    Overrides are a nested dict or dotted ``key=value`` strings.
    """
    if isinstance(recipe, Recipe):
        data = recipe.to_dict()
    elif isinstance(recipe, dict):
        data = recipe
    else:
        data, _ = recipe_source(recipe)
    data = merge(data, parse_overrides(overrides))
    parsed = from_mapping(Recipe, data)
    # The model's modality follows the data's unless set explicitly.
    if "modality" not in (data.get("model") or {}):
        parsed.model.modality = parsed.data.modality
    check_model(parsed.model)
    return parsed
