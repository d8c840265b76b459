"""A loopback CELLxGENE Discover curation API and file server, for tests.

It answers the two calls the workflow makes, in every shape the API's OpenAPI description
(backend/curation/api/curation-api.yml of chanzuckerberg/single-cell-data-portal) allows:
`GET /curation/v1/dataset_versions/{dataset_version_id}` (one `dataset_version`; with
`version_as_list`, a list of them, as an earlier description said) and
`GET /curation/v1/datasets/{dataset_id}/versions` (a list, newest first; with
`versions_wrapped`, `{"datasets": [...]}`, as an earlier description said). No field of a
`dataset_version` is required: a Version's `fields` replace or (value `OMIT`) drop fields of the
answer, and its `assets` replace the default H5AD + RDS pair. Errors are problem+json bodies.
Files are served from `/files/<name>` with HTTP Range support.

Faults for tests: `drop_after` (close the connection after that many bytes of a file, `drops`
times), `ignore_range` (answer every Range request with the whole file), `announced_size` (a
`filesize` in the API that differs from the file), `statuses` (path prefix -> HTTP status, for
every request to it), `not_json` (path prefixes answered 200 with an HTML page) and
`bytes_per_s` (a slow file server, for tests that stop a run mid-download).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OMIT = object()  # a `fields` value: leave the field out of the answer
REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 410: "Gone"}


@dataclass
class Version:
    dataset_id: str
    dataset_version_id: str
    payload: bytes
    title: str | None = "Tabula Sapiens - a test tissue"
    cell_count: int | None = None
    announced_size: int | float | None = None  # filesize the API says, if not the real one
    assets: list[dict] | None = None  # replaces the H5AD + RDS pair ({url}: the file's URL)
    fields: dict = field(default_factory=dict)  # replace (or, with OMIT, drop) answer fields


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        import sys

        # A client killed mid-request (the interruption tests) is no server error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class CellxgeneServer:
    versions: list[Version] = field(default_factory=list)  # newest first per dataset
    drop_after: int | None = None
    drops: int = 1
    ignore_range: bool = False
    version_as_list: bool = False
    versions_wrapped: bool = False
    statuses: dict[str, int] = field(default_factory=dict)
    not_json: tuple[str, ...] = ()
    bytes_per_s: float | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    sent: int = 0  # bytes of files sent so far

    def __post_init__(self):
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                state.requests.append((self.path, self.headers.get("Range")))
                for prefix, status in state.statuses.items():
                    if self.path.startswith(prefix):
                        return self._problem(status)
                if state.not_json and self.path.startswith(state.not_json):
                    return self._send(200, "text/html", b"<html>Service unavailable</html>")
                match = re.fullmatch(r"/curation/v1/dataset_versions/([^/]+)", self.path)
                if match:
                    found = [v for v in state.versions if v.dataset_version_id == match[1]]
                    if not found:
                        return self._problem(404)
                    body = state.describe(found[0])
                    return self._json([body] if state.version_as_list else body)
                match = re.fullmatch(r"/curation/v1/datasets/([^/]+)/versions", self.path)
                if match:
                    found = [state.describe(v) for v in state.versions if v.dataset_id == match[1]]
                    if not found:
                        return self._problem(404)
                    return self._json({"datasets": found} if state.versions_wrapped else found)
                match = re.fullmatch(r"/files/([^/]+)\.h5ad", self.path)
                found = [v for v in state.versions if match and v.dataset_version_id == match[1]]
                if not found:
                    return self._problem(404)
                return self._file(found[0].payload)

            def _json(self, body):
                self._send(200, "application/json", json.dumps(body).encode())

            def _problem(self, status: int):
                title = REASONS.get(status, "Error")
                body = {"detail": f"{title} (test server)", "status": status, "title": title}
                self._send(status, "application/problem+json", json.dumps(body).encode())

            def _send(self, status: int, content_type: str, data: bytes):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _file(self, payload: bytes):
                # A client killed mid-transfer (the interruption tests) is no server error.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._send_file(payload)

            def _send_file(self, payload: bytes):
                start = 0
                ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if ranged and not state.ignore_range:
                    start = int(ranged[1])
                    self.send_response(206)
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}"
                    )
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(payload) - start))
                self.end_headers()
                body = payload[start:]
                if state.drop_after is not None and state.drops > 0:
                    state.drops -= 1
                    self.wfile.write(body[: max(state.drop_after - start, 0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if state.bytes_per_s:
                    chunk = max(int(state.bytes_per_s / 20), 1)
                    for offset in range(0, len(body), chunk):
                        self.wfile.write(body[offset : offset + chunk])
                        self.wfile.flush()
                        state.sent += len(body[offset : offset + chunk])
                        time.sleep(chunk / state.bytes_per_s)
                    return
                self.wfile.write(body)
                state.sent += len(body)

            def log_message(self, *args):
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def file_url(self, v: Version) -> str:
        return f"{self.base}/files/{v.dataset_version_id}.h5ad"

    def describe(self, v: Version) -> dict:
        """A `dataset_version` as the curation API returns it (fields we do not use left out)."""
        assets = v.assets
        if assets is None:
            size = v.announced_size if v.announced_size is not None else len(v.payload)
            assets = [
                {"filetype": "H5AD", "filesize": size, "url": "{url}"},
                {"filetype": "RDS", "filesize": 1, "url": f"{self.base}/files/x.rds"},
            ]
        assets = [
            {k: (self.file_url(v) if val == "{url}" else val) for k, val in a.items()}
            for a in assets
        ]
        body = {
            "dataset_id": v.dataset_id,
            "dataset_version_id": v.dataset_version_id,
            "collection_id": "c0ffee00-0000-4000-8000-000000000000",
            "title": v.title,
            "cell_count": v.cell_count,
            "schema_version": "5.2.0",
            "assets": assets,
        }
        body.update(v.fields)
        return {k: val for k, val in body.items() if val is not OMIT}

    def file_requests(self) -> list[str | None]:
        """The Range header of every file request, in order (None: a plain GET)."""
        return [rng for path, rng in self.requests if path.startswith("/files/")]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
