"""How a model was made: the record published next to it as provenance.json.

The training job records what only it can know (the workflow's commit it ran from, the software
and hardware, why each phase stopped: `training_environment`, in training/summary.json); the
provenance rule gathers that with the model's full settings, the input and the genes into one
record (`build_provenance`), which the card renders and the hub folder publishes.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import tomllib
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .rule_io import sha256_of
from .settings import ModelSettings, as_dict

UNKNOWN = "unknown"
# This checkout's root: the package lives in <root>/workflow/scripts/scvi_hub_workflow.
ROOT = Path(__file__).resolve().parents[3]
# The distributions whose versions the record names (python is added).
SOFTWARE = ("torch", "lightning", "scvi-tools", "anndata", "scanpy")
# The settings that make the model and its card; where it is published (`publish`) is not how
# it was made (publish.json records that), and changing it re-makes nothing.
RECORDED_SETTINGS = (
    "name",
    "description",
    "tissues",
    "dataset",
    "model",
    "hvg",
    "train",
    "criticism",
    "card",
    "minify",
)


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git on this node
    return done.stdout.strip() if done.returncode == 0 else None


def workflow_version(root: Path = ROOT) -> str:
    """The version in pyproject.toml, else the installed distribution's, else unknown."""
    try:
        return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    try:
        return metadata.version("scvi-hub-workflow")
    except metadata.PackageNotFoundError:
        return UNKNOWN


def workflow_source(root: Path = ROOT) -> dict[str, Any]:
    """The workflow's version, git commit and whether tracked files differ from it.

    'unknown' outside a git checkout of this workflow (an installed package inside some other
    repository is not this workflow's checkout) or without git.
    """
    found = {"version": workflow_version(root), "commit": UNKNOWN, "modified": UNKNOWN}
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return found
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    if commit:
        found["commit"] = commit
    if status is not None:
        found["modified"] = bool(status)
    remote = _git(root, "remote", "get-url", "origin")
    if remote:
        found["remote"] = without_credentials(remote)
    return found


def without_credentials(url: str) -> str:
    """A remote's URL without any user or token in it (https://user:token@host/...)."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


def software_versions() -> dict[str, str]:
    """Versions of python and of the libraries that trained the model (without importing them)."""
    found = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = UNKNOWN
    return found


def training_environment() -> dict[str, Any]:
    """What the training job records of itself: workflow source, software, CPU threads, date."""
    import torch

    return {
        "workflow": workflow_source(),
        "software": software_versions(),
        "cpu_threads": torch.get_num_threads(),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def settings_record(settings: ModelSettings) -> tuple[dict, str]:
    """The model's resolved settings (RECORDED_SETTINGS) as a dict, and the sha256 of their
    stable JSON text."""
    data = {k: v for k, v in as_dict(settings).items() if k in RECORDED_SETTINGS}
    text = json.dumps(data, sort_keys=True)
    return data, hashlib.sha256(text.encode()).hexdigest()


def hvg_genes(table) -> list[str]:
    """The genes the model was trained on (hvg.tsv's `highly_variable`), in table order."""
    if "highly_variable" not in table.columns:
        raise ValueError("hvg.tsv has no 'highly_variable' column")
    return [str(g) for g in table.index[table["highly_variable"].astype(bool)]]


def genes_sha256(genes: list[str]) -> str:
    """sha256 of the gene names, one per line, sorted (independent of the ranking's order)."""
    return hashlib.sha256("\n".join(sorted(genes)).encode()).hexdigest()


def _input(settings: ModelSettings, dataset: dict) -> dict[str, Any]:
    resolved = dataset.get("resolved") or {}
    record = {
        "source": settings.dataset.source,
        "file": dataset.get("source"),
        "url": dataset.get("source_url"),
        "sha256": dataset.get("sha256") or resolved.get("sha256") or UNKNOWN,
        "subset": dataset.get("subset") or {},
        "n_cells": dataset.get("n_cells"),
        "n_genes": dataset.get("n_genes"),
    }
    for key in ("dataset_id", "dataset_version_id"):
        if resolved.get(key):
            record[f"cellxgene_{key}"] = resolved[key]
    return record


def _training(training: dict) -> dict[str, Any]:
    seconds = training.get("seconds")
    train_cells = (training.get("n_cells") or {}).get("train")
    epochs = training.get("total_epochs") or training.get("epochs")
    rate = None
    if seconds and train_cells and epochs:
        rate = round(train_cells * epochs / seconds, 1)
    return {
        "seed": training.get("seed"),
        "phases": [
            {k: p.get(k) for k in ("phase", "model_class", "epochs", "max_epochs", "stopped")}
            for p in training.get("phases") or []
        ],
        "seconds": seconds,
        # training cells x epochs (all phases) / seconds
        "cells_per_second": rate,
        "train_cells": train_cells,
    }


def build_provenance(
    settings: ModelSettings,
    dataset: dict,
    hvg_table,
    training: dict,
    env_file: str | Path,
    env_name: str | None = None,
) -> dict[str, Any]:
    """The provenance record of one model (see the module doc); `settings` must be complete."""
    values, digest = settings_record(settings)
    genes = hvg_genes(hvg_table)
    environment = training.get("environment") or {}
    record_training = _training(training)
    record_training["seed"] = settings.train.seed
    return {
        "model": settings.name,
        "workflow": environment.get("workflow")
        or {"version": workflow_version(), "commit": UNKNOWN, "modified": UNKNOWN},
        "settings": values,
        "settings_sha256": digest,
        "input": _input(settings, dataset),
        "genes": {"n_genes": len(genes), "sha256": genes_sha256(genes)},
        "software": environment.get("software") or {"scvi-tools": training.get("scvi_version")},
        "environment_file": {"path": env_name or str(env_file), "sha256": sha256_of(env_file)},
        "hardware": {
            "accelerator": training.get("accelerator"),
            "device": training.get("device"),
            "gpu_name": training.get("gpu_name"),
            "cpu_threads": environment.get("cpu_threads"),
        },
        "training": record_training,
        "trained_at": environment.get("finished_at") or UNKNOWN,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def code_reference(workflow: dict) -> str:
    """Where the training code is: the remote's URL at the commit, or the version and commit."""
    commit = workflow.get("commit") or UNKNOWN
    modified = " (with local modifications)" if workflow.get("modified") is True else ""
    remote = workflow.get("remote")
    if remote and commit != UNKNOWN:
        url = remote.removesuffix(".git")
        if url.startswith("git@") and ":" in url:  # git@host:owner/name -> https://host/owner/name
            host, path = url[4:].split(":", 1)
            url = f"https://{host}/{path}"
        if url.startswith(("https://", "http://")):
            return f"{url}/tree/{commit}{modified}"
    return f"scvi-hub-workflow {workflow.get('version', UNKNOWN)}, commit {commit}{modified}"
