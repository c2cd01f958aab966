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

Every volume goes through one deterministic MONAI chain, *prepare* (load, channel first, checks, RAS,
resampling to ``spacing``, CT window or MRI percentiles to [0, 1], foreground crop, size check), whose output
MONAI's ``CacheDataset`` (``cache: memory``) or ``PersistentDataset`` (``cache: disk``) keeps, so decoding
happens once per run, or once ever. Then a random chain per item: a crop of ``model.input_size`` (or a random
scaled crop resized to it) and flips, drawn from a seed taken from torch's generator, so the trainer's
per-(seed, epoch, index) seeding makes it exact on resume.

Bad input is found by running *prepare* over every item before training: an empty file, one that is not the
format its name says, a header claiming more than ``data.options.max_voxels`` (checked before any reader
decodes), a truncated file or npz, a DICOM folder mixing series, a 4D volume where 3D is expected, NaN or
infinite voxels, a one-voxel image, a volume smaller than the crop. One warning per file naming it and the
problem in one line (MONAI's nested errors cut to the innermost), then training goes on over the rest;
``data.strict`` makes the first an error. A constant image, or one whose percentiles coincide, is named and
kept. An item that fails only when training reads it is named once and replaced (:class:`~mimsdk.data.SampleDataset`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimsdk.adapter import Adapter, ScanPolicy, unnormalise
from mimsdk.adapters.medical.dataset import MedicalDataset, augment
from mimsdk.adapters.medical.files import attach_labels, find_items
from mimsdk.adapters.medical.options import PREPARE_KEYS, MedicalOptions, channel_names, intensity
from mimsdk.adapters.medical.prepare import Prepare
from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import normalisation
from mimsdk.errors import DataError
from mimsdk.registry import ADAPTERS

__all__ = ["MedicalAdapter", "MedicalDataset", "MedicalOptions", "Prepare"]

POLICY = ScanPolicy(unit="items")


@ADAPTERS.register("medical")
class MedicalAdapter(Adapter):
    """CT, MRI and X-ray, 2D (C×H×W) or 3D (C×X×Y×Z), prepared once by MONAI and cached."""

    name = "medical"
    Options = MedicalOptions
    uses = ("crop_scale", "hflip", "mean", "std")
    stored = PREPARE_KEYS
    policy = POLICY

    def _stats(self, data: DataConfig, model: ModelConfig) -> tuple[list[float], list[float]]:
        # Intensities are in [0, 1] after windowing or percentiles; mean and std are optional on top.
        return normalisation(data.mean, data.std, model.in_chans, [0.0] * model.in_chans, [1.0] * model.in_chans)

    def scan(self, path: str | Path, data: DataConfig, model: ModelConfig) -> tuple[Any, list[int], list, list]:
        """Check every item once (through the cache), warn about or refuse bad ones; memoised per path.

        Returns MONAI's dataset of prepared records, the indices of the usable ones, every item, the classes.
        """
        opts = self.options(data, model)
        if len(model.input_size) not in (2, 3):
            raise DataError(f"model.input_size {model.input_size}: medical data are 2D (H, W) or 3D (X, Y, Z)")
        channel_names(opts, model)
        prepare = Prepare(opts, model)
        extra = json.dumps([prepare.settings(), asdict(opts)])
        return self.remember(path, data, extra, lambda: self._scan(Path(path), data, opts, prepare))

    def _scan(self, root: Path, data: DataConfig, opts: MedicalOptions, prepare: Prepare) -> tuple:
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
        prepared = self._cached(items, prepare, opts, root, data)
        found: dict[int, list[str]] = {}
        good = POLICY.settle(root, self._problems(items, prepared, found), data.strict)
        self._notes(items, found, good, data.strict)
        return prepared, good, items, classes

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
    def _problems(items: list[dict[str, Any]], prepared: Any, notes: dict[int, list[str]]) -> list[str | None]:
        """Per item, why it cannot be used (None if it can). Running *prepare* over it (through the cache)
        is the check; the images of one npz array share shape and dtype, so its first speaks for all.
        What *prepare* noted of a usable file (a constant image) goes into ``notes`` by item index."""
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
                    error = prepared[i].get("error")
                    count = sum(1 for it in items if it.get("npz", ())[:2] == array)
                    arrays[array] = f"{error} (all {count} images of {array[0]}[{array[1]}])" if error else None
                nan = f"{item['src']}: contains NaN values; no tensor is made from it" if item["nan"] else None
                problems.append(arrays[array] or nan)
            else:
                record = prepared[i]
                problems.append(record.get("error"))
                if record.get("notes"):
                    notes[i] = record["notes"]
        return problems

    def _cached(self, items: list[dict], prepare: Prepare, opts: MedicalOptions, root: Path, data: DataConfig) -> Any:
        from monai.data import CacheDataset, Dataset, PersistentDataset

        cache = opts.cache
        if cache == "auto":
            cache = "none" if all("npz" in item for item in items) else "memory"
        if cache == "memory":
            return CacheDataset(items, prepare, num_workers=max(1, data.num_workers), progress=False, copy_cache=False)
        if cache == "disk":
            base = Path(opts.cache_dir) if opts.cache_dir else (root if root.is_dir() else root.parent)
            if not opts.cache_dir:
                base = base / ".mimsdk-cache"
            folder = base / hashlib.sha1(prepare.settings().encode()).hexdigest()[:16]
            folder.mkdir(parents=True, exist_ok=True)
            return PersistentDataset(items, prepare, cache_dir=folder)
        return Dataset(items, prepare)

    def build(
        self, path: Path, data: DataConfig, model: ModelConfig, opts: MedicalOptions, train: bool
    ) -> MedicalDataset:
        prepared, good, items, classes = self.scan(path, data, model)
        mean, std = self._stats(data, model)
        chain = augment(opts, model.input_size, train, self.crop_scale(data), self.hflip(data))
        return MedicalDataset(prepared, good, items, classes, chain, model.input_size, mean, std)

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
