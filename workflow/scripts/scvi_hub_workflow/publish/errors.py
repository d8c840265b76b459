"""The one error a publish raises."""

from __future__ import annotations


class PublishError(RuntimeError):
    """A publish failed; the message says why and never contains the token."""
