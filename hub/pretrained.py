"""Pretrained models: save with a card, push to the Hub, load from anywhere, pull a copy.

A published model is mimsdk's own model directory (see :mod:`mimsdk.serialization`):

    config.json          format_version, the whole ModelConfig (tokenizer, masker, target, encoder,
                         decoder) and the adapter's metadata (channel names, normalisation, ...)
    model.safetensors    the weights (encoder and decoder, or the encoder alone when encoder_only)
    README.md            a model card; training_curve.png and reconstruction.png when a run is pushed

:func:`load_model` is the one way to load: a run directory, a model directory or a Hub repo id.

Rules kept here:

- only safetensors are read and nothing is unpickled: a repo that offers only ``.bin``/``.pt``
  weights is refused, saying why, before anything is downloaded;
- a directory is written completely or not at all (:func:`mimsdk.atomic.atomic_dir`), and a pull
  downloads into a temporary folder that becomes the target only once its model loads;
- the token goes to ``huggingface_hub`` only: it is never logged, never written, and scrubbed from
  any error message that would quote it (:mod:`mimsdk.hub.client`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from mimsdk.atomic import atomic_dir
from mimsdk.errors import ConfigError
from mimsdk.hub.card import CARD_NAME, CURVE_NAME, RECON_NAME, write_card
from mimsdk.hub.client import check_repo_id, describe, endpoint, hub_errors, looks_local
from mimsdk.hub.errors import HubError
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import (
    CONFIG_NAME,
    PICKLE_SUFFIXES,
    WEIGHTS_NAME,
    is_encoder_only,
    model_directory,
    read_model,
    save_model,
)

log = logging.getLogger(__name__)

# What a pull copies: the model, its card and the card's pictures. load_model needs only the first two.
MODEL_FILES = [CONFIG_NAME, WEIGHTS_NAME]
PULL_FILES = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, CURVE_NAME, RECON_NAME]


# -- saving and pushing -----------------------------------------------------------------------------


def save_pretrained(
    model: MaskedAutoencoder,
    directory: str | Path,
    *,
    encoder_only: bool = False,
    run_dir: str | Path | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    datasets: list[str] | None = None,
    history: list[dict[str, float]] | None = None,
) -> Path:
    """Write ``model`` (config.json, model.safetensors) and its model card (README.md) to ``directory``.

    Written atomically: staged beside ``directory``, then renamed; an existing model directory is
    updated with config.json put back last. ``encoder_only`` keeps the tokenizer, positions and
    encoder. ``run_dir`` (a run directory) adds its recipe, training curve, kNN results and
    reconstruction picture to the card; ``repo_id`` names the model in the card's snippets.
    """
    directory = Path(directory)
    with atomic_dir(directory, replace=True, last=CONFIG_NAME) as staging:
        save_model(model, staging, encoder_only=encoder_only)
        write_card(
            model,
            staging,
            encoder_only=encoder_only,
            run_dir=run_dir,
            repo_id=repo_id,
            license=license,
            datasets=datasets,
            history=history,
        )
    return directory


def push_to_hub(
    model: MaskedAutoencoder,
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
    """Publish ``model`` to ``repo_id`` (created if needed) in a single commit; returns the commit URL.

    ``revision`` names a branch (created from main if missing); ``private`` applies when the repo is
    created. One commit (``HfApi.create_commit``) rather than ``upload_folder``, whose pipeline may
    split a folder into several commits: a reader never sees new weights with an old config.json.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    check_repo_id(repo_id)
    encoder_only = encoder_only or is_encoder_only(model)
    api = HfApi(endpoint=endpoint(), token=token, library_name="mimsdk")
    kind = "encoder-only checkpoint" if encoder_only else "checkpoint"
    with hub_errors(f"push to {repo_id}", repo_id, revision, token):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mimsdk-push-") as tmp:
            folder = save_pretrained(
                model,
                Path(tmp) / "repo",
                encoder_only=encoder_only,
                run_dir=run_dir,
                repo_id=repo_id,
                license=license,
                datasets=datasets,
            )
            # config.json last, so a reader of the commit's file list meets the weights first
            files = sorted(folder.iterdir(), key=lambda p: (p.name == CONFIG_NAME, p.name))
            operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in files]
            info = api.create_commit(
                repo_id, operations, commit_message=commit_message or f"Upload mimsdk {kind}", revision=revision
            )
    log.info("pushed %s to %s", kind, info.commit_url)
    return info.commit_url


def push_directory(
    path: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    encoder_only: bool = False,
    license: str | None = None,
    datasets: list[str] | None = None,
    commit_message: str | None = None,
) -> str:
    """Push a run directory (its model, and its recipe, curve and pictures in the card) or a model directory."""
    path = Path(path)
    directory = model_directory(path)
    return push_to_hub(
        read_model(directory),
        repo_id,
        private=private,
        token=token,
        revision=revision,
        encoder_only=encoder_only,
        run_dir=path if directory != path else None,
        license=license,
        datasets=datasets,
        commit_message=commit_message,
    )


