"""CELLxGENE Discover sources: `cellxgene:<id>` resolved through the Discover curation API.

The API's OpenAPI description (backend/curation/api/curation-api.yml of
chanzuckerberg/single-cell-data-portal) declares the two calls made here:

* `GET {base}/curation/v1/dataset_versions/{dataset_version_id}`: one `dataset_version`
  (an earlier description: a list of them); 403, 404 or 410 (withdrawn) otherwise;
* `GET {base}/curation/v1/datasets/{dataset_id}/versions`: a list of `dataset_version`, newest
  first (an earlier description: `{"datasets": [...]}`); 403, 404 or 410 otherwise.

No field of a `dataset_version` is required: `dataset_id`, `title`, `cell_count` and `assets`
may be absent, and several are nullable. Each `assets` entry (`asset_response`) has an optional
`filetype` (H5AD, RDS; later ones may add others), `url` and `filesize` (a JSON number). Errors
come as `application/problem+json` with `detail` and `title`. The API publishes no checksum,
so the download's sha256 is computed and recorded.

Every error names the models that read the id, the id, the URL, the HTTP status (or the network
error) and whether running again could help.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass

from .downloads import RETRY_MAY_HELP, RETRY_WONT_HELP, DownloadError, download, is_retryable
from .layout import ATTEMPTS, FIRST_WAIT_S, retried

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.cellxgene.cziscience.com"
API_URL_VARIABLE = "CELLXGENE_API_URL"
# Statuses the API gives an id that is not of the kind the endpoint takes (a dataset id sent
# to dataset_versions/, or an id it does not know at all).
NOT_THIS_KIND = (400, 403, 404)
CHECK_THE_ID = (
    "check dataset.source: a dataset id or a dataset version id, as on the dataset's page at "
    "cellxgene.cziscience.com"
)


class CellxgeneError(DownloadError):
    """An id the API does not know, an answer the API does not describe, or a failed call."""


@dataclass(frozen=True)
class ResolvedDataset:
    """What `cellxgene:<requested_id>` named when it was resolved (recorded in dataset.json)."""

    requested_id: str
    dataset_id: str | None
    dataset_version_id: str | None
    url: str
    filesize: int | None  # None: the API did not say; the download is then not size-checked
    title: str | None
    cell_count: int | None
    newest_of_dataset: bool  # a bare dataset id was given and resolved to its newest version

    def record(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Call:
    """One API call's context, for messages: which id, for which models, at which URL."""

    identifier: str
    models: tuple[str, ...]

    def who(self) -> str:
        if not self.models:
            return f"cellxgene:{self.identifier}"
        noun = "model" if len(self.models) == 1 else "models"
        return f"cellxgene:{self.identifier} ({noun} {', '.join(self.models)})"

    def error(
        self, problem: str, url: str, status: int | None, retryable: bool, hint: str = ""
    ) -> CellxgeneError:
        answered = f"HTTP {status}" if status is not None else "no HTTP answer"
        advice = RETRY_MAY_HELP if retryable else RETRY_WONT_HELP
        hint = f"; {hint}" if hint else ""
        return CellxgeneError(
            f"{self.who()}: {problem} (GET {url}: {answered}); {advice}{hint}",
            url=url,
            status=status,
            retryable=retryable,
        )


def api_url() -> str:
    """The API root: `$CELLXGENE_API_URL` (tests point it at a loopback server) or the real one."""
    return os.environ.get(API_URL_VARIABLE, DEFAULT_API_URL).rstrip("/")


def _problem_detail(error: urllib.error.HTTPError) -> str:
    """The `detail` (or `title`) of an application/problem+json body, if there is one."""
    try:
        body = json.loads(error.read(65536) or b"null")
    except (ValueError, OSError):
        return ""
    if isinstance(body, dict):
        for key in ("detail", "title"):
            if isinstance(body.get(key), str) and body[key].strip():
                return body[key].strip()
    return ""


