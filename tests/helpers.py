"""Helpers the tests share: paths, running Snakemake, builders of tiny models and hub folders,
and the publish runner. Fixtures that use them are in conftest.py."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anndata
import numpy as np
import pandas as pd
import pytest
from hub_server import HubServer
from scipy import sparse
from scvi_hub_workflow import training
from scvi_hub_workflow.settings import ModelSettings, from_text, to_text

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "configs" / "tiny.yaml"
SPATIAL_CONFIG = ROOT / "tests" / "configs" / "spatial.yaml"
SHARED = ROOT.parent / "shared"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# A fresh, realistic-looking token per session, so grepping for it means something.
TOKEN = "hf_" + secrets.token_hex(17)


def snakemake(*args: str, workdir: Path, env: dict | None = None, timeout: int = 900):
    """Run Snakemake on this repository's Snakefile in `workdir`; return the CompletedProcess."""
    command = [
        *SNAKEMAKE,
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--workflow-profile",
        "none",
        *args,
    ]
    return subprocess.run(
        command,
        cwd=workdir,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@functools.cache
def workflow_rules() -> tuple:
    """The workflow's rules as Snakemake parses them (with the tiny config), through its API."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        wf = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[TINY_CONFIG]),
            snakefile=ROOT / "Snakefile",
        )
        return tuple(wf._workflow.rules)


def declared_keys(rule: str) -> tuple[str, ...]:
    """The settings keys a rule declares (its `settings_of(...)` in workflow/rules/)."""
    (found,) = [r for r in workflow_rules() if r.name == rule]
    return found.params.settings.keys


def rule_settings(settings: ModelSettings, rule: str) -> ModelSettings:
    """What the job of `rule` sees of a model's settings: its declared keys, through the
    params text (reading any other key raises, as in the job)."""
    return from_text(to_text(settings, declared_keys(rule)))


# --- criticism: a tiny trained, minified SCVI model and its counts on disk ---------------


def simulate_counts(n_cells=360, n_genes=80, n_labels=4, n_batches=2, seed=0) -> anndata.AnnData:
    """Negative-binomial counts with per-label marker genes and a mild batch effect."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_labels, n_cells)
    batches = rng.integers(0, n_batches, n_cells)
    base = rng.gamma(0.8, 1.0, n_genes)
    label_effect = np.exp(rng.normal(0, 0.3, (n_labels, n_genes)))
    for k in range(n_labels):  # a handful of strong markers per label
        label_effect[k, rng.choice(n_genes, 6, replace=False)] *= 6
    batch_effect = np.exp(rng.normal(0, 0.1, (n_batches, n_genes)))
    size = rng.lognormal(0, 0.3, n_cells)[:, None]
    mean = base * label_effect[labels] * batch_effect[batches] * size
    counts = rng.negative_binomial(5, 5 / (5 + mean)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{k}" for k in labels]),
            "batch": pd.Categorical([f"b{b}" for b in batches]),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene_{j}" for j in range(n_genes)])
    return anndata.AnnData(X=sparse.csr_matrix(counts), obs=obs, var=var)


def build_minified_model(adata: anndata.AnnData, out: Path, *, layer=None, max_epochs=3) -> Path:
    """Train a tiny SCVI model, write counts to ``out/hvg.h5ad`` and the minified model to
    ``out/minified`` with the model's train/validation split in ``obs["split"]``."""
    import scvi

    scvi.settings.seed = 0
    adata = adata.copy()
    if layer is not None:
        adata.layers[layer] = adata.X.copy()
        adata.X = sparse.csr_matrix(adata.shape, dtype=np.float32)
    adata.write_h5ad(out / "hvg.h5ad")
    scvi.model.SCVI.setup_anndata(adata, layer=layer, batch_key="batch", labels_key="cell_type")
    model = scvi.model.SCVI(adata, n_latent=5, n_hidden=32)
    model.train(max_epochs=max_epochs, train_size=0.8, enable_progress_bar=False)
    # The workflow's own steps: record the split, then minify (train and minify rules).
    training.record_split(model, adata)
    training.minify(model)
    model.save(out / "minified", save_anndata=True, overwrite=True)
    return out


# --- publishing: tiny hub folders and the publish command line ---------------------------


def build_hub_folder(out: Path, seed: int) -> tuple[Path, Path]:
    """Train a 1-epoch SCVI on synthetic data; return (trained model dir, hub dir).

    The hub folder is what the `hub` rule makes: the minified model, its metadata, a card.
    """
    import anndata
    import scvi
    from scvi.hub import HubMetadata

    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=50)
    adata.obs["tissue"] = "blood"  # what certification checks the card's tissue tag against
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch")
    model = scvi.model.SCVI(adata, n_latent=4, n_hidden=16)
    model.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    model_dir, hub_dir = out / "model", out / "hub"
    model.save(str(model_dir), save_anndata=True)

    qzm, qzv = model.get_latent_representation(give_mean=False, return_dist=True)
    model.adata.obsm["X_latent_qzm"], model.adata.obsm["X_latent_qzv"] = qzm, qzv
    model.minify_adata()
    model.save(str(hub_dir), save_anndata=True)
    HubMetadata.from_dir(str(hub_dir), anndata_version=anndata.__version__).save(
        str(hub_dir / "_scvi_required_metadata.json")
    )
    (hub_dir / "README.md").write_text(
        "---\nlibrary_name: scvi-tools\nlicense: cc-by-4.0\ntags:\n- biology\n"
        "- model_cls_name:SCVI\n- tissue:blood\n---\n\n# Tiny SCVI\n\nA test model.\n"
    )
    # what the provenance rule writes, as much of it as certification reads
    provenance = {
        "settings": {"model": {"class": "SCVI"}},
        "input": {"subset": {"tissue": ["blood"]}},
    }
    (hub_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return model_dir, hub_dir


@dataclass
class TinyModel:
    model_dir: Path
    hub_dir: Path


@dataclass
class PublishRun:
    returncode: int
    output: str
    receipt: dict | None


def hub_env(hub: HubServer, home: Path, transfer: str, token: str | None = TOKEN) -> dict:
    """The environment for a client talking to the loopback Hub (never HF_HUB_OFFLINE)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    if token is not None:
        env["HF_TOKEN"] = token
    if transfer == "lfs":
        env["HF_HUB_DISABLE_XET"] = "1"
    return env


def run_publish(
    hub: HubServer,
    model: TinyModel,
    workdir: Path,
    settings: dict,
    transfer: str,
    *,
    token: str | None = TOKEN,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> PublishRun:
    """Run the publish command line in a subprocess; assert the token leaked nowhere."""
    workdir.mkdir(parents=True, exist_ok=True)
    receipt = workdir / "publish.json"
    receipt.unlink(missing_ok=True)
    settings = {"enabled": True, "private": False, "verify": True, "collection": None, **settings}
    command = [
        sys.executable,
        "-m",
        "scvi_hub_workflow.publish",
        "--hub",
        str(model.hub_dir),
        "--model",
        str(model.model_dir),
        "--settings",
        json.dumps(settings),
        "--receipt",
        str(receipt),
        "--wait",
        "0.05",
        *extra_args,
    ]
    env = {**hub_env(hub, workdir / "hf-home", transfer, token), **(env or {})}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    output = done.stdout + done.stderr
    (workdir / "publish.log").write_text(output)
    for secret in {TOKEN, token} - {None}:
        assert_token_absent(workdir, secret)
        assert secret not in output
    return PublishRun(
        done.returncode, output, json.loads(receipt.read_text()) if receipt.exists() else None
    )


def assert_token_absent(root: Path, token: str) -> None:
    """Grep every file under ``root`` (receipts, logs, caches, Snakemake metadata)."""
    needle = token.encode()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert needle not in path.read_bytes(), f"token found in {path}"


@contextlib.contextmanager
def running(command: list[str], **kwargs) -> Iterator[subprocess.Popen]:
    """A process in its own session; it and whatever it started are killed when the test ends."""
    proc = subprocess.Popen(command, start_new_session=True, **kwargs)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_until(
    ready: Callable[[], bool],
    proc: subprocess.Popen,
    what: str,
    *,
    timeout_s: float,
    output: Callable[[], str] = str,
    interval_s: float = 0.05,
) -> None:
    """Poll `ready()` while `proc` runs; fail with the end of `output()` if it ends or times out."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"exited ({proc.returncode}) before {what}:\n{output()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout_s} s:\n{output()[-4000:]}")
        time.sleep(interval_s)
