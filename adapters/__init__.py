"""Modality adapters, imported on first use so a radiology user never loads open3d.

Each adapter lives in its own module and never imports another adapter.
"""

from __future__ import annotations

import importlib

from mimsdk.adapter import Adapter

MODULES = {
    "images": "mimsdk.adapters.images",
    "medical": "mimsdk.adapters.medical",
    "multispectral": "mimsdk.adapters.multispectral",
    "video": "mimsdk.adapters.video",
    "pointcloud": "mimsdk.adapters.pointcloud",
    "documents": "mimsdk.adapters.documents",
}


def get_adapter(modality: str) -> Adapter:
    """The adapter for ``modality`` (the ``data.modality`` recipe key)."""
    if modality not in MODULES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(sorted(MODULES))}")
    return importlib.import_module(MODULES[modality]).ADAPTER