# -- reading and pulling ----------------------------------------------------------------------------


def _check_files(repo_id: str, revision: str | None, files: list[str]) -> None:
    """Refuse a repo without config.json, or whose only weights are pickles; say why."""
    where = describe(repo_id, revision)
    if CONFIG_NAME not in files:
        shown = ", ".join(sorted(files)[:8]) or "no files"
        raise HubError(f"{where} holds no {CONFIG_NAME}, so it is not a mimsdk model ({shown})")
    if WEIGHTS_NAME not in files:
        unsafe = sorted(f for f in files if f.endswith(PICKLE_SUFFIXES))
        if unsafe:
            raise HubError(
                f"{where} offers only pickled weights ({', '.join(unsafe)}), no {WEIGHTS_NAME}: mimsdk reads "
                "safetensors only, because loading a pickle can run arbitrary code; ask the author for safetensors"
            )
        raise HubError(f"{where} has {CONFIG_NAME} but no {WEIGHTS_NAME}")


def _repo_files(api: Any, repo_id: str, revision: str | None) -> list[str]:
    info = api.model_info(repo_id, revision=revision)
    return [s.rfilename for s in info.siblings or []]


def download(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    local_dir: str | Path | None = None,
    files: list[str] | None = None,
) -> Path:
    """Fetch a model repo's files (config.json and model.safetensors by default) and return their folder.

    The file list is checked first: no config.json, or pickled weights only, is an error and nothing
    is downloaded. Files go to the Hub cache, or to ``local_dir``.
    """
    from huggingface_hub import HfApi, constants, snapshot_download

    check_repo_id(repo_id)
    offline = local_files_only or constants.is_offline_mode()
    with hub_errors(f"load {repo_id}", repo_id, revision, token):
        if not offline:
            api = HfApi(endpoint=endpoint(), token=token, library_name="mimsdk")
            _check_files(repo_id, revision, _repo_files(api, repo_id, revision))
        # the revision as given (not the commit just listed), so the cache records it for offline use
        folder = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=cache_dir,
            local_dir=local_dir,
            token=token,
            endpoint=endpoint(),
            allow_patterns=files or MODEL_FILES,
            force_download=force_download,
            local_files_only=offline,
            library_name="mimsdk",
        )
    folder = Path(folder)
    if offline:  # nothing listed remotely: check what the cache holds
        _check_files(repo_id, revision, [p.name for p in folder.iterdir()])
    return folder


def _read_downloaded(
    repo_id: str, revision: str | None, folder: Path, device: str | torch.device = "cpu"
) -> MaskedAutoencoder:
    """read_model on a downloaded folder, its errors naming the repo rather than a cache or temporary path."""
    try:
        return read_model(folder, device=device)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise type(err)(f"{describe(repo_id, revision)}: {str(err).replace(str(folder) + '/', '')}") from None


def load_model(
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    device: str | torch.device = "cpu",
) -> MaskedAutoencoder:
    """A model from a run directory, a model directory or a Hub repo id (``"user/name"``), in eval mode.

    Anything that exists on disk, or cannot be a repo id, is read as a directory (a local folder
    named like ``user/name`` wins over the Hub repo); ``revision``, ``token``, ``cache_dir``,
    ``force_download`` and ``local_files_only`` apply to a Hub repo. Only config.json and
    model.safetensors are read; a repo offering only pickled weights is refused.
    """
    if looks_local(path_or_repo_id):
        return read_model(Path(path_or_repo_id).expanduser(), device=device)
    repo_id = str(path_or_repo_id)
    try:
        folder = download(
            repo_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
        )
    except HubError as err:
        raise HubError(f"{repo_id} is not a local directory, and {err}") from None
    return _read_downloaded(repo_id, revision, folder, device)


def pull(
    repo_id: str,
    directory: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """Download ``repo_id`` (model, card, pictures) into the new folder ``directory``.

    Files land in a temporary folder beside it, which is renamed to ``directory`` only after the
    model in it loads; on any error nothing is left behind. Loading checks config.json's model size and
    the weights' shapes before building anything (:func:`mimsdk.serialization.read_model`), so a crafted
    config is refused in one line naming the field.
    """
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"{directory} already exists and is not empty; pull into a new directory")
    with atomic_dir(directory) as staging:
        download(repo_id, revision=revision, token=token, local_dir=staging, files=PULL_FILES)
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping for local_dir
        _read_downloaded(repo_id, revision, staging)  # complete and consistent, or an error naming what is wrong
    return directory
