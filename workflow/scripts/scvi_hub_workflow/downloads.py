"""Large-file downloads: resumed after a dropped connection, progress-logged, verified, atomic.

A transfer is complete only when the bytes received equal the length the server announced:
Python 3.11's `HTTPResponse.read()` returns b"" at an early end of stream instead of raising,
so a dropped connection would otherwise look like a finished (and corrupt) file. An incomplete
transfer is retried from where it stopped with an HTTP `Range` request; a server that ignores
the range (200 instead of 206) is read again from the start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .layout import ATTEMPTS, FIRST_WAIT_S, retried
from .rule_io import atomic_path

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
ALGORITHMS = {"md5": 32, "sha256": 64}


# What every network error says about trying again, so nobody waits for a retry that cannot
# help, nor gives up on one that could.
RETRY_MAY_HELP = (
    "a retry may help: the server or the network failed, not the request; run the workflow "
    "again later"
)
RETRY_WONT_HELP = "a retry will not help: the same request gets the same answer"


class DownloadError(ValueError):
    """A download that cannot succeed: wrong size or checksum, a client error, retries spent.

    `url` and `status` (the HTTP status, None for a network error or a wrong file) say what
    failed; `retryable` whether running again could help.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        status: int | None = None,
        retryable: bool = False,
    ):
        super().__init__(message)
        self.url, self.status, self.retryable = url, status, retryable

    def for_models(self, models: list[str], what: str) -> DownloadError:
        """The same error, naming the models that read the file and what they configured."""
        return type(self)(
            f"{what} ({_models_text(models)}): {self}",
            url=self.url,
            status=self.status,
            retryable=self.retryable,
        )


def _models_text(models: list[str]) -> str:
    if not models:
        return "no model"
    return ("model " if len(models) == 1 else "models ") + ", ".join(models)


def advice(retryable: bool) -> str:
    return RETRY_MAY_HELP if retryable else RETRY_WONT_HELP


class _Incomplete(OSError):
    """The connection ended before the announced length; retried with a Range request."""


@dataclass(frozen=True)
class Checksum:
    """An expected digest, `md5:<hex>` or `sha256:<hex>` (Zenodo publishes md5 per file)."""

    algorithm: str
    hexdigest: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def parse_checksum(text: str, key: str = "dataset.checksum") -> Checksum:
    """`md5:<32 hex>` or `sha256:<64 hex>`; anything else is an error naming `key`."""
    algorithm, _, digest = text.partition(":")
    algorithm, digest = algorithm.strip().lower(), digest.strip().lower()
    if algorithm not in ALGORITHMS or not re.fullmatch(
        f"[0-9a-f]{{{ALGORITHMS[algorithm]}}}", digest
    ):
        raise DownloadError(
            f"{key}: {text!r} is not 'md5:<32 hex digits>' or 'sha256:<64 hex digits>'"
        )
    return Checksum(algorithm, digest)


def is_retryable(error: BaseException) -> bool:
    """Network trouble and server-side errors (5xx, 429) are worth retrying; 4xx are not."""
    if isinstance(error, urllib.error.HTTPError):
        return error.code >= 500 or error.code == 429
    return isinstance(error, urllib.error.URLError | OSError | TimeoutError)


