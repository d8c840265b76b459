"""Shared test helpers: the repository root, running Snakemake, and one tiny workflow run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "configs" / "tiny.yaml"
SHARED = ROOT.parent / "shared"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


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


@pytest.fixture(scope="session")
def workflow_rules():
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
        return list(wf._workflow.rules)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """The tiny config (both default model kinds, a few epochs) run to the end, once."""
    workdir = tmp_path_factory.mktemp("tiny-run")
    result = snakemake("--cores", "2", "--configfile", str(TINY_CONFIG), workdir=workdir)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir
