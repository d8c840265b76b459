"""Publish a model's hub folder to the Hugging Face Hub in one commit, verify it, write a receipt.

Why not ``scvi.hub.HubModel.push_to_huggingface_hub``: in scvi-tools 1.4.2 it skips ``model.pt``
by default, makes several commits (card first), then edits the scvi-tools organisation's
collections. Here: one ``create_commit`` whose parent is the head we read, so a failure leaves the
repo as it was and a concurrent push is never overwritten.

The token comes from ``HF_TOKEN`` or the huggingface_hub login, never from the workflow config
(Snakemake records params in its metadata); every message that leaves this module is redacted.

``HF_ENDPOINT`` is read by huggingface_hub at import time, so the heavy imports stay inside the
functions and this module can be imported (for the token check) without fixing the endpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .hub import HUB_FILES
from .rule_io import sha256_of

log = logging.getLogger("scvi_hub_workflow.publish")

# The Hub refuses files above 50 GB (https://huggingface.co/docs/hub/storage-limits).
HUB_MAX_FILE_BYTES = 50 * 1000**3
LATENT_TOLERANCE = 1e-4


class PublishError(RuntimeError):
    """A publish failed; the message says why and never contains the token."""


# --- token --------------------------------------------------------------------------------


def find_token() -> str | None:
    """The user's Hub token: ``HF_TOKEN``, else huggingface_hub's stored login; None if neither.

    Whitespace is stripped: a token pasted into a file keeps its newline and the Hub rejects it.
    """
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token
    from huggingface_hub import get_token

    stored = (get_token() or "").strip()
    return stored or None


def require_token_for(models: dict[str, dict]) -> None:
    """Fail before any training when a model asks to be published but cannot be.

    ``models`` maps model name -> merged settings (with a ``publish`` section).
    """
    enabled = sorted(name for name, s in models.items() if (s.get("publish") or {}).get("enabled"))
    if not enabled:
        return
    problems = []
    no_repo = [name for name in enabled if not models[name]["publish"].get("repo_id")]
    if no_repo:
        problems.append(
            f"publish.enabled is true but publish.repo_id is not set for: {', '.join(no_repo)}"
        )
    if find_token() is None:
        problems.append(
            f"publishing is enabled for {', '.join(enabled)} but no Hugging Face token was found: "
            "set HF_TOKEN or run `hf auth login` (a token with write access)"
        )
    if problems:
        raise ValueError("; ".join(problems) + ". See docs/publishing.md.")


def redact(text: str, token: str | None) -> str:
    """``text`` with every occurrence of the token (and its stripped form) replaced."""
    if token:
        text = text.replace(token, "<token>").replace(token.strip(), "<token>")
    return text


# --- manifest ------------------------------------------------------------------------------


def git_blob_sha1_of(path: Path) -> str:
    """The id the Hub's tree API gives a small (non-LFS) file: git's blob sha1."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(hub_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The hub layout's files (sorted): name, size, sha256 and git blob sha1.

    Exactly ``HUB_FILES``: anything else in the folder is never published, and a missing one
    stops the publish before the repo is touched.
    """
    hub_dir = Path(hub_dir)
    missing = [name for name in HUB_FILES if not (hub_dir / name).is_file()]
    if missing:
        raise PublishError(f"{hub_dir} lacks {', '.join(missing)}: nothing to publish")
    files = sorted(hub_dir / name for name in HUB_FILES)
    return [
        {
            "path": p.relative_to(hub_dir).as_posix(),
            "size": p.stat().st_size,
            "sha256": sha256_of(p),
            "git_sha1": git_blob_sha1_of(p),
        }
        for p in files
    ]


def check_sizes(manifest: list[dict[str, Any]], limit: int = HUB_MAX_FILE_BYTES) -> None:
    """Refuse files the Hub would reject, before creating a repo or uploading anything."""
    too_big = [f for f in manifest if f["size"] > limit]
    if too_big:
        names = ", ".join(f"{f['path']} ({f['size'] / 1e9:.1f} GB)" for f in too_big)
        raise PublishError(
            f"files over the Hub's limit of {limit / 1e9:g} GB per file: {names}. Publish the "
            "model with a minified adata and put the full training data elsewhere, naming it "
            "in `training_data_url` (see docs/publishing.md)."
        )


def public_files(manifest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Manifest entries as the receipt shows them."""
    return [{k: f[k] for k in ("path", "size", "sha256")} for f in manifest]


