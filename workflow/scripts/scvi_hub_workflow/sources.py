"""Where a model's data come from: the `dataset.source` forms and the file each one lands in."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .layout import BUILTIN_DATA, CELLXGENE_DATA, CELLXGENE_RECORD, DOWNLOADED_DATA

CELLXGENE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


@dataclass(frozen=True)
class DatasetSource:
    """Where a model's data comes from: `builtin`, `url`, `cellxgene` or `path`."""

    kind: str
    location: str
    sha256: str | None
    checksum: str | None = None  # `md5:<hex>` or `sha256:<hex>`

    @property
    def digest(self) -> str | None:
        """The hex digest naming a URL's download: the sha256 if given, else the checksum's."""
        if self.sha256:
            return self.sha256.lower()
        if self.checksum:
            return self.checksum.partition(":")[2].lower()
        return None

    @property
    def workflow_path(self) -> str:
        """The file the `dataset` rule reads (built-ins and downloads land in resources/)."""
        if self.kind == "builtin":
            return BUILTIN_DATA.format(name=self.location)
        if self.kind == "url":
            return DOWNLOADED_DATA.format(digest=self.digest)
        if self.kind == "cellxgene":
            return CELLXGENE_DATA.format(cellxgene_id=self.location)
        return self.location

    @property
    def record_path(self) -> str | None:
        """What the download resolved (CELLxGENE: version id, URL, size, sha256), or None."""
        if self.kind == "cellxgene":
            return CELLXGENE_RECORD.format(cellxgene_id=self.location)
        return None


def parse_source(source: str, sha256: str | None, checksum: str | None = None) -> DatasetSource:
    if source.startswith("builtin:"):
        return DatasetSource("builtin", source.removeprefix("builtin:"), sha256, checksum)
    if source.startswith("cellxgene:"):
        return DatasetSource("cellxgene", source.removeprefix("cellxgene:"), sha256, checksum)
    if source.startswith(("http://", "https://")):
        return DatasetSource("url", source, sha256, checksum)
    return DatasetSource("path", source, sha256, checksum)
