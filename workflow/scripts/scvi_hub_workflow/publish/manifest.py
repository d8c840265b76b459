"""The manifest: exactly the hub layout's files, their sizes and checksums."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..layout import HUB_FILES
from ..rule_io import sha256_of
from ..settings import PublishSettings
from .errors import PublishError

# The Hub refuses files above 50 GB (https://huggingface.co/docs/hub/storage-limits).
HUB_MAX_FILE_BYTES = 50 * 1000**3


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


def manifest_receipt(hub_dir: str | os.PathLike, settings: PublishSettings) -> dict[str, Any]:
    """What publishing would commit, for models with ``publish.enabled: false``."""
    manifest = build_manifest(hub_dir)
    return {
        "published": False,
        "repo_id": settings.repo_id,
        "files": public_files(manifest),
        "written_at": now(),
    }


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
