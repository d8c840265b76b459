"""The publish step as the rule runs it: a manifest when publishing is off, else publish."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..layout import ATTEMPTS, FIRST_WAIT_S
from ..settings import PublishSettings
from .certify import certification_error, certify
from .commit import add_to_collection, commit_hub_folder, status_of
from .errors import CertificationFailed, PublishError
from .manifest import (
    HUB_MAX_FILE_BYTES,
    build_manifest,
    check_sizes,
    manifest_receipt,
    now,
    public_files,
)
from .token import find_token, redact, token_redacted
from .verify import VERIFY_CELLS, check_verifiable

log = logging.getLogger("scvi_hub_workflow.publish")


def publish(
    hub_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    settings: PublishSettings,
    token: str,
    *,
    max_file_bytes: int = HUB_MAX_FILE_BYTES,
    attempts: int = ATTEMPTS,
    wait_s: float = FIRST_WAIT_S,
    certification_record: str | None = None,
) -> dict[str, Any]:
    """Publish ``hub_dir`` to ``settings.repo_id`` and return the receipt (see module doc);
    a failed certification raises CertificationFailed naming ``certification_record``."""
    from huggingface_hub import HfApi, constants

    started = now()
    repo_id = settings.repo_id
    if not repo_id:
        raise PublishError("publish.repo_id is not set")
    hub_dir = Path(hub_dir)
    manifest = build_manifest(hub_dir)
    check_sizes(manifest, max_file_bytes)

    if settings.verify:
        check_verifiable(hub_dir, model_dir, VERIFY_CELLS)

    api = HfApi(token=token)
    user = _whoami(api)
    log.info("publishing %s as %s to %s", hub_dir, user, constants.ENDPOINT)
    api.create_repo(repo_id, exist_ok=True, private=settings.private)
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
        "private": settings.private,
        "files": public_files(manifest),
        "started_at": started,
    }
    if settings.verify:
        # one download of the revision as a user meets it: fresh folder and process, its
        # downstream use, the comparison with the local model (verification), the data
        certification = certify(repo_id, commit, model_dir, token)
        receipt["certification"] = certification
        if not certification["passed"]:
            error = certification_error(repo_id, certification, certification_record)
            raise CertificationFailed(str(error), certification)
        data = certification.get("data_check") or {}
        log.info(
            "certified %s at %s: %s; verified against the local model; data: %s",
            repo_id,
            commit,
            certification.get("ran"),
            "; ".join(data.get("checked") or []) or "nothing to compare",
        )
    if settings.collection:
        receipt["collection"] = add_to_collection(api, settings.collection, repo_id, token)
    receipt["finished_at"] = now()
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
    settings: PublishSettings,
    receipt_path: str | os.PathLike,
    certification_path: str | os.PathLike | None = None,
    **options: Any,
) -> dict[str, Any]:
    """What the rule does: a manifest when publishing is off, else publish; write the receipt.

    ``certification_path`` (the rule's log, which Snakemake keeps when the job fails) records
    the certification whatever happens: the result, or why none ran; on a failure also the
    error. Any failure surfaces as a :class:`PublishError` whose text (and chain) is token-free.
    """
    from ..rule_io import write_json

    record: dict[str, Any] = {"certified": False, "reason": "publishing is disabled"}
    token = None
    try:
        if not settings.enabled:
            receipt = manifest_receipt(hub_dir, settings)
        else:
            token = find_token()
            if token is None:
                raise PublishError("publishing is enabled but no token: set HF_TOKEN or log in")
            record["reason"] = "publish.verify is false"
            if certification_path is not None:
                options["certification_record"] = str(certification_path)
            try:
                with token_redacted(token):
                    receipt = publish(hub_dir, model_dir, settings, token, **options)
            except CertificationFailed as error:
                message = redact(str(error), token)
                record = {"certified": True, **error.certification, "error": message}
                raise PublishError(message) from None
            except PublishError as error:
                raise PublishError(redact(str(error), token)) from None
            except Exception as error:
                message = redact(f"{type(error).__name__}: {error}", token)
                raise PublishError(f"publishing {settings.repo_id} failed: {message}") from None
            if "certification" in receipt:
                record = {"certified": True, **receipt["certification"]}
    except PublishError as error:
        if not record.get("certified"):
            record = {"certified": False, "reason": f"publishing failed before it: {error}"}
        raise
    finally:
        if certification_path is not None:
            write_json(certification_path, json.loads(redact(json.dumps(record), token)))
    write_json(receipt_path, receipt)
    return receipt