def manifest_receipt(hub_dir: str | os.PathLike, settings: dict[str, Any]) -> dict[str, Any]:
    """What publishing would commit, for models with ``publish.enabled: false``."""
    manifest = build_manifest(hub_dir)
    return {
        "published": False,
        "repo_id": settings.get("repo_id"),
        "files": public_files(manifest),
        "written_at": _now(),
    }


# --- remote state --------------------------------------------------------------------------


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


# --- publish ---------------------------------------------------------------------------------


def commit_hub_folder(
    api: Any,
    repo_id: str,
    hub_dir: Path,
    manifest: list[dict],
    *,
    attempts: int = 4,
    wait_s: float = 2.0,
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

    for attempt in range(1, attempts + 1):
        try:
            head = api.repo_info(repo_id, revision="main").sha
            if not remote_differences(api, repo_id, head, manifest):
                return head, False
            # Operations are single-use in huggingface_hub: build them afresh per attempt.
            operations = [
                CommitOperationAdd(path_in_repo=f["path"], path_or_fileobj=str(hub_dir / f["path"]))
                for f in manifest
            ]
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=f"Publish {repo_id} with scvi-hub-workflow",
                parent_commit=head,
            )
            return info.oid, True
        except Exception as error:
            if isinstance(error, HfHubHTTPError) and status_of(error) == 412:
                return _after_concurrent_push(api, repo_id, head, manifest)
            if not is_transient(error) or attempt == attempts:
                raise
            log.warning("attempt %d of %d failed (%s); retrying", attempt, attempts, error)
        sleep(wait_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


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


def verify_pull(
    repo_id: str,
    commit: str,
    model_dir: str | os.PathLike,
    token: str,
    n_cells: int = 64,
) -> dict[str, Any]:
    """Pull ``commit`` as a user would (fresh cache), load it, compare it with the local model.

    Two checks: the pulled weights equal the local model's, and the latent representation of
    the first cells (matched by obs name) equals the local model's.
    """
    import numpy as np
    import scvi.hub

    with tempfile.TemporaryDirectory(prefix="scvi-hub-verify-") as cache:
        hub_model = scvi.hub.HubModel.pull_from_huggingface_hub(
            repo_id, cache_dir=cache, revision=commit, token=token
        )
        pulled = hub_model.model
        names = list(pulled.adata.obs_names[:n_cells])
        # What a user gets: for a minified model, the stored latent posterior mean.
        pulled_latent = np.asarray(pulled.get_latent_representation(indices=np.arange(len(names))))

    # The local model is the same class as the published one, saved with its full adata.
    local = type(pulled).load(str(model_dir))
    position = {name: i for i, name in enumerate(local.adata.obs_names)}
    missing = [n for n in names if n not in position]
    if missing:
        raise PublishError(f"verification: pulled cells missing from the local data: {missing[:3]}")
    local_latent = local.get_latent_representation(indices=[position[n] for n in names])
    latent_diff = float(np.max(np.abs(np.asarray(local_latent) - pulled_latent)))
    local_weights, pulled_weights = local.module.state_dict(), pulled.module.state_dict()
    if set(local_weights) != set(pulled_weights):
        raise PublishError("verification: the pulled model has different parameters")
    weight_diff = max(
        float((local_weights[k].float() - pulled_weights[k].float()).abs().max())
        for k in local_weights
        if local_weights[k].numel()
    )
    result = {
        "commit": commit,
        "model_class": type(pulled).__name__,
        "cells_compared": len(names),
        "max_abs_latent_difference": latent_diff,
        "max_abs_weight_difference": weight_diff,
        "tolerance": LATENT_TOLERANCE,
        "passed": max(latent_diff, weight_diff) <= LATENT_TOLERANCE,
    }
    if not result["passed"]:
        raise PublishError(
            f"verification failed: the model pulled from {repo_id}@{commit} differs from the "
            f"local one (latent by up to {latent_diff:.3g}, weights by up to {weight_diff:.3g}; "
            f"tolerance {LATENT_TOLERANCE})"
        )
    return result


def add_to_collection(api: Any, slug: str, repo_id: str, token: str) -> dict[str, Any]:
    """Add the repo to the user's collection; a failure is reported, not raised."""
    try:
        api.add_collection_item(slug, item_id=repo_id, item_type="model", exists_ok=True)
        return {"slug": slug, "added": True}
    except Exception as error:
        message = redact(f"{type(error).__name__}: {error}", token)
        log.warning("published, but adding it to collection %s failed: %s", slug, message)
        return {"slug": slug, "added": False, "error": message}


def publish(
    hub_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    settings: dict[str, Any],
    token: str,
    *,
    max_file_bytes: int = HUB_MAX_FILE_BYTES,
    attempts: int = 4,
    wait_s: float = 2.0,
) -> dict[str, Any]:
    """Publish ``hub_dir`` to ``settings['repo_id']`` and return the receipt (see module doc)."""
    from huggingface_hub import HfApi, constants

    started = _now()
    repo_id = settings.get("repo_id")
    if not repo_id:
        raise PublishError("publish.repo_id is not set")
    hub_dir = Path(hub_dir)
    manifest = build_manifest(hub_dir)
    check_sizes(manifest, max_file_bytes)

    api = HfApi(token=token)
    user = _whoami(api)
    log.info("publishing %s as %s to %s", hub_dir, user, constants.ENDPOINT)
    api.create_repo(repo_id, exist_ok=True, private=bool(settings.get("private", False)))
    commit, committed = commit_hub_folder(
        api, repo_id, hub_dir, manifest, attempts=attempts, wait_s=wait_s
    )
    log.info("%s at %s (%s)", repo_id, commit, "new commit" if committed else "no changes")
    receipt: dict[str, Any] = {
        "published": True,
        "repo_id": repo_id,
        "url": f"{constants.ENDPOINT}/{repo_id}",
        "commit": commit,
        "commit_url": f"{constants.ENDPOINT}/{repo_id}/commit/{commit}",
        "new_commit": committed,
        "message": "committed" if committed else "remote already held these files; no commit made",
        "private": bool(settings.get("private", False)),
        "files": public_files(manifest),
        "started_at": started,
    }
    if settings.get("verify", True):
        receipt["verification"] = verify_pull(repo_id, commit, model_dir, token)
    if settings.get("collection"):
        receipt["collection"] = add_to_collection(api, settings["collection"], repo_id, token)
    receipt["finished_at"] = _now()
    return receipt


def _whoami(api: Any) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return api.whoami()["name"]
    except HfHubHTTPError as error:
        if status_of(error) == 401:
            raise PublishError(
                "the Hugging Face Hub rejected the token (401 Unauthorized): check HF_TOKEN or "
                "run `hf auth login` again with a token that has write access"
            ) from None
        raise


def run(
    hub_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    settings: dict[str, Any],
    receipt_path: str | os.PathLike,
    **options: Any,
) -> dict[str, Any]:
    """What the rule does: a manifest when publishing is off, else publish; write the receipt.

    Any failure surfaces as a :class:`PublishError` whose text (and chain) is token-free.
    """
    from scvi_hub_workflow.rule_io import write_json

    settings = settings or {}
    if not settings.get("enabled", False):
        receipt = manifest_receipt(hub_dir, settings)
    else:
        token = find_token()
        if token is None:
            raise PublishError("publishing is enabled but no token: set HF_TOKEN or log in")
        try:
            receipt = publish(hub_dir, model_dir, settings, token, **options)
        except PublishError as error:
            raise PublishError(redact(str(error), token)) from None
        except Exception as error:
            message = redact(f"{type(error).__name__}: {error}", token)
            raise PublishError(f"publishing {settings.get('repo_id')} failed: {message}") from None
    write_json(receipt_path, receipt)
    return receipt


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m scvi_hub_workflow.publish --hub DIR --model DIR ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub", required=True, help="the hub folder to publish")
    parser.add_argument("--model", required=True, help="the trained model folder (verification)")
    parser.add_argument("--settings", required=True, help="the publish settings, as JSON")
    parser.add_argument("--receipt", required=True, help="where to write the receipt")
    parser.add_argument("--max-file-bytes", type=int, default=HUB_MAX_FILE_BYTES)
    parser.add_argument("--attempts", type=int, default=4)
    parser.add_argument("--wait", type=float, default=2.0, help="first retry wait (seconds)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        receipt = run(
            args.hub,
            args.model,
            json.loads(args.settings),
            args.receipt,
            max_file_bytes=args.max_file_bytes,
            attempts=args.attempts,
            wait_s=args.wait,
        )
    except PublishError as error:
        log.error("%s", error)
        return 1
    log.info("receipt written to %s (published: %s)", args.receipt, receipt["published"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
