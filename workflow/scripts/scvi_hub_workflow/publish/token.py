"""The user's Hugging Face token: found, required before training, kept out of messages."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from ..settings import PublishSettings


def find_token() -> str | None:
    """The user's Hub token: ``HF_TOKEN``, else huggingface_hub's stored login; None if neither.

    Whitespace is stripped: a token pasted into a file keeps its newline and the Hub rejects it.
    """
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token
    from huggingface_hub import get_token

    stored = (get_token() or "").strip()
    return stored or None


def require_token_for(models: dict[str, PublishSettings]) -> None:
    """Fail before any training when a model asks to be published but cannot be.

    ``models`` maps model name -> its publish settings.
    """
    enabled = sorted(name for name, s in models.items() if s.enabled)
    if not enabled:
        return
    problems = []
    no_repo = [name for name in enabled if not models[name].repo_id]
    if no_repo:
        problems.append(
            f"publish.enabled is true but publish.repo_id is not set for: {', '.join(no_repo)}"
        )
    if find_token() is None:
        problems.append(
            f"publishing is enabled for {', '.join(enabled)} but no Hugging Face token was found: "
            "set HF_TOKEN or run `hf auth login` (a token with write access)"
        )
    if problems:
        raise ValueError("; ".join(problems) + ". See docs/publishing.md.")


def redact(text: str, token: str | None) -> str:
    """``text`` with every occurrence of the token (and its stripped form) replaced."""
    if token:
        text = text.replace(token, "<token>").replace(token.strip(), "<token>")
    return text


class _RedactingFilter(logging.Filter):
    """Redacts the token from a record's message, arguments and traceback text."""

    def __init__(self, token: str):
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage(), self.token), None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, redact(text, self.token)
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, self.token)
        return True


class _RedactingStream:
    """A text stream that redacts the token from whatever is written (prints, warnings)."""

    def __init__(self, stream, token: str):
        self._stream, self._token = stream, token

    def write(self, text: str) -> int:
        return self._stream.write(redact(text, self._token))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def token_redacted(token: str | None):
    """While publishing, every log record (warnings too) and stdout/stderr are token-free.

    The filter goes on the handlers, which see the records of every logger (huggingface_hub's
    included), not on one logger.
    """
    if not token:
        yield
        return
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    handlers = {h for lg in loggers for h in lg.handlers}
    filtered = _RedactingFilter(token)
    for handler in handlers:
        handler.addFilter(filtered)
    old_out, old_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _RedactingStream(old_out, token), _RedactingStream(old_err, token)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        for handler in handlers:
            handler.removeFilter(filtered)
