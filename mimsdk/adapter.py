"""The adapter base: what every modality shares, so an adapter module holds only what its files need.

An adapter turns files of one modality into tensors for the core. The trainer and the CLI reach one only by
name, through :data:`mimsdk.registry.ADAPTERS`; a module in ``mimsdk.adapters`` registers its class::

    @ADAPTERS.register("images")
    class ImagesAdapter(Adapter):
        uses = ("crop_scale", "hflip", "mean", "std")
        def build(self, path, data, model, opts, train): ...
        def picture_rows(self, recon, model, index): ...

What the base owns, once for all adapters:

- the interface the core calls: :meth:`Adapter.dataset`, :meth:`Adapter.metadata`, :meth:`Adapter.data_config`,
  :meth:`Adapter.picture`, :meth:`Adapter.sample_path`;
- checked options: ``data.options`` parsed into the adapter's ``Options`` dataclass (errors name
  ``data.options.<key>``), and the core keys ``data.crop_scale``, ``hflip``, ``mean``, ``std`` refused by an
  adapter that does not use them;
- one rule for options stored with the model: the ``stored`` fields go to ``metadata["options"]`` and are read
  back under ``data.options`` whenever the model is given, so ``embed``, ``probe`` and ``reconstruct`` read
  files as in pre-training;
- the scan policy (:class:`~mimsdk.scan.ScanPolicy`: exists, walk, probe in threads, one warning per bad
  file, ``strict``, summary, "no usable" error) and the scan cache (:meth:`Adapter.remember`);
- the load-time policy: every adapter's dataset is a :class:`~mimsdk.data.SampleDataset`, and
  :meth:`Adapter.dataset` sets it to ``data.strict``, so a sample that fails only when read is named once and
  replaced (or stops a strict run) the same way in every modality;
- :func:`readable_path`, for reading libraries that cannot take a file name that is not UTF-8;
- the picture grid: columns original | masked | reconstruction (:meth:`Adapter.picture`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from PIL import Image

from mimsdk.config import DataConfig, ModelConfig, adapter_options
from mimsdk.data import (
    LabelledDataset,
    Prepared,
    PreparedDataset,
    SampleDataset,
)
from mimsdk.errors import ConfigError
from mimsdk.picture import grid
from mimsdk.registry import ADAPTERS
from mimsdk.scan import ScanPolicy
from mimsdk.shards import Manifest, ShardReader, check_preparation, is_shard_set, read_manifest

log = logging.getLogger(__name__)

OPTIONS_KEY = "options"  # model.metadata key of the options stored with the model
CORE_KEYS = ("crop_scale", "hflip", "mean", "std")  # data keys only some adapters use
DEFAULT_CROP_SCALE = (0.2, 1.0)  # MAE's RandomResizedCrop area range
COLUMNS = ["original", "masked", "reconstruction"]

T = TypeVar("T")


class Adapter:
    """Base of every modality adapter; instantiated with no arguments (``ADAPTERS.get(name)()``).

    Class attributes a subclass sets:
        name: the ``data.modality`` value it is registered under, for messages.
        Options: dataclass of the adapter's ``data.options`` keys; None when it takes none.
        uses: which of :data:`CORE_KEYS` apply; another one set in the recipe is a ConfigError.
        stored: ``Options`` fields kept with the model (how files were read) and read back with it.
        legacy_options_key: metadata key older versions stored those options under, read when
            ``metadata["options"]`` is absent.
        policy: how its scan walks, probes and reports files (:class:`ScanPolicy`).

    A subclass implements :meth:`build` and either :meth:`picture_rows` or :meth:`picture`; optionally
    :meth:`check_options` (ranges, model-dependent checks), :meth:`describe` (metadata) and :meth:`sample_path`.

    An adapter that writes shard sets (``mimsdk shard``) splits its preparation in two: :meth:`prepared`, the
    deterministic half a shard stores (``preparation`` lists the settings it depends on, ``version`` numbers
    its code), and :meth:`finish`, the random crop, flip and normalisation applied to a stored sample. Its
    :meth:`build` should return ``PreparedDataset(self.prepared(...), self.finish(...))``, so that a folder
    and the shards made from it train alike.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type | None] = None
    uses: ClassVar[tuple[str, ...]] = ()
    stored: ClassVar[tuple[str, ...]] = ()
    legacy_options_key: ClassVar[str | None] = None
    policy: ClassVar[ScanPolicy] = ScanPolicy()
    version: ClassVar[int] = 1  # of the stored preparation: shards written by another version are refused

    def __init__(self) -> None:
        # A run builds the training and the evaluation view of one folder: scan (and warn about) it once.
        self._scans: dict[Hashable, Any] = {}

    # -- the interface the core calls ----------------------------------------------------------

    def dataset(self, path: str | Path, data: DataConfig, model: ModelConfig, train: bool) -> LabelledDataset:
        """Items ``(tensor C×S1..Sn, label)`` (label -1 when unlabelled) of the files at ``path``.

        Args:
            path: a folder (searched recursively) or one file.
            data: the recipe's data section; ``data.options`` over the options stored in ``model.metadata``.
            model: the model's config: ``input_size`` and ``in_chans`` set the tensors' shape.
            train: the random training view; False gives the deterministic evaluation view.

        A sample that fails to load is named and replaced, or with ``data.strict`` stops the run
        (:class:`~mimsdk.data.SampleDataset`, whose ``skipped`` counts the replacements).
        """
        opts = self.options(data, model)
        if is_shard_set(path):
            dataset = self.from_shards(path, data, model, opts, train)
        else:
            dataset = self.build(Path(path), data, model, opts, train)
        if isinstance(dataset, SampleDataset):
            dataset.guard(data.strict)
        return dataset

    def build(self, path: Path, data: DataConfig, model: ModelConfig, opts: Any, train: bool) -> LabelledDataset:
        """:meth:`dataset` with ``opts`` already checked."""
        raise NotImplementedError

    # -- shard sets: the preparation in two halves ------------------------------------------------

    def prepared(self, path: Path, data: DataConfig, model: ModelConfig, opts: Any, verify: bool = False) -> Prepared:
        """The samples at ``path`` through the stored (deterministic) half of the preparation. ``verify``
        (when writing shards): check each sample whole, so a shard never stores one that cannot be finished."""
        raise ConfigError(f"the {self.name} adapter does not write shard sets yet")

    def finish(self, data: DataConfig, model: ModelConfig, opts: Any, train: bool) -> Callable[[dict], torch.Tensor]:
        """The other half: a stored sample -> the model's tensor C×S1..Sn (random crop and flip when ``train``)."""
        raise ConfigError(f"the {self.name} adapter does not read shard sets yet")

    def preparation(self, data: DataConfig, model: ModelConfig, opts: Any) -> dict[str, Any]:
        """The settings the stored half depends on: recorded with a shard set, compared when one is read."""
        return {}

    def shard_facts(self, prepared: Prepared, data: DataConfig, model: ModelConfig, opts: Any) -> dict[str, Any]:
        """Facts over the whole set that training needs and a shard cannot hold (per-band statistics)."""
        return {}

    def from_shards(self, path: str | Path, data: DataConfig, model: ModelConfig, opts: Any, train: bool) -> Any:
        """The dataset of a shard set: its samples, finished; an adapter whose items are not one per stored
        sample (satellite chips cut into tiles) overrides it."""
        return PreparedDataset(self.shard_reader(path, data, model, opts), self.finish(data, model, opts, train))

    def shard_manifest(self, path: str | Path) -> Manifest:
        """The manifest of the shard set at ``path``, read once per adapter."""
        key = ("manifest", str(path))
        if key not in self._scans:
            self._scans[key] = read_manifest(path)
        return self._scans[key]

    def shard_reader(self, path: str | Path, data: DataConfig, model: ModelConfig, opts: Any) -> Prepared:
        """The shard set at ``path``, checked against what this recipe would store; an adapter with several
        items per stored sample (video: ``clips_per_video`` windows) wraps it here."""
        manifest = self.shard_manifest(path)
        check_preparation(manifest, self.preparation(data, model, opts), self.name, self.version, str(path))
        return ShardReader(path, manifest)

    def metadata(self, data: DataConfig, model: ModelConfig) -> dict[str, Any]:
        """Facts stored with the model (channel names, normalisation, ...) and, under ``"options"``, the
        ``stored`` options, so the model reads files as in pre-training without its recipe."""
        opts = self.options(data, model)
        facts = self.describe(data, model, opts)
        if self.stored:
            facts[OPTIONS_KEY] = self.kept(opts)
        return facts

    def describe(self, data: DataConfig, model: ModelConfig, opts: Any) -> dict[str, Any]:
        """The adapter's own metadata facts (without the stored options)."""
        return {}

    def data_config(self, model: ModelConfig, labels: str | None = None) -> DataConfig:
        """Data settings to read files the way the stored ``model`` was trained, without its recipe:
        its stored options and, where this adapter uses them, its normalisation."""
        meta = model.metadata
        restored = {k: list(meta[k]) for k in ("mean", "std") if k in self.uses and meta.get(k) is not None}
        return DataConfig(modality=self.name, labels=labels, options=self.stored_options(model), **restored)

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image:
        """A picture of ``MaskedAutoencoder.reconstruct`` output: columns original | masked | reconstruction,
        rows from :meth:`picture_rows` (one or more per sample)."""
        rows = [row for i in range(recon["input"].shape[0]) for row in self.picture_rows(recon, model, i)]
        return grid(rows, COLUMNS)

    def picture_rows(self, recon: dict[str, torch.Tensor], model: ModelConfig, index: int) -> list[list[np.ndarray]]:
        """Rows of three H×W or H×W×3 arrays in [0, 1] (original, masked, reconstruction) for sample ``index``."""
        raise NotImplementedError

    def sample_path(self) -> Path | None:
        """The small sample shipped with mimsdk, or None."""
        return None

    def sample_eval_path(self) -> Path | None:
        """The held-out split shipped beside the sample (``<sample>-eval``), or None: a run given no data
        path evaluates on it, so the quickstart shows its held-out loss and kNN accuracy."""
        sample = self.sample_path()
        held_out = sample.with_name(f"{sample.name}-eval") if sample is not None else None
        return held_out if held_out is not None and held_out.is_dir() else None

    # -- options ---------------------------------------------------------------------------------

    def options(self, data: DataConfig, model: ModelConfig | None = None) -> Any:
        """``data.options`` over the options stored with ``model``, checked; None for an adapter without options.

        Raises ConfigError naming ``data.<key>`` for a core key this adapter does not use, and
        ``data.options.<key>`` for an unknown or ill-typed option.
        """
        self.check_core_keys(data)
        raw = {**self.stored_options(model), **data.options}
        if self.Options is None:
            if raw:
                raise ConfigError(f"data.options: the {self.name} adapter takes no options, got {sorted(raw)}")
            return None
        return self.check_options(adapter_options(self.Options, DataConfig(options=raw)), model)

    def trained_options(self, model: ModelConfig) -> Any:
        """The options ``model`` was trained with: those stored with it over the defaults."""
        return self.options(self.data_config(model), model)

    def check_options(self, opts: Any, model: ModelConfig | None) -> Any:
        """Checks beyond types (ranges, agreement with the model); returns ``opts``, perhaps completed."""
        return opts

    def check_core_keys(self, data: DataConfig) -> None:
        """A core data key set for an adapter that does not use it is an error, not silently ignored."""
        for key in CORE_KEYS:
            if getattr(data, key) is not None and key not in self.uses:
                used = ", ".join(f"data.{k}" for k in self.uses) or "none of them"
                raise ConfigError(f"data.{key} does not apply to the {self.name} adapter (it uses: {used})")

    def stored_options(self, model: ModelConfig | None) -> dict[str, Any]:
        """The options stored with ``model`` (empty without a model or stored options)."""
        meta = model.metadata if model is not None else {}
        stored = meta.get(OPTIONS_KEY)
        if stored is None and self.legacy_options_key is not None:
            stored = meta.get(self.legacy_options_key)
        return dict(stored or {})

    def kept(self, opts: Any) -> dict[str, Any]:
        """The ``stored`` fields of ``opts``, as plain (JSON) values."""
        values = dataclasses.asdict(opts)
        return {k: values[k] for k in self.stored}

    def hflip(self, data: DataConfig) -> bool:
        """``data.hflip``; random horizontal flips by default."""
        return True if data.hflip is None else data.hflip

    def crop_scale(self, data: DataConfig) -> tuple[float, float]:
        """``data.crop_scale``, the random crop's area range; MAE's (0.2, 1.0) by default."""
        low, high = data.crop_scale or DEFAULT_CROP_SCALE
        return low, high

    # -- scanning ----------------------------------------------------------------------------------

    def remember(self, path: str | Path, data: DataConfig, extra: Hashable, build: Callable[[], T]) -> T:
        """``build()`` once per resolved path, labels, strictness and ``extra`` (what else decides the scan)."""
        key = (str(Path(path).resolve()), data.labels, data.strict, extra)
        if key not in self._scans:
            self._scans[key] = build()
        return self._scans[key]


