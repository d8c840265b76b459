"""The user's Hugging Face token: found, required before training, kept out of messages."""

from __future__ import annotations

import os

from ..config import PublishSettings


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
