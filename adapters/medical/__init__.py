"""Radiology: CT, MRI and X-ray through MONAI, in 2D or 3D, with physical spacing, orientation and intensity units.

The model's ``input_size`` says which: two sizes are an X-ray (C×H×W), three a volume (C×X×Y×Z, in the
canonical RAS frame). What a path may hold:

- NIfTI files (``.nii``, ``.nii.gz``), read with MONAI's ``NibabelReader``;
- DICOM: a folder of one series is one volume (slices stacked in instance order by ``PydicomReader``); in 2D
  every ``.dcm`` file is one image;
- PNG / JPEG X-rays (``PILReader``);
- ``.npz`` arrays (MedMNIST: ``train_images``, ``train_labels``, ``val_images``, ...), a split chosen by
  ``data.options.split``;
- multi-sequence MRI: one folder per subject with a file per sequence named after ``data.options.channels``
  (``sub01/T1.nii.gz``, ``sub01/FLAIR.nii.gz``, or ``..._T1.nii.gz``), stacked as channels; or one 4D file
  whose volumes are the sequences.

The preparation is in two halves, so a folder and the shard set made from it (``mimsdk shard``) train alike.
The stored half, *prepare*, is one deterministic MONAI chain (load, channel first, checks, RAS, resampling to
``spacing``, CT window or MRI percentiles to [0, 1], foreground crop, size check) whose output is kept compactly
(uint16 for scaled intensities, :mod:`.stored`): in a shard, or for a folder in MONAI's ``CacheDataset``
(``cache: memory``, at most ``data.options.memory_limit`` bytes, the rest spilled to the disk cache) or
``PersistentDataset`` (``cache: disk``), so decoding happens once per run, or once ever. The finishing half
(:class:`~.dataset.FinishVolume`) unpacks to float32 and draws a crop of ``model.input_size`` (or a random scaled
crop resized to it) and flips from a seed taken from torch's generator, so the trainer's per-(seed, epoch, index)
seeding makes it exact on resume. A shard set made with other preparation settings (``preparation``) is refused.

Bad input is found by running *prepare* over every item before training: an empty file, one that is not the
format its name says, a header claiming more than ``data.options.max_voxels`` (checked before any reader
decodes), a truncated file or npz, a DICOM folder mixing series, a 4D volume where 3D is expected, NaN or
infinite voxels, a one-voxel image, a volume smaller than the crop. One warning per file naming it and the
problem in one line (MONAI's nested errors cut to the innermost), then training goes on over the rest;
``data.strict`` makes the first an error. A constant image, or one whose percentiles coincide, is named and
kept. A folder of more than :data:`~.headers.BIG_FOLDER` files is checked by headers only (nothing decoded
before the first step). An item that fails only when training reads it is named once and replaced
(:class:`~mimsdk.data.SampleDataset`).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimsdk.adapter import Adapter, ScanPolicy, unnormalise
from mimsdk.adapters.medical.cache import cached_records
from mimsdk.adapters.medical.dataset import FinishVolume, MedicalDataset, augment
from mimsdk.adapters.medical.files import attach_labels, find_items
from mimsdk.adapters.medical.headers import BIG_FOLDER, check_headers
from mimsdk.adapters.medical.options import (
    PREPARE_KEYS,
    MedicalOptions,
    channel_names,
    crops,
    intensity,
    memory_limit,
)
from mimsdk.adapters.medical.prepare import Prepare
from mimsdk.adapters.medical.stored import StoredVolumes
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import normalisation
from mimsdk.errors import DataError
from mimsdk.registry import ADAPTERS

__all__ = ["MedicalAdapter", "MedicalDataset", "MedicalOptions", "Prepare", "StoredVolumes"]

log = logging.getLogger(__name__)
POLICY = ScanPolicy(unit="items")


@ADAPTERS.register("medical")
class MedicalAdapter(Adapter):
    """CT, MRI and X-ray, 2D (C×H×W) or 3D (C×X×Y×Z), prepared once by MONAI, stored compactly and cached."""

    name = "medical"
    Options = MedicalOptions
    uses = ("crop_scale", "hflip", "mean", "std")
    stored = PREPARE_KEYS
    policy = POLICY
    version = 1

    def check_options(self, opts: MedicalOptions, model: ModelConfig | None) -> MedicalOptions:
        memory_limit(opts)  # a size that does not parse is named now, not when the cache is built
        return opts

    def _stats(self, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        # Intensities are in [0, 1] after windowing or percentiles; mean and std are optional on top.
        return normalisation(data.mean, data.std, model.in_chans, [0.0] * model.in_chans, [1.0] * model.in_chans)

    @staticmethod
    def _dims(model: ModelConfig) -> int:
        if len(model.input_size) not in (2, 3):
            raise DataError(f"model.input_size {model.input_size}: medical data are 2D (H, W) or 3D (X, Y, Z)")
        return len(model.input_size)

    def scan(self, path: str | Path, data: DataConfig, model: ModelConfig) -> StoredVolumes:
        """Check every item once (decoded through the cache; by headers only in a big folder), warn about or
        refuse bad ones; memoised per path. Returns the usable items' stored samples."""
        opts = self.options(data, model)
        self._dims(model)
        channel_names(opts, model)
        prepare = Prepare(opts, model)
        extra = json.dumps([prepare.settings(), asdict(opts)])
        return self.remember(path, data, extra, lambda: self._scan(Path(path), data, opts, prepare))

    def _scan(self, root: Path, data: DataConfig, opts: MedicalOptions, prepare: Prepare) -> StoredVolumes:
        items, ignored = find_items(POLICY.walk(root, "files"), opts, prepare.ndim)
        if data.labels:
            ignored = [f for f in ignored if f.resolve() != Path(data.labels).resolve()]
        if ignored:
            warnings.warn(
                f"ignoring {len(ignored)} file(s) in {root} that are not NIfTI, DICOM, PNG/JPEG or npz "
                f"(e.g. {ignored[0].name})",
                stacklevel=4,
            )
        if not items:
            raise DataError(f"{root} holds no medical images; expected NIfTI, DICOM, PNG/JPEG or .npz files")
        classes = attach_labels(items, root, data.labels)
        files = sum(1 for item in items if "npz" not in item)
        headers_only = files > BIG_FOLDER
        records = cached_records(items, prepare, opts, root, data.num_workers, lazy=headers_only)
        headers: dict[int, str | None] = {}
        if headers_only:
            log.info("%s: %d files, more than %d: checked by their headers only", root, files, BIG_FOLDER)
            listed = [i for i, item in enumerate(items) if "npz" not in item]
            verdicts = POLICY.probe([items[i] for i in listed], lambda item: check_headers(item, opts.max_voxels))
            headers = {i: str(v) if isinstance(v, DataError) else None for i, v in zip(listed, verdicts)}
        found: dict[int, list[str]] = {}
        good = POLICY.settle(root, self._problems(items, records, found, headers), data.strict)
        self._notes(items, found, good, data.strict)
        return StoredVolumes(records, good, items, classes)

    @staticmethod
    def _notes(items: list[dict[str, Any]], found: dict[int, list[str]], good: list[int], strict: bool) -> None:
        """Usable items worth a word: a constant image (all one value), percentiles that coincide. One warning
        each (one per npz array for its constant images); ``strict`` makes the first an error."""
        notes: list[str] = []
        constant: dict[str, list[int]] = {}
        for i in good:
            item = items[i]
            if item.get("constant"):
                constant.setdefault(f"{item['npz'][0]}[{item['npz'][1]}]", []).append(item["npz"][2])
            elif "npz" not in item:
                notes += found.get(i, [])
        for array, which in constant.items():
            shown = ", ".join(map(str, which[:5])) + (", ..." if len(which) > 5 else "")
            notes.append(f"{array}: {len(which)} image(s) are constant (all one value), e.g. [{shown}]; kept")
        if notes and strict:
            raise DataError(f"{notes[0]} (strict mode)")
        for note in notes:
            warnings.warn(note, stacklevel=5)

    @staticmethod
    def _problems(
        items: list[dict[str, Any]], records: Any, notes: dict[int, list[str]], headers: dict[int, str | None]
    ) -> list[str | None]:
        """Per item, why it cannot be used (None if it can). Running *prepare* over it (through the cache)
        is the check, or where ``headers`` has the item (a big folder), what its headers said; the images of
        one npz array share shape and dtype, so its first speaks for all. What *prepare* noted of a usable
        file (a constant image) goes into ``notes`` by item index."""
        arrays: dict[tuple[str, str], str | None] = {}  # npz array -> its verdict, for all its images
        problems: list[str | None] = []
        for i, item in enumerate(items):
            if item.get("error"):  # an npz that does not open
                problems.append(item["error"])
            elif item.get("missing"):
                problems.append(f"{item['src']}: no file for sequence(s) {', '.join(item['missing'])}")
            elif "npz" in item:
                array = item["npz"][:2]
                if array not in arrays:
                    error = records[i].get("error")
                    count = sum(1 for it in items if it.get("npz", ())[:2] == array)
                    arrays[array] = f"{error} (all {count} images of {array[0]}[{array[1]}])" if error else None
                nan = f"{item['src']}: contains NaN values; no tensor is made from it" if item["nan"] else None
                problems.append(arrays[array] or nan)
            elif i in headers:
                problems.append(headers[i])
            else:
                record = records[i]
                problems.append(record.get("error"))
                if record.get("notes"):
                    notes[i] = record["notes"]
        return problems

    def build(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: MedicalOptions, train: bool
    ) -> MedicalDataset:
        return MedicalDataset(self.prepared(path, data, model, opts), self.finish(data, model, opts, train))

    def prepared(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: MedicalOptions, verify: bool = False
    ) -> StoredVolumes:
        """The usable items at ``path`` through *prepare* (C×S1..Sn uint16 or float32, see :mod:`.stored`).
        ``verify`` changes nothing: *prepare* decodes and checks every volume whole, and what it stores is
        finished without further checks."""
        return self.scan(path, data, model)

    def finish(self, data: DataConfig, model: ModelConfig, opts: MedicalOptions, train: bool) -> FinishVolume:
        """Stored sample -> C×S1..Sn float32 of ``model.input_size``: random crop and flip when ``train``."""
        self._dims(model)
        mean, std = self._stats(data, model)
        chain = augment(opts, model.input_size, train, self.crop_scale(data), self.hflip(data))
        return FinishVolume(chain, model.input_size, mean, std)

    def preparation(self, data: DataConfig, model: ModelConfig, opts: MedicalOptions) -> dict[str, Any]:
        """What the stored samples depend on. ``input_size`` only where a volume smaller than the crop is
        left out (crop without pad); ``memory_limit``, ``cache`` and ``max_voxels`` decide how and whether a
        volume is kept, not what it holds, and the npz ``split`` picks the data as a path does."""
        ndim = self._dims(model)
        scaling = intensity(opts)
        fit = "crop" if crops(opts, ndim) else "resize"
        settings: dict[str, Any] = {
            "dims": ndim,
            "kind": opts.kind,
            "intensity": scaling,
            "channels": channel_names(opts, model),
            "spacing": opts.spacing,
            "orientation": opts.orientation if ndim == 3 else None,
            "foreground_crop": opts.foreground_crop,
            "fit": fit,
        }
        if scaling in ("window", "percentiles"):
            settings[scaling] = getattr(opts, scaling)
        if opts.foreground_crop:
            settings["margin"] = opts.margin
        if fit == "crop":
            settings["pad"] = opts.pad
            if not opts.pad:
                settings["input_size"] = list(model.input_size)
        return settings

    def describe(self, data: DataConfig, model: ModelConfig, opts: MedicalOptions) -> dict[str, Any]:
        mean, std = self._stats(data, model)
        scaling = intensity(opts)
        meta: dict[str, Any] = {
            "kind": opts.kind,
            "dims": len(model.input_size),
            "channel_names": channel_names(opts, model),
            "spacing": opts.spacing,
            "orientation": opts.orientation if len(model.input_size) == 3 else None,
            "intensity": scaling,
            "mean": mean,
            "std": std,
        }
        if scaling == "window":
            meta["window"] = opts.window
        elif scaling == "percentiles":
            meta["percentiles"] = opts.percentiles
        return meta

    def picture_rows(self, recon: dict[str, torch.Tensor], model: ModelConfig, index: int) -> list[list[np.ndarray]]:
        """A row for a 2D sample; for a volume one row per mid-slice (axial, coronal, sagittal), superior or
        anterior up. The first channel."""

        def planes(t: torch.Tensor, scaled: bool = True) -> list[np.ndarray]:
            v = (unnormalise(t, model) if scaled else t.detach().float().cpu())[0].numpy()
            if v.ndim == 2:
                return [v]
            x, y, z = (s // 2 for s in v.shape)
            return [np.rot90(v[:, :, z]), np.rot90(v[:, y, :]), np.rot90(v[x, :, :])]

        masked = [m > 0.5 for m in planes(recon["mask"][index], scaled=False)]
        original = planes(recon["input"][index])
        shown = [np.where(m, 0.5, o) for m, o in zip(masked, original)]  # grey where masked
        return [list(r) for r in zip(original, shown, planes(recon["reconstruction"][index]))]
