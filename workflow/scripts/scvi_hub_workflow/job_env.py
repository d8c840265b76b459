"""The environment the Snakemake process gives the jobs it starts."""

from __future__ import annotations

import os
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
