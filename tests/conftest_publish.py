"""Fixtures for the publishing tests: tiny hub folders, a loopback Hub, a publish runner.

Loaded with ``pytest_plugins = ["conftest_publish"]`` from tests/test_publish.py. The publish
step runs in a subprocess because huggingface_hub reads ``HF_ENDPOINT`` once, at import.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hub_server import HubServer

REPO_ROOT = Path(__file__).resolve().parents[1]
# A fresh, realistic-looking token per session, so grepping for it means something.
TOKEN = "hf_" + secrets.token_hex(17)


def build_hub_folder(out: Path, seed: int) -> tuple[Path, Path]:
    """Train a 1-epoch SCVI on synthetic data; return (trained model dir, hub dir).

    The hub folder is what the `hub` rule makes: the minified model, its metadata, a card.
    """
    import anndata
    import scvi
    from scvi.hub import HubMetadata

    scvi.settings.seed = seed
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=50)
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
        "- model_cls_name:SCVI\n---\n\n# Tiny SCVI\n\nA test model.\n"
    )
    return model_dir, hub_dir


@dataclass
class TinyModel:
    model_dir: Path
    hub_dir: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, TinyModel]:
    """Two trained models ("pbmc" and "lung" stand-ins) with their hub folders."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        name: TinyModel(*build_hub_folder(root / name, seed))
        for name, seed in (("pbmc", 0), ("lung", 1))
    }


@pytest.fixture
def tiny(tiny_models, tmp_path) -> TinyModel:
    """A private copy of one tiny model, safe to edit."""
    src = tiny_models["pbmc"]
    copy = TinyModel(tmp_path / "model", tmp_path / "hub")
    shutil.copytree(src.model_dir, copy.model_dir)
    shutil.copytree(src.hub_dir, copy.hub_dir)
    return copy


@pytest.fixture
def hub(tmp_path):
    with HubServer(tmp_path / "hub-storage", TOKEN, user="alice") as server:
        yield server


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
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=240, cwd=REPO_ROOT
    )
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