def _get_json(call: _Call, url: str, *, attempts: int, backoff_s: float, timeout_s: float):
    """GET `url` as JSON; HTTP errors the caller handles come back as (None, HTTPError)."""

    def attempt(_number: int):
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
            try:
                return json.loads(raw), None
            except ValueError:
                raise call.error(
                    f"CELLxGENE Discover answered something that is not JSON "
                    f"({response.headers.get('Content-Type') or 'no Content-Type'}, "
                    f"{len(raw)} bytes); a proxy or a service outage can do this",
                    url,
                    response.status,
                    retryable=True,
                ) from None

    try:
        return retried(
            attempt, is_retryable, what=f"GET {url}", attempts=attempts, wait_s=backoff_s, log=log
        )
    except urllib.error.HTTPError as error:
        if is_retryable(error):
            detail = _problem_detail(error)
            raise call.error(
                f"CELLxGENE Discover failed {attempts} times"
                + (f" ({error.reason}: {detail})" if detail else f" ({error.reason})"),
                url,
                error.code,
                retryable=True,
            ) from None
        return None, error
    except CellxgeneError:
        raise
    except (OSError, TimeoutError) as error:
        reason = getattr(error, "reason", None) or error
        raise call.error(
            f"could not reach CELLxGENE Discover after {attempts} attempts "
            f"({type(reason).__name__}: {reason})",
            url,
            None,
            retryable=True,
            hint=f"if the network blocks {url.split('/curation/')[0]}, set "
            f"${API_URL_VARIABLE} to a mirror",
        ) from None


def resolve(
    identifier: str,
    base: str | None = None,
    *,
    models: list[str] | tuple[str, ...] = (),
    attempts: int = ATTEMPTS,
    backoff_s: float = FIRST_WAIT_S,
    timeout_s: float = 60.0,
) -> ResolvedDataset:
    """Resolve a dataset version id, or a dataset id (to its newest version)."""
    base = (base or api_url()).rstrip("/")
    call = _Call(identifier, tuple(models))
    quoted = urllib.parse.quote(identifier, safe="")
    kwargs = {"attempts": attempts, "backoff_s": backoff_s, "timeout_s": timeout_s}

    version_url = f"{base}/curation/v1/dataset_versions/{quoted}"
    body, error = _get_json(call, version_url, **kwargs)
    if error is not None and error.code not in NOT_THIS_KIND:
        raise _refused(call, version_url, error)
    if error is None:
        version = _one_version(call, version_url, body)
        if version is not None:
            return _from_version(call, version_url, version, newest=False)

    versions_url = f"{base}/curation/v1/datasets/{quoted}/versions"
    body, error = _get_json(call, versions_url, **kwargs)
    if error is not None:
        if error.code in NOT_THIS_KIND:
            detail = _problem_detail(error)
            raise call.error(
                "CELLxGENE Discover knows no dataset version or dataset with this id: "
                f"GET {version_url} and GET {versions_url} both answered HTTP "
                f"{error.code} {error.reason}" + (f" ({detail})" if detail else ""),
                versions_url,
                error.code,
                retryable=False,
                hint=CHECK_THE_ID,
            )
        raise _refused(call, versions_url, error)
    versions = _version_list(call, versions_url, body)
    if not versions:
        raise call.error("the dataset has no published version", versions_url, 200, retryable=False)
    return _from_version(call, versions_url, versions[0], newest=True)


def newest_version(
    dataset_id: str, base: str | None = None, *, timeout_s: float = 5.0
) -> ResolvedDataset:
    """The newest published version of a dataset id, in one request and without retries
    (GET .../datasets/{id}/versions): whether data downloaded earlier are still the newest."""
    base = (base or api_url()).rstrip("/")
    call = _Call(dataset_id, ())
    url = f"{base}/curation/v1/datasets/{urllib.parse.quote(dataset_id, safe='')}/versions"
    body, error = _get_json(call, url, attempts=1, backoff_s=0.0, timeout_s=timeout_s)
    if error is not None:
        raise _refused(call, url, error)
    versions = _version_list(call, url, body)
    if not versions:
        raise call.error("the dataset has no published version", url, 200, retryable=False)
    return _from_version(call, url, versions[0], newest=True)


