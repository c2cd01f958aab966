"""The ``huggingface_hub`` client as mimsdk uses it: which endpoint, which names are repo ids, which errors.

- the endpoint is ``HF_ENDPOINT`` as it is when a call is made (falling back to the client's own
  setting), passed explicitly to every client call, so setting the variable after
  ``huggingface_hub`` was imported still takes effect;
- the client's many exceptions become one :class:`HubError` naming the repo, the revision and the
  endpoint, with any token scrubbed from the message;
- a name is a Hub repo id only if it is shaped ``user/name`` and names nothing on disk.

``huggingface_hub`` is imported inside the functions that use it, never at module level.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mimsdk.hub.errors import HubError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def endpoint() -> str:
    """The Hub endpoint: ``HF_ENDPOINT`` now, else what ``huggingface_hub`` read when imported."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def scrub(text: str, token: str | bool | None) -> str:
    """``text`` with the token, if it appears, replaced by ``***``."""
    return text.replace(token, "***") if isinstance(token, str) and token else text


@contextmanager
def hub_errors(what: str, repo_id: str, revision: str | None, token: str | bool | None) -> Iterator[None]:
    """Turn the client's exceptions into one HubError naming the repo, the revision and the endpoint."""
    import httpx2
    from huggingface_hub import errors

    url = endpoint()
    rev = f" (revision {revision})" if revision else ""

    def first_line(err: BaseException) -> str:
        lines = [line for line in scrub(str(err), token).splitlines() if line.strip()]
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


def describe(repo_id: str, revision: str | None) -> str:
    """How messages name a repo: ``user/name (revision v1) at http://endpoint``."""
    return repo_id + (f" (revision {revision})" if revision else "") + f" at {endpoint()}"


def check_repo_id(repo_id: str) -> None:
    """Refuse a name that cannot be a Hub repo id, before any request is made."""
    if not REPO_ID.match(repo_id):
        raise HubError(f"{repo_id!r} is not a Hub repository id; expected 'user/name' (or 'organisation/name')")


def looks_local(path: str | Path) -> bool:
    """True if ``path`` names something on disk, or cannot be a Hub repo id (``user/name``)."""
    return isinstance(path, Path) or Path(path).expanduser().exists() or not REPO_ID.match(str(path))
