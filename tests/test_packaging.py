"""A non-editable install carries what the package reads at run time (the config schema)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile

from helpers import ROOT


def test_schema_link_is_the_packaged_schema():
    link = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    packaged = ROOT / "workflow" / "scripts" / "scvi_hub_workflow" / "config.schema.yaml"
    assert link.is_symlink() and link.resolve() == packaged.resolve()


def test_wheel_ships_the_schema_and_validates_configs_from_it(tmp_path):
    # Built from a clean copy: a stale *.egg-info in the worktree could list the schema for it.
    ignored = ("*.egg-info", ".venv", ".git", "build", "results", "resources", "logs", ".snakemake")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*ignored))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("scvi_hub_workflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "scvi_hub_workflow/config.schema.yaml" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    # -S: no site hooks, so the editable install's finder cannot serve the worktree's copy.
    code = (
        "import scvi_hub_workflow.config as c; "
        f"assert c.__file__.startswith({str(unpacked)!r}), c.__file__; "
        "print(sorted(c.load_schema()['properties']))"
    )
    path = f"{unpacked}:{sysconfig.get_paths()['purelib']}"
    run = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": path},
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "models" in run.stdout
