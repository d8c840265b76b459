"""The errors a publish raises."""

from __future__ import annotations

from typing import Any


class PublishError(RuntimeError):
    """A publish failed; the message says why and never contains the token."""


class CertificationFailed(PublishError):
    """The pushed revision failed certification; ``certification`` is the result to record."""

    def __init__(self, message: str, certification: dict[str, Any]):
        super().__init__(message)
        self.certification = certification
