"""CELLxGENE Discover sources: `cellxgene:<id>` resolved through the Discover curation API.

The API (OpenAPI description: backend/curation/api/curation-api.yml of
chanzuckerberg/single-cell-data-portal) answers
`GET {base}/curation/v1/dataset_versions/{dataset_version_id}` with one dataset version and
`GET {base}/curation/v1/datasets/{dataset_id}/versions` with every version, newest first. A
version's `assets` list holds, per file type (H5AD, RDS), the download `url` and `filesize`.
The API publishes no checksum, so the download's sha256 is computed and recorded.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass

from .downloads import DownloadError, download, is_retryable
from .layout import ATTEMPTS, FIRST_WAIT_S, retried

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.cellxgene.cziscience.com"
API_URL_VARIABLE = "CELLXGENE_API_URL"


class CellxgeneError(DownloadError):
    """An id the API does not know, or a version without an H5AD file."""


@dataclass(frozen=True)
class ResolvedDataset:
    """What `cellxgene:<requested_id>` named when it was resolved (recorded in dataset.json)."""

    requested_id: str
    dataset_id: str
    dataset_version_id: str
    url: str
    filesize: int
    title: str | None
    cell_count: int | None
    newest_of_dataset: bool  # a bare dataset id was given and resolved to its newest version

    def record(self) -> dict:
        return asdict(self)


def api_url() -> str:
    """The API root: `$CELLXGENE_API_URL` (tests point it at a loopback server) or the real one."""
    return os.environ.get(API_URL_VARIABLE, DEFAULT_API_URL).rstrip("/")


def _get_json(url: str, *, attempts: int, backoff_s: float, timeout_s: float):
    def attempt(_number: int):
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.load(response)

    return retried(
        attempt, is_retryable, what=f"GET {url}", attempts=attempts, wait_s=backoff_s, log=log
    )


def resolve(
    identifier: str,
    base: str | None = None,
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = FIRST_WAIT_S,
    timeout_s: float = 60.0,
) -> ResolvedDataset:
    """Resolve a dataset version id, or a dataset id (to its newest version)."""
    base = (base or api_url()).rstrip("/")
    quoted = urllib.parse.quote(identifier, safe="")
    kwargs = {"attempts": attempts, "backoff_s": backoff_s, "timeout_s": timeout_s}
    version, newest = None, False
    try:
        version = _get_json(f"{base}/curation/v1/dataset_versions/{quoted}", **kwargs)
    except urllib.error.HTTPError as error:
        # The API answers 404 (or 403) for an id that is not a dataset version.
        if error.code not in (403, 404):
            raise CellxgeneError(_http_problem(identifier, error)) from error
    if version is None:
        try:
            versions = _get_json(f"{base}/curation/v1/datasets/{quoted}/versions", **kwargs)
        except urllib.error.HTTPError as error:
            if error.code in (403, 404):
                raise CellxgeneError(
                    f"cellxgene:{identifier}: CELLxGENE Discover ({base}) knows no dataset "
                    "version or dataset with this id (HTTP 404)"
                ) from error
            raise CellxgeneError(_http_problem(identifier, error)) from error
        if isinstance(versions, dict):  # older API descriptions wrap the list
            versions = versions.get("datasets", [])
        if not versions:
            raise CellxgeneError(f"cellxgene:{identifier}: the dataset has no published version")
        version, newest = versions[0], True
    return _from_version(identifier, version, newest)


def _http_problem(identifier: str, error: urllib.error.HTTPError) -> str:
    if error.code == 410:
        return f"cellxgene:{identifier}: withdrawn from CELLxGENE Discover (HTTP 410)"
    return f"cellxgene:{identifier}: CELLxGENE Discover answered HTTP {error.code} {error.reason}"


def _from_version(identifier: str, version: dict, newest: bool) -> ResolvedDataset:
    assets = version.get("assets") or []
    h5ad = [a for a in assets if str(a.get("filetype", "")).upper() == "H5AD"]
    if not h5ad or not h5ad[0].get("url"):
        types = ", ".join(str(a.get("filetype")) for a in assets) or "none"
        raise CellxgeneError(
            f"cellxgene:{identifier}: version {version.get('dataset_version_id')} has no H5AD "
            f"asset (assets: {types})"
        )
    asset = h5ad[0]
    return ResolvedDataset(
        requested_id=identifier,
        dataset_id=str(version.get("dataset_id")),
        dataset_version_id=str(version.get("dataset_version_id")),
        url=str(asset["url"]),
        filesize=int(asset["filesize"]),
        title=version.get("title"),
        cell_count=version.get("cell_count"),
        newest_of_dataset=newest,
    )


def fetch_dataset(
    identifier: str,
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    checksum: str | None = None,
    base: str | None = None,
    attempts: int = ATTEMPTS,
    backoff_s: float = FIRST_WAIT_S,
) -> dict:
    """Resolve `identifier`, download its H5AD to `path` (size-checked); return the record."""
    resolved = resolve(identifier, base, attempts=attempts, backoff_s=backoff_s)
    if resolved.newest_of_dataset:
        log.info(
            "cellxgene:%s is a dataset id: using its newest version %s; put "
            "'cellxgene:%s' in the config to repeat this run exactly",
            identifier,
            resolved.dataset_version_id,
            resolved.dataset_version_id,
        )
    else:
        log.info("cellxgene:%s: dataset version of dataset %s", identifier, resolved.dataset_id)
    got = download(
        resolved.url,
        path,
        sha256,
        checksum=checksum,
        expected_size=resolved.filesize,
        attempts=attempts,
        backoff_s=backoff_s,
    )
    return {**resolved.record(), "size": got["size"], "sha256": got["sha256"]}
