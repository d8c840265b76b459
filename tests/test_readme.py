"""What the README promises a new user: timings with their load, one model's build, ignores."""

from __future__ import annotations

import re
import subprocess

from helpers import ROOT

README = (ROOT / "README.md").read_text()


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def test_every_timing_says_under_what_load_it_was_measured():
    timed = [p for p in paragraphs(README) if re.search(r"\d+(\.\d+)? min\b", p)]
    assert timed
    for paragraph in timed:
        for sentence in re.split(r"(?<=[.)])\s+(?=[A-Z`])", paragraph):
            if re.search(r"\d+(\.\d+)? min\b", sentence):
                assert re.search(r"load|quiet", sentence), sentence


def test_the_readme_shows_how_to_build_one_model_in_the_working_form():
    assert "snakemake --cores 8 results/simulated-scanvi/publish.json" in README
    assert "--configfile my.yaml -- results/lung-scanvi/publish.json" in README


def test_reports_are_git_ignored():
    for name in ("report.html", "report.zip"):
        done = subprocess.run(
            ["git", "-C", str(ROOT), "check-ignore", "-q", name], capture_output=True
        )
        assert done.returncode == 0, f"{name} is not git-ignored"
