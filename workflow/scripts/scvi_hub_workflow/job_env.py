"""The environment of the workflow's processes, set by the process that needs it (never on
import): the package path the jobs import, and XLA's compile options in the integration job."""

from __future__ import annotations

import os
from pathlib import Path


def put_package_first(package_dir: str | os.PathLike) -> None:
    """Make every job import scvi_hub_workflow from `package_dir`, this workflow's copy.

    Snakemake only appends the script folder to a job's sys.path, after site-packages, so an
    editable install of another checkout in the same venv would win and a job would run that
    checkout's code. PYTHONPATH comes before site-packages. (With --sdm conda Snakemake drops
    PYTHONPATH, but a conda env holds no copy of the package, so the script folder is the one.)
    Called by the Snakemake process (workflow/rules/common.smk), never on import.
    """
    package_dir = str(Path(package_dir).resolve())
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    if entries[:1] != [package_dir]:
        os.environ["PYTHONPATH"] = os.pathsep.join([package_dir, *entries])


# XLA's CPU compile options for the integration job: jax compiles scib-metrics' functions anew
# in every process, and most of the job is compiling (benchmarks/integration.py). Without LLVM's
# expensive passes the metric calls on 1,500 cells took 22.8 s instead of 31.3 s (2 loaded
# cores); the scores were the same to every printed digit.
FAST_XLA_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def fast_xla_compile() -> None:
    """Let XLA compile quickly in this job (the integration metrics), unless XLA_FLAGS is set."""
    os.environ.setdefault("XLA_FLAGS", FAST_XLA_COMPILE)
