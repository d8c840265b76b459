"""The tests' fixtures, in one place; the builders they call are in helpers.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

# helpers.run_publish asserts the token is absent: rewrite its asserts for readable failures.
pytest.register_assert_rewrite("helpers")

from helpers import (  # noqa: E402
    TINY_CONFIG,
    TOKEN,
    TinyModel,
    build_hub_folder,
    build_minified_model,
    simulate_counts,
    snakemake,
)
from helpers import workflow_rules as helpers_workflow_rules  # noqa: E402
from hub_server import HubServer  # noqa: E402


@pytest.fixture(scope="session")
def workflow_rules():
    """The workflow's rules as Snakemake parses them (with the tiny config), through its API."""
    return list(helpers_workflow_rules())


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny config (both default model kinds, a few epochs) run to the end, once."""
    workdir = tmp_path_factory.mktemp("tiny-run")
    result = snakemake("--cores", "2", "--configfile", str(TINY_CONFIG), workdir=workdir)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    # what the user running Snakemake saw, for the tests of the console
    (workdir / "logs" / "console.txt").write_text(result.stdout + result.stderr)
    return workdir


@pytest.fixture(scope="session")
def minified_model(tmp_path_factory) -> Path:
    """Directory with ``minified/`` (model.pt, adata.h5ad) and ``hvg.h5ad`` (observed counts)."""
    return build_minified_model(simulate_counts(), tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def minified_model_with_layer(tmp_path_factory) -> Path:
    """Same, with the counts in ``layers["counts"]`` of hvg.h5ad and an empty X."""
    out = tmp_path_factory.mktemp("model_layer")
    return build_minified_model(simulate_counts(n_cells=200, seed=1), out, layer="counts")


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
