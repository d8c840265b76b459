"""A loopback CELLxGENE Discover curation API and file server, for tests.

It answers the two calls the workflow makes, with the field names of the API's OpenAPI
description (backend/curation/api/curation-api.yml of chanzuckerberg/single-cell-data-portal):
`GET /curation/v1/dataset_versions/{dataset_version_id}` (one `dataset_version`) and
`GET /curation/v1/datasets/{dataset_id}/versions` (a list, newest first); each version's
`assets` holds `filetype`, `url` and `filesize`. Files are served from `/files/<name>` with
HTTP Range support. Faults for tests: `drop_after` (close the connection after that many bytes
of a file, `drops` times), `ignore_range` (answer every Range request with the whole file),
`announced_size` (a `filesize` in the API that differs from the file).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Version:
    dataset_id: str
    dataset_version_id: str
    payload: bytes
    title: str = "Tabula Sapiens - a test tissue"
    cell_count: int | None = None
    announced_size: int | None = None  # filesize the API says, if not the real one


@dataclass
class CellxgeneServer:
    versions: list[Version] = field(default_factory=list)  # newest first per dataset
    drop_after: int | None = None
    drops: int = 1
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)

    def __post_init__(self):
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                state.requests.append((self.path, self.headers.get("Range")))
                match = re.fullmatch(r"/curation/v1/dataset_versions/([^/]+)", self.path)
                if match:
                    found = [v for v in state.versions if v.dataset_version_id == match[1]]
                    return self._json(state.describe(found[0])) if found else self._not_found()
                match = re.fullmatch(r"/curation/v1/datasets/([^/]+)/versions", self.path)
                if match:
                    found = [state.describe(v) for v in state.versions if v.dataset_id == match[1]]
                    return self._json(found) if found else self._not_found()
                match = re.fullmatch(r"/files/([^/]+)\.h5ad", self.path)
                found = [v for v in state.versions if match and v.dataset_version_id == match[1]]
                if not found:
                    return self._not_found()
                return self._file(found[0].payload)

            def _json(self, body):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _not_found(self):
                data = json.dumps({"detail": "Not found", "status": 404}).encode()
                self.send_response(404)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _file(self, payload: bytes):
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
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def describe(self, v: Version) -> dict:
        """A `dataset_version` as the curation API returns it (fields we do not use left out)."""
        return {
            "dataset_id": v.dataset_id,
            "dataset_version_id": v.dataset_version_id,
            "collection_id": "c0ffee00-0000-4000-8000-000000000000",
            "title": v.title,
            "cell_count": v.cell_count,
            "schema_version": "5.2.0",
            "assets": [
                {
                    "filetype": "H5AD",
                    "filesize": v.announced_size
                    if v.announced_size is not None
                    else len(v.payload),
                    "url": f"{self.base}/files/{v.dataset_version_id}.h5ad",
                },
                {
                    "filetype": "RDS",
                    "filesize": 1,
                    "url": f"{self.base}/files/{v.dataset_version_id}.rds",
                },
            ],
        }

    def file_requests(self) -> list[str | None]:
        """The Range header of every file request, in order (None: a plain GET)."""
        return [rng for path, rng in self.requests if path.startswith("/files/")]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
