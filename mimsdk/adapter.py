"""What an adapter gives the core. The core calls these; it never imports a modality.

An adapter module in ``mimsdk.adapters`` exposes ``ADAPTER``, an object with:

- ``name``: the modality name used in recipes (``data.modality``);
- ``dataset(path, data, model, train)``: a :class:`~mimsdk.data.LabelledDataset`
  of tensors C×S1..Sn matching ``model.in_chans`` and ``model.input_size``;
  ``train=False`` gives the deterministic evaluation view;
- ``metadata(data, model)``: facts stored with the model (normalisation, channel names);
- ``picture(recon, model)``: a PIL picture of ``MaskedAutoencoder.reconstruct`` output;
- ``sample_path()``: the small sample shipped with mimsdk, or None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from mimsdk.config import DataConfig, ModelConfig
from mimsdk.data import LabelledDataset


class Adapter(Protocol):
    name: str

    def dataset(self, path: str | Path, data: DataConfig, model: ModelConfig, train: bool) -> LabelledDataset: ...

    def metadata(self, data: DataConfig, model: ModelConfig) -> dict[str, Any]: ...

    def picture(self, recon: dict[str, torch.Tensor], model: ModelConfig) -> Image.Image: ...

    def sample_path(self) -> Path | None: ...
