"""The remote side: compare with the Hub, commit once on top of the head read, retry."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..layout import ATTEMPTS, FIRST_WAIT_S, retried
from .errors import PublishError
from .token import redact

log = logging.getLogger("scvi_hub_workflow.publish")


def remote_differences(api: Any, repo_id: str, commit: str, manifest: list[dict]) -> list[str]:
    """Names of local files that are missing or different at ``commit`` (empty: all equal).

    LFS/Xet files are compared by sha256 (their LFS oid), small files by git blob sha1.
    Remote files we do not have (``.gitattributes``, older extras) are left alone.
    """
    from huggingface_hub import RepoFile

    remote = {
        f.path: (f.lfs.sha256 if f.lfs is not None else f.blob_id)
        for f in api.list_repo_tree(repo_id, revision=commit, recursive=True)
        if isinstance(f, RepoFile)
    }
    return [
        f["path"] for f in manifest if remote.get(f["path"]) not in (f["sha256"], f["git_sha1"])
    ]


def is_transient(error: BaseException) -> bool:
    """Worth retrying: a 5xx/429 answer, or a connection that failed or was reset."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(error, HfHubHTTPError) and error.response is not None:
        return error.response.status_code >= 500 or error.response.status_code == 429
    return isinstance(error, httpx2.TransportError | ConnectionError)


def status_of(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def commit_hub_folder(
    api: Any,
    repo_id: str,
    hub_dir: Path,
    manifest: list[dict],
    *,
    attempts: int = ATTEMPTS,
    wait_s: float = FIRST_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, bool]:
    """Make the remote main branch hold ``hub_dir``'s files: (commit sha, whether we committed).

    Each attempt reads the head, stops if it already matches, else sends one commit whose parent
    is that head. Transient errors are retried with exponential backoff; re-reading the head first
    also catches a commit that landed although its response was lost. A 412 (someone pushed
    since we read the head) ends in success only when the new head already holds our files.
    """
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    def attempt(_number: int) -> tuple[str, bool]:
        head = api.repo_info(repo_id, revision="main").sha
        if not remote_differences(api, repo_id, head, manifest):
            return head, False
        # Operations are single-use in huggingface_hub: build them afresh per attempt.
        operations = [
            CommitOperationAdd(path_in_repo=f["path"], path_or_fileobj=str(hub_dir / f["path"]))
            for f in manifest
        ]
        try:
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=f"Publish {repo_id} with scvi-hub-workflow",
                parent_commit=head,
            )
        except HfHubHTTPError as error:
            if status_of(error) == 412:
                return _after_concurrent_push(api, repo_id, head, manifest)
            raise
        return info.oid, True

    return retried(
        attempt,
        is_transient,
        what=f"commit to {repo_id}",
        attempts=attempts,
        wait_s=wait_s,
        sleep=sleep,
        log=log,
    )


def _after_concurrent_push(api: Any, repo_id: str, read_head: str, manifest: list[dict]):
    new_head = api.repo_info(repo_id, revision="main").sha
    differing = remote_differences(api, repo_id, new_head, manifest)
    if not differing:
        log.info("someone else already pushed these exact files as %s", new_head)
        return new_head, False
    raise PublishError(
        f"{repo_id} changed while publishing: its head moved from {read_head} to {new_head} and "
        f"the new head has different {', '.join(differing)}. Nothing was overwritten; check who "
        "pushed, then run the workflow again to publish on top of the new head."
    )


def add_to_collection(api: Any, slug: str, repo_id: str, token: str) -> dict[str, Any]:
    """Add the repo to the user's collection; a failure is reported, not raised."""
    try:
        api.add_collection_item(slug, item_id=repo_id, item_type="model", exists_ok=True)
        return {"slug": slug, "added": True}
    except Exception as error:
        message = redact(f"{type(error).__name__}: {error}", token)
        log.warning("published, but adding it to collection %s failed: %s", slug, message)
        return {"slug": slug, "added": False, "error": message}
