"""One registry per kind of part, filled by a decorator where each part is defined, as timm registers its models.

    @MASKERS.register("block")
    class BlockMasker(RandomMasker): ...

A name is written once, beside its part: the recipe's allowed values, the "unknown name" messages and
``mimsdk recipes`` all read these registries. Core parts register when :mod:`mimsdk.model` is imported.
Adapters are found by module name in the ``mimsdk.adapters`` package and imported on first use, so a
radiology run never loads open3d and adding a modality is adding one module.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
import re
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from mimsdk.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> parts (classes or factories) of one kind.

    Args:
        kind: what is registered, for messages ("masker").
        key: the recipe key that names one ("model.masker").
        package: a package whose modules register themselves when imported; a name not yet
            registered is looked up as a module of that package (adapters).
    """

    def __init__(self, kind: str, key: str, package: str | None = None) -> None:
        self.kind, self.key, self.package = kind, key, package
        self._parts: dict[str, T] = {}
        self._options: dict[str, type | None] = {}

    def register(self, name: str, options: type | None = None) -> Callable[[T], T]:
        """Decorator: register the decorated part (a class or a factory) under ``name``.

        ``options`` is the dataclass of the part's own recipe keys (``model.masker_options`` and the like);
        the part is then called with them as keywords.
        """

        def add(part: T) -> T:
            if name in self._parts and self._parts[name] is not part:
                raise ValueError(f"two {self.kind}s registered as {name!r}: {self._parts[name]} and {part}")
            self._parts[name] = part
            self._options[name] = options
            return part

        return add

    def _modules(self) -> list[str]:
        if self.package is None:
            return []
        package = importlib.import_module(self.package)
        return [m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_")]

    def names(self) -> list[str]:
        """Every name that can be asked for, sorted."""
        return sorted(set(self._parts) | set(self._modules()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def get(self, name: str) -> T:
        """The part registered as ``name``; a ConfigError naming ``key`` and the allowed names otherwise."""
        if name not in self._parts and name in self._modules():
            try:
                importlib.import_module(f"{self.package}.{name}")
            except ModuleNotFoundError as err:
                if not err.name or err.name.split(".")[0] == "mimsdk":
                    raise
                raise ConfigError(
                    f"{self.key}: the {name} {self.kind} needs the package {err.name}, which is not installed; "
                    f"{install_hint(err.name)}"
                ) from None
        if name not in self._parts:
            raise ConfigError(
                f"{self.key}: {name!r} is not allowed; unknown {self.kind} {name!r}, expected one of the registered "
                f"{self.kind}s: {', '.join(self.names())}"
            )
        return self._parts[name]

    def options_type(self, name: str) -> type | None:
        """The dataclass of ``name``'s own options, or None when it takes none."""
        self.get(name)
        return self._options[name]


TOKENIZERS: Registry[Any] = Registry("tokenizer", "model.tokenizer")
MASKERS: Registry[Any] = Registry("masker", "model.masker")
TARGETS: Registry[Any] = Registry("target", "model.target")
ADAPTERS: Registry[Any] = Registry("adapter", "data.modality", package="mimsdk.adapters")


def install_hint(module: str) -> str:
    """How to install the optional extra of mimsdk that provides ``module`` (read from mimsdk's own metadata)."""
    wanted = module.split(".")[0].lower().replace("_", "-")
    try:
        requirements = importlib.metadata.requires("mimsdk") or []
    except importlib.metadata.PackageNotFoundError:
        requirements = []
    for requirement in requirements:
        project = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        extra = re.search(r'extra == "([^"]+)"', requirement)
        # a module is named like its project, or like its first part (open3d from open3d-cpu)
        if extra and wanted in (project, project.split("-")[0]):
            return f'install it with: pip install "mimsdk[{extra.group(1)}]"'
    return f"install it with: pip install {module.split('.')[0]}"
