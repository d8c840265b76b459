"""The environment the Snakemake process gives the jobs it starts."""

from __future__ import annotations

import importlib.abc
import os
import sys
from pathlib import Path


def put_package_first(package_dir: str | os.PathLike) -> None:
    """Make every job import scvi_hub_workflow from `package_dir`, this workflow's copy.

    Snakemake only appends the script folder to a job's sys.path, after site-packages, so an
    editable install of another checkout in the same venv would win and a job would run that
    checkout's code. PYTHONPATH comes before site-packages. (With --sdm conda Snakemake drops
    PYTHONPATH, but a conda env holds no copy of the package, so the script folder is the one.)
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


class _HiddenJax(importlib.abc.MetaPathFinder):
    """An import finder for which jax is not installed (it never reaches sys.modules, so
    libraries that look there, as scipy's array-API helpers do, see no jax either)."""

    def find_spec(self, name, path=None, target=None):
        if name == "jax" or name.startswith("jax."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden from this job)", name=name)
        return None


def skip_jax_in_scvi() -> None:
    """Keep `import scvi` from importing jax when jax is installed (one venv for every job):
    scvi-tools 1.4.2 imports it at start-up (scvi/_types.py) for its JAX models, which no job
    here uses; 1.5-3 s more per scvi job on 2 cores, measured with `python -c "import scvi"`.
    Jobs that already imported jax keep it."""
    if "jax" not in sys.modules and not any(isinstance(f, _HiddenJax) for f in sys.meta_path):
        sys.meta_path.insert(0, _HiddenJax())


def allow_jax() -> None:
    """Undo skip_jax_in_scvi for the job that needs jax (the integration metrics), and let XLA
    compile quickly unless XLA_FLAGS is set."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _HiddenJax)]
    os.environ.setdefault("XLA_FLAGS", FAST_XLA_COMPILE)