@contextlib.contextmanager
def readable_path(path: str | Path) -> Iterator[str]:
    """``path`` as a string any C library can open: itself when its name is UTF-8, else a link to it with a
    plain name (same suffix) in a private temporary folder, removed afterwards.

    A file name that is not UTF-8 (Latin-1 bytes from an old archive) reaches Python as surrogate escapes,
    which rasterio, decord and open3d cannot encode; the file itself is fine.
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    else:
        yield text
        return
    folder = tempfile.mkdtemp(prefix="mimsdk-name-")
    try:
        suffixes = "".join(s for s in Path(text).suffixes if s.isascii() and len(s) <= 8)
        link = os.path.join(folder, "file" + suffixes)
        os.symlink(os.path.abspath(text), link)
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def unnormalise(x: torch.Tensor, model: ModelConfig) -> torch.Tensor:
    """C×S1..Sn in the model's normalised units -> the same on the CPU in data units (metadata mean and std)."""
    meta = model.metadata
    shape = (-1, *[1] * (x.dim() - 1))
    mean = torch.tensor(meta.get("mean") or [0.0] * model.in_chans, dtype=torch.float32).view(shape)
    std = torch.tensor(meta.get("std") or [1.0] * model.in_chans, dtype=torch.float32).view(shape)
    return x.detach().float().cpu() * std + mean


def grey_out(image: Any, mask: Any) -> Any:
    """``image`` with the masked places (``mask`` 1) shown mid-grey; arrays or tensors that broadcast."""
    return image * (1 - mask) + 0.5 * mask


def get_adapter(modality: str) -> Adapter:
    """A new instance of the adapter registered for ``modality`` (the ``data.modality`` recipe key)."""
    return ADAPTERS.get(modality)()
