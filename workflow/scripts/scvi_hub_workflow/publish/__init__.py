"""Publish a model's hub folder to the Hugging Face Hub in one commit, certify it, write a receipt.

Why not ``scvi.hub.HubModel.push_to_huggingface_hub``: in scvi-tools 1.4.2 it skips ``model.pt``
by default, makes several commits (card first), then edits the scvi-tools organisation's
collections. Here: one ``create_commit`` whose parent is the head we read, so a failure leaves the
repo as it was and a concurrent push is never overwritten.

The token comes from ``HF_TOKEN`` or the huggingface_hub login, never from the workflow config
(Snakemake records params in its metadata); every message that leaves this module is redacted.

``HF_ENDPOINT`` is read by huggingface_hub at import time, so the heavy imports stay inside the
functions and this module can be imported (for the token check) without fixing the endpoint.

Modules, by job: ``token`` (find, require and redact the token), ``manifest`` (the files to
commit), ``commit`` (remote diff, one commit, retries, collection), ``certify`` (one download of the
pushed revision, loaded in a fresh process, its use, the data), ``verify`` (a step of it: the
download against the local model), ``step`` (what the rule runs), ``cli`` (the same from a shell).
"""

from .commit import commit_hub_folder, is_transient, remote_differences
from .errors import PublishError
from .manifest import HUB_MAX_FILE_BYTES, build_manifest, check_sizes, manifest_receipt
from .step import publish, run
from .token import find_token, redact, require_token_for, token_redacted
from .verify import LATENT_TOLERANCE, VERIFY_CELLS, check_verifiable, compare_with_local

__all__ = [
    "HUB_MAX_FILE_BYTES",
    "LATENT_TOLERANCE",
    "VERIFY_CELLS",
    "PublishError",
    "build_manifest",
    "check_sizes",
    "check_verifiable",
    "commit_hub_folder",
    "compare_with_local",
    "find_token",
    "is_transient",
    "manifest_receipt",
    "publish",
    "redact",
    "remote_differences",
    "require_token_for",
    "run",
    "token_redacted",
]
