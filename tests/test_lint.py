"""Formatting and lint stay clean: ruff, snakefmt, and Snakemake's own linter."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT, snakemake

BIN = ROOT / ".venv" / "bin" if (ROOT / ".venv" / "bin" / "ruff").exists() else None


def _tool(name: str) -> list[str]:
    return [str(BIN / name)] if BIN else [sys.executable, "-m", name]


def test_ruff_check_and_format():
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(_tool("ruff") + args, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_snakefmt():
    result = subprocess.run(
        _tool("snakefmt") + ["--check", "Snakefile", "workflow"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint_is_clean():
    result = snakemake("--lint", workdir=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
