"""``mimsdk shard``: a folder prepared once, in worker processes, into a shard set (:mod:`mimsdk.shards`).

Each sample goes through the stored half of its adapter's preparation (the medical adapter's orientation,
spacing and intensity scaling; decoded video frames; a rendered page; an image file's own bytes), checked
whole; a sample that cannot be prepared is named in one warning and left out (``data.strict``: the first one
stops). Training then reads the shard set wherever a folder goes: ``--data SHARDS`` or ``--data s3://...``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mimsdk.adapter import get_adapter
from mimsdk.config import Recipe, load_recipe
from mimsdk.data import PROGRAM_ERRORS, Prepared, failure_reason
from mimsdk.errors import DataError
from mimsdk.pretraining import recipe_changes
from mimsdk.shards import LeftOut, Manifest, write_shards


class PrepareOrSkip:
    """``prepared[i]``, or None (left out, named once) when it cannot be prepared; with ``strict``, an error."""

    def __init__(self, prepared: Prepared, strict: bool) -> None:
        self.prepared, self.strict = prepared, strict

    def __call__(self, index: int) -> dict[str, Any] | None:
        try:
            sample = self.prepared[index]
        except PROGRAM_ERRORS:
            raise
        except Exception as err:  # noqa: BLE001 - any reading failure is this sample's, named below
            reason = failure_reason(err, self.prepared.source(index))
            if self.strict:  # raised in the main process once the workers are done: litdata hangs on a raise
                return LeftOut(f"{reason} (strict mode: a bad sample stops the sharding)", stops=True)
            warnings.warn(f"left out of the shards: {reason}", stacklevel=2)
            return None
        for key, value in sample.items():
            # litdata stores a string that names an existing media file as that file's bytes
            if isinstance(value, str) and Path(value).is_file():
                raise TypeError(f"the stored sample's {key!r} is a path string, which litdata would replace by "
                                "the file's content; store it as bytes")  # fmt: skip
        return sample


def shard(
    recipe: str | Path | Recipe | dict = "quickstart",
    data: str | Path | dict | None = None,
    out: str | Path = "shards",
    *,
    workers: int | None = None,
    chunk_bytes: str = "64MB",
    compression: str | None = None,
    overrides: list[str] | None = None,
    **fields: Any,
) -> Path:
    """Prepare the recipe's data (``data`` as :func:`mimsdk.pretrain` takes it) into a shard set at ``out``.

    Args:
        workers: preparing processes (default: ``data.num_workers``, at least 1).
        chunk_bytes: the size of each shard file (litdata's ``chunk_bytes``, e.g. "64MB").
        compression: litdata's chunk compression, "zstd" or None: worth it for decoded pixels (video frames,
            volumes), not for images kept as JPEG or PNG bytes.

    Returns the shard set's folder, written whole or not at all.
    """
    cfg = load_recipe(recipe, recipe_changes(data, overrides, fields))
    adapter = get_adapter(cfg.data.modality)
    path = cfg.data.path or adapter.sample_path()
    if path is None:
        raise DataError(f"data.path is not set and the {cfg.data.modality} adapter ships no sample")
    opts = adapter.options(cfg.data, cfg.model)
    prepared = adapter.prepared(Path(path), cfg.data, cfg.model, opts, verify=True)
    manifest = Manifest(
        adapter=adapter.name,
        version=adapter.version,
        preparation=adapter.preparation(cfg.data, cfg.model, opts),
        count=len(prepared),
        classes=list(prepared.classes),
        facts=adapter.shard_facts(prepared, cfg.data, cfg.model, opts),
        source=Path(path).name,
    )
    count = workers or max(1, cfg.data.num_workers)
    prepare = PrepareOrSkip(prepared, cfg.data.strict)
    return write_shards(prepare, len(prepared), out, manifest, count, chunk_bytes, compression)
