"""Model directories and the Hugging Face Hub: save, push, pull and load, through ``huggingface_hub``.

A published model is mimsdk's own model directory (see :mod:`mimsdk.serialization`):

    config.json          format_version, the whole ModelConfig (tokenizer, masker, target, encoder,
                         decoder) and the adapter's metadata (channel names, normalisation, ...)
    model.safetensors    the weights (encoder and decoder, or the encoder alone when encoder_only)
    README.md            a model card; training_curve.png and reconstruction.png when a run is pushed

Rules kept here:

- only safetensors are read and nothing is unpickled: a repo that offers only ``.bin``/``.pt``
  weights is refused, saying why;
- a directory is written completely or not at all (staged beside its target, then renamed), and a
  pull downloads into a temporary folder that becomes the target only once its model loads;
- the token goes to ``huggingface_hub`` only: it is never logged, never written, and scrubbed from
  any error message that would quote it;
- the endpoint is ``HF_ENDPOINT`` as it is when a call is made (falling back to the client's
  own setting), passed explicitly to every client call, so setting the variable after
  ``huggingface_hub`` was imported still takes effect.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mimsdk.hub.card import CARD_NAME, CURVE_NAME, RECON_NAME, write_card
from mimsdk.model import MaskedAutoencoder
from mimsdk.serialization import CONFIG_NAME, PICKLE_SUFFIXES, WEIGHTS_NAME, load_model, model_directory, save_model

log = logging.getLogger(__name__)

# What a pull copies: the model, its card and the card's pictures. from_pretrained needs only the first two.
MODEL_FILES = [CONFIG_NAME, WEIGHTS_NAME]
PULL_FILES = [CONFIG_NAME, WEIGHTS_NAME, CARD_NAME, CURVE_NAME, RECON_NAME]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(RuntimeError):
    """A Hub repository that cannot be used, or a Hub that cannot be reached; the message says which and why."""


def endpoint() -> str:
    """The Hub endpoint: ``HF_ENDPOINT`` now, else what ``huggingface_hub`` read when imported."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _scrub(text: str, token: str | bool | None) -> str:
    return text.replace(token, "***") if isinstance(token, str) and token else text


@contextmanager
def _hub_errors(what: str, repo_id: str, revision: str | None, token: str | bool | None) -> Iterator[None]:
    """Turn the client's exceptions into one HubError naming the repo, the revision and the endpoint."""
    import httpx2
    from huggingface_hub import errors

    url = endpoint()
    rev = f" (revision {revision})" if revision else ""

    def first_line(err: BaseException) -> str:
        lines = [line for line in _scrub(str(err), token).splitlines() if line.strip()]
        return f"{type(err).__name__}: {lines[0] if lines else ''}"

    try:
        yield
    except HubError:
        raise
    except errors.RevisionNotFoundError:
        raise HubError(f"{what}: repository {repo_id} at {url} has no revision {revision!r}") from None
    except errors.RepositoryNotFoundError:
        raise HubError(
            f"{what}: repository {repo_id} not found at {url}, or it is private and the token (HF_TOKEN or "
            "`hf auth login`) has no access to it"
        ) from None
    except errors.RemoteEntryNotFoundError as err:
        raise HubError(f"{what}: a file is missing from {repo_id}{rev} at {url}: {first_line(err)}") from None
    except errors.LocalEntryNotFoundError as err:
        cause = err.__cause__ or err.__context__
        if cause is None or isinstance(cause, errors.OfflineModeIsEnabled):
            raise HubError(
                f"{what}: {repo_id}{rev} is not in the local Hub cache, and downloads are off "
                "(local_files_only or HF_HUB_OFFLINE=1)"
            ) from None
        raise HubError(f"{what}: cannot reach the Hugging Face Hub at {url}: {first_line(cause)}") from None
    except (httpx2.TransportError, errors.OfflineModeIsEnabled) as err:
        raise HubError(
            f"{what}: cannot reach the Hugging Face Hub at {url} (HF_ENDPOINT, or the default): {first_line(err)}"
        ) from None
    except errors.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "?"
        hint = "; log in with `hf auth login` or set HF_TOKEN (write access to push)" if status in (401, 403) else ""
        raise HubError(
            f"{what}: the Hub at {url} answered {status} for {repo_id}{rev}: {first_line(err)}{hint}"
        ) from None