class _Progress:
    """At most one log line every `every_s` seconds: bytes so far, rate and time left."""

    def __init__(self, url: str, every_s: float):
        self.url, self.every_s = url, every_s
        self.start = self.last = time.monotonic()

    def update(self, done: int, total: int | None, resumed_from: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        rate = (done - resumed_from) / max(now - self.start, 1e-9)
        if total:
            eta = (total - done) / rate if rate > 0 else float("inf")
            log.info(
                "%s: %s of %s (%.0f%%), %s/s, ETA %s",
                self.url,
                _size(done),
                _size(total),
                100 * done / total,
                _size(rate),
                _duration(eta),
            )
        else:
            log.info("%s: %s, %s/s", self.url, _size(done), _size(rate))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "unknown"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _total_length(response, offset: int) -> int | None:
    """The whole file's length: from Content-Range on a 206, Content-Length on a 200."""
    if response.status == 206:
        match = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            raise _Incomplete(f"server answered a Range request with {match and match.group(0)}")
        return None if match.group(3) == "*" else int(match.group(3))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def download(
    url: str,
    path: str | os.PathLike,
    sha256: str | None = None,
    *,
    checksum: str | Checksum | None = None,
    expected_size: int | None = None,
    attempts: int = ATTEMPTS,
    backoff_s: float = FIRST_WAIT_S,
    timeout_s: float = 60.0,
    progress_every_s: float = 5.0,
) -> dict:
    """Download `url` to `path`; return {"url", "size", "sha256", "md5"} of what was written.

    The sha256 (and md5) is computed while the bytes arrive, so a multi-GB file is read once.
    `sha256` and `checksum` (`md5:<hex>` or `sha256:<hex>`) are verified when given, and so is
    `expected_size`; a mismatch is not retried (the server would send the same bytes again).
    A failed or corrupted transfer never leaves a file at `path`.
    """
    expected = []
    if sha256:
        expected.append(("sha256", sha256.lower(), f"the configured sha256 {sha256.lower()}"))
    if checksum:
        parsed = parse_checksum(checksum) if isinstance(checksum, str) else checksum
        expected.append((parsed.algorithm, parsed.hexdigest, f"the configured checksum {parsed}"))
    progress = _Progress(url, progress_every_s)
    with atomic_path(path) as tmp, open(tmp, "r+b") as out:
        state = {"offset": 0, "total": None, "hashes": _new_hashes()}

        def attempt(number: int) -> None:
            offset = state["offset"]
            request = urllib.request.Request(url)
            if offset:
                request.add_header("Range", f"bytes={offset}-")
                log.info("%s: resuming at byte %d (attempt %d)", url, offset, number)
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                if offset and response.status != 206:
                    log.info("%s: the server ignored the Range request; starting again", url)
                    offset = state["offset"] = 0
                    state["hashes"] = _new_hashes()
                    out.seek(0)
                    out.truncate()
                total = _total_length(response, offset)
                state["total"] = total
                resumed_from = offset
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    for digest in state["hashes"].values():
                        digest.update(chunk)
                    offset = state["offset"] = offset + len(chunk)
                    progress.update(offset, total, resumed_from)
                out.flush()
                if total is not None and offset < total:
                    raise _Incomplete(f"connection closed after {offset} of {total} bytes")

        try:
            retried(
                attempt,
                is_retryable,
                what=f"download of {url}",
                attempts=attempts,
                wait_s=backoff_s,
                log=log,
            )
        except urllib.error.HTTPError as error:
            retryable = is_retryable(error)
            spent = f" (after {attempts} attempts)" if retryable else ""
            raise DownloadError(
                f"GET {url} answered HTTP {error.code} {error.reason}{spent}; {advice(retryable)}",
                url=url,
                status=error.code,
                retryable=retryable,
            ) from None
        except (OSError, TimeoutError) as error:
            raise DownloadError(
                f"GET {url}: download failed after {attempts} attempts, no HTTP status "
                f"(network error: {_reason(error)}); {RETRY_MAY_HELP}",
                url=url,
                retryable=True,
            ) from None
        size = state["offset"]
        progress.update(size, state["total"], 0, force=True)
        if expected_size is not None and size != expected_size:
            raise DownloadError(
                f"GET {url} (HTTP 200): received {size} bytes, but the file should have "
                f"{expected_size}; {RETRY_WONT_HELP}",
                url=url,
                status=200,
            )
        digests = {name: h.hexdigest() for name, h in state["hashes"].items()}
        for algorithm, want, configured in expected:
            if digests[algorithm] != want:
                actual = f"{algorithm.upper()} {digests[algorithm]}"
                raise DownloadError(
                    f"GET {url} (HTTP 200): {actual} does not match {configured}; "
                    f"{RETRY_WONT_HELP}",
                    url=url,
                    status=200,
                )
    log.info("%s: %d bytes, sha256 %s, written to %s", url, size, digests["sha256"], path)
    return {"url": url, "size": size, "sha256": digests["sha256"], "md5": digests["md5"]}


def _reason(error: BaseException) -> str:
    """A network error in words: urllib wraps the socket's error in `reason`."""
    reason = getattr(error, "reason", None) or error
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__


def _new_hashes() -> dict:
    return {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}


def verify_file(path: str | os.PathLike, checksum: str | Checksum, key: str) -> None:
    """Check a local file against `md5:<hex>` / `sha256:<hex>`; the error names `key`."""
    parsed = parse_checksum(checksum, key) if isinstance(checksum, str) else checksum
    digest = hashlib.new(parsed.algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    if digest.hexdigest() != parsed.hexdigest:
        raise DownloadError(
            f"{path}: {parsed.algorithm.upper()} {digest.hexdigest()} differs from {key} "
            f"{parsed.hexdigest}"
        )


def models_reading(models: dict, path: str) -> list[str]:
    """The names of the models whose dataset is the file at `path` (a download's output)."""
    return sorted(name for name, s in models.items() if s.dataset.location.workflow_path == path)
