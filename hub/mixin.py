"""The Hub on ``MaskedAutoencoder``, through ``huggingface_hub``'s ``ModelHubMixin``.

``MaskedAutoencoder`` inherits :class:`HubMixin`, a ``ModelHubMixin`` whose ``_save_pretrained`` /
``_from_pretrained`` (and the public methods around them) read and write mimsdk's own model
directory, config.json with ``format_version`` + model.safetensors (:mod:`mimsdk.serialization`),
plus a model card, instead of the mixin's generic format:

- ``save_pretrained(dir, encoder_only=False, run_dir=None)``: written atomically;
- ``push_to_hub(repo_id, private=..., token=..., revision=..., encoder_only=...)``: one commit;
- ``MaskedAutoencoder.from_pretrained(repo_id_or_dir, revision=...)``: rebuilds the exact model
  from config.json alone; only safetensors are read.

``ModelHubMixin`` rather than ``PyTorchModelHubMixin``: the latter's loader falls back to pickled
``pytorch_model.bin`` files, which mimsdk refuses to read. The work is in :mod:`mimsdk.hub.pretrained`;
imports are deferred because that module imports ``mimsdk.model``, which imports this one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelHubMixin


class HubMixin(ModelHubMixin):
    """``save_pretrained`` / ``push_to_hub`` / ``from_pretrained`` for ``MaskedAutoencoder``."""

    def _save_pretrained(self, save_directory: Path) -> None:
        from mimsdk.serialization import save_model

        save_model(self, save_directory)

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | Path,
        *,
        encoder_only: bool = False,
        run_dir: str | Path | None = None,
        repo_id: str | None = None,
        license: str | None = None,
        datasets: list[str] | None = None,
        history: list[dict[str, float]] | None = None,
    ) -> Path:
        """Write config.json, model.safetensors and a model card (README.md) to ``save_directory``, atomically.

        ``encoder_only`` keeps the tokenizer, positions and encoder. ``run_dir`` (a run directory)
        adds its recipe, training curve, kNN results and reconstruction picture to the card.
        """
        from mimsdk.hub.pretrained import save_pretrained

        return save_pretrained(
            self,
            save_directory,
            encoder_only=encoder_only,
            run_dir=run_dir,
            repo_id=repo_id,
            license=license,
            datasets=datasets,
            history=history,
        )

    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        encoder_only: bool = False,
        run_dir: str | Path | None = None,
        license: str | None = None,
        datasets: list[str] | None = None,
        commit_message: str | None = None,
    ) -> str:
        """Publish this model to ``repo_id`` in one commit (created if needed); returns the commit URL.

        ``revision`` names a branch (created from main if missing); ``private`` applies when the repo is created.
        """
        from mimsdk.hub.pretrained import push_to_hub

        return push_to_hub(
            self,
            repo_id,
            private=private,
            token=token,
            revision=revision,
            encoder_only=encoder_only,
            run_dir=run_dir,
            license=license,
            datasets=datasets,
            commit_message=commit_message,
        )

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        map_location: str | torch.device = "cpu",
    ) -> Any:  # MaskedAutoencoder
        """The model in a local model or run directory, or in a Hub repo (``"user/name"``), in eval mode.

        Only config.json and model.safetensors are read; a repo offering only pickled weights is refused.
        """
        return cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            map_location=map_location,
        )

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str | torch.device = "cpu",
        **model_kwargs: Any,
    ) -> Any:  # MaskedAutoencoder
        from mimsdk.hub.pretrained import load_pretrained

        if model_kwargs:
            raise TypeError(f"unexpected arguments {sorted(model_kwargs)}: the model is rebuilt from its config.json")
        return load_pretrained(
            model_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            device=map_location,
        )

    def generate_model_card(self, **kwargs: Any):  # -> huggingface_hub.ModelCard
        """The model card (README.md) for this model; keywords as :func:`mimsdk.hub.card.model_card`."""
        from mimsdk.hub.card import model_card

        return model_card(self, **kwargs)