def _refused(call: _Call, url: str, error: urllib.error.HTTPError) -> CellxgeneError:
    """A 4xx the caller does not handle: 410 withdrawn, 401 and the rest."""
    detail = _problem_detail(error)
    detail = f": {detail}" if detail else ""
    if error.code == 410:
        return call.error(
            f"withdrawn from CELLxGENE Discover{detail}",
            url,
            410,
            retryable=False,
            hint="choose another version of the dataset in dataset.source",
        )
    return call.error(
        f"CELLxGENE Discover refused the request ({error.reason}{detail})",
        url,
        error.code,
        retryable=False,
    )


def _one_version(call: _Call, url: str, body) -> dict | None:
    """The version in a dataset_versions/ answer: an object, or (earlier) a list of them."""
    if isinstance(body, list):
        found = [v for v in body if isinstance(v, dict)]
        exact = [v for v in found if v.get("dataset_version_id") == call.identifier]
        return (exact or found or [None])[0]
    if isinstance(body, dict):
        return body
    raise _not_described(call, url, body, "a dataset_version object")


def _version_list(call: _Call, url: str, body) -> list[dict]:
    """The versions in a datasets/{id}/versions answer: a list, or (earlier) under `datasets`."""
    if isinstance(body, dict) and isinstance(body.get("datasets"), list):
        body = body["datasets"]
    if isinstance(body, list):
        return [v for v in body if isinstance(v, dict)]
    raise _not_described(call, url, body, "a list of dataset_version objects")


def _not_described(call: _Call, url: str, body, expected: str) -> CellxgeneError:
    return call.error(
        f"CELLxGENE Discover answered {type(body).__name__} where its API description "
        f"declares {expected}",
        url,
        200,
        retryable=False,
    )


def _text(value) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _count(value) -> int | None:
    """A JSON number that is a whole, non-negative count (filesize, cell_count), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if value >= 0 and float(value).is_integer() else None


def _h5ad_url(asset: dict) -> str | None:
    # `url` in asset_response; `presigned_url` where the assets endpoint answers instead.
    return _text(asset.get("url")) or _text(asset.get("presigned_url"))


def _from_version(call: _Call, url: str, version: dict, newest: bool) -> ResolvedDataset:
    assets = version.get("assets")
    assets = [a for a in assets if isinstance(a, dict)] if isinstance(assets, list) else []
    h5ad = [
        a for a in assets if str(a.get("filetype") or "").strip().upper() == "H5AD" and _h5ad_url(a)
    ]
    version_id = _text(version.get("dataset_version_id"))
    if not h5ad:
        types = ", ".join(sorted({str(a.get("filetype")) for a in assets})) or "none"
        raise call.error(
            f"version {version_id or '(no dataset_version_id)'} has no H5AD asset with a URL "
            f"(asset types: {types})",
            url,
            200,
            retryable=False,
            hint="only H5AD files can be read; choose a version that has one",
        )
    asset = h5ad[0]
    return ResolvedDataset(
        requested_id=call.identifier,
        dataset_id=_text(version.get("dataset_id")),
        dataset_version_id=version_id,
        url=_h5ad_url(asset),
        filesize=_count(asset.get("filesize")),
        title=_text(version.get("title")),
        cell_count=_count(version.get("cell_count")),
        newest_of_dataset=newest,
    )


def fetch_dataset(
    identifier: str,
    path: str | os.PathLike,
    *,
    models: list[str] | tuple[str, ...] = (),
    sha256: str | None = None,
    checksum: str | None = None,
    base: str | None = None,
    attempts: int = ATTEMPTS,
    backoff_s: float = FIRST_WAIT_S,
) -> dict:
    """Resolve `identifier`, download its H5AD to `path` (size-checked); return the record."""
    resolved = resolve(identifier, base, models=models, attempts=attempts, backoff_s=backoff_s)
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
    if resolved.filesize is None:
        log.warning("cellxgene:%s: the API gives no filesize; the size is not checked", identifier)
    try:
        got = download(
            resolved.url,
            path,
            sha256,
            checksum=checksum,
            expected_size=resolved.filesize,
            attempts=attempts,
            backoff_s=backoff_s,
        )
    except DownloadError as error:
        raise CellxgeneError(
            f"{_Call(identifier, tuple(models)).who()}: {error}",
            url=error.url,
            status=error.status,
            retryable=error.retryable,
        ) from None
    return {**resolved.record(), "size": got["size"], "sha256": got["sha256"]}