def _check_repo_id(repo_id: str) -> None:
    if not REPO_ID.match(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repository id; expected 'user/name' (or 'organisation/name')")


# -- saving -----------------------------------------------------------------------------------------


def _publish(staging: Path, target: Path) -> None:
    """Move the finished folder ``staging`` to ``target``.

    A new target appears in one rename. Into an existing folder, files are renamed one by one with
    config.json removed first and put back last, so an interrupted update never looks complete.
    """
    if not target.exists():
        os.replace(staging, target)
        return
    if not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    (target / CONFIG_NAME).unlink(missing_ok=True)
    for item in sorted(staging.iterdir()):
        if item.name != CONFIG_NAME:
            os.replace(item, target / item.name)
    os.replace(staging / CONFIG_NAME, target / CONFIG_NAME)
    shutil.rmtree(staging, ignore_errors=True)


def publish_new(staging: Path, target: Path) -> None:
    """Rename the finished folder ``staging`` to ``target``, which must be new or an empty folder."""
    if target.exists():
        if not target.is_dir() or any(target.iterdir()):
            raise FileExistsError(f"{target} already exists and is not empty; choose a new directory")
        target.rmdir()
    os.replace(staging, target)


@contextmanager
def staging_dir(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` (same file system, so renames are atomic), removed on failure."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    """Write ``model`` (config.json, model.safetensors) and its model card to ``directory``, atomically."""
    directory = Path(directory)
    with staging_dir(directory) as staging:
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
        _publish(staging, directory)
    return directory


# -- pushing ----------------------------------------------------------------------------------------


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
    """Publish ``model`` to ``repo_id`` in a single commit; returns the commit URL.

    One commit (``HfApi.create_commit``) rather than ``upload_folder``, whose pipeline may split a
    folder into several commits: a reader never sees new weights with an old config.json.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from mimsdk.serialization import is_encoder_only

    _check_repo_id(repo_id)
    encoder_only = encoder_only or is_encoder_only(model)
    api = HfApi(endpoint=endpoint(), token=token, library_name="mimsdk")
    what = f"push to {repo_id}"
    with _hub_errors(what, repo_id, revision, token):
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
            kind = "encoder-only checkpoint" if encoder_only else "checkpoint"
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
    """Push a run directory (its model, recipe, curve and pictures) or a model directory."""
    path = Path(path)
    directory = model_directory(path)
    run_dir = path if directory != path else None
    model = load_model(directory)
    return push_to_hub(
        model,
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


# -- reading ----------------------------------------------------------------------------------------


def _check_files(repo_id: str, revision: str | None, files: list[str]) -> None:
    """Refuse a repo without config.json, or whose only weights are pickles; say why."""
    where = f"{repo_id}" + (f" (revision {revision})" if revision else "") + f" at {endpoint()}"
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

    _check_repo_id(repo_id)
    offline = local_files_only or constants.is_offline_mode()
    what = f"load {repo_id}"
    with _hub_errors(what, repo_id, revision, token):
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


def _load_downloaded(repo_id: str, revision: str | None, folder: Path, device: str | torch.device = "cpu"):
    """load_model on a downloaded folder, its errors naming the repo rather than a cache or temporary path."""
    from mimsdk.config import ConfigError

    try:
        return load_model(folder, device=device)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        where = f"{repo_id}" + (f" (revision {revision})" if revision else "") + f" at {endpoint()}"
        raise type(err)(f"{where}: {str(err).replace(str(folder) + '/', '')}") from None


def looks_local(path: str | Path) -> bool:
    """True if ``path`` names something on disk, or cannot be a Hub repo id (``user/name``)."""
    return isinstance(path, Path) or Path(path).expanduser().exists() or not REPO_ID.match(str(path))


def load_pretrained(
    path_or_repo: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    device: str | torch.device = "cpu",
) -> MaskedAutoencoder:
    """A model from a local model or run directory, or from a Hub repo id, in eval mode.

    Anything that exists on disk, or cannot be a repo id, is read as a directory (a local folder
    named like ``user/name`` wins over the Hub repo).
    """
    if looks_local(path_or_repo):
        return load_model(Path(path_or_repo).expanduser(), device=device)
    try:
        folder = download(
            str(path_or_repo),
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
        )
    except HubError as err:
        raise HubError(f"{path_or_repo} is not a local directory, and {err}") from None
    return _load_downloaded(str(path_or_repo), revision, folder, device)


def pull(
    repo_id: str,
    directory: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
) -> Path:
    """Download ``repo_id`` (model, card, pictures) into the new folder ``directory``.

    Files land in a temporary folder beside it, which is renamed to ``directory`` only after the
    model in it loads; on any error nothing is left behind.
    """
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileExistsError(f"{directory} already exists and is not empty; pull into a new directory")
    with staging_dir(directory) as staging:
        download(repo_id, revision=revision, token=token, local_dir=staging, files=PULL_FILES)
        shutil.rmtree(staging / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping for local_dir
        _load_downloaded(repo_id, revision, staging)  # complete and consistent, or an error naming what is wrong
        publish_new(staging, directory)
    return directory
