"""profiles/default and profiles/slurm, checked without a cluster.

tests/test_slurm.py runs profiles/slurm on a real scheduler; these fast checks catch what that
slower test would only show as a confusing failure: a profile naming a rule that was renamed,
a training job without its GPU request, resources that do not grow on retry.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.resources import Resource

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "profiles" / "default" / "config.yaml").read_text())
PROFILE_DIR = ROOT / "profiles" / "slurm"
SLURM = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())


@pytest.fixture(scope="module")
def rule_names(workflow_rules):
    return {rule.name for rule in workflow_rules}


def evaluate(expression, size_mb: float, attempt: int):
    """A profile resource value as Snakemake evaluates it for a job with inputs of size_mb."""
    if not isinstance(expression, str):
        return expression
    return Resource.cli_evaluator(
        "resource",
        expression,
        wildcards={},
        input=SimpleNamespace(size_mb=size_mb),
        attempt=attempt,
        async_run=None,
    )


def test_default_profile_serialises_gpu_jobs():
    assert DEFAULT["resources"] == {"gpu": 1}
    assert "executor" not in DEFAULT, "the default profile must run locally"


def test_slurm_profile_uses_the_slurm_executor_and_retries():
    assert SLURM["executor"] == "slurm"
    assert SLURM["retries"] >= 1


def test_set_resources_name_existing_rules(rule_names):
    unknown = set(SLURM["set-resources"]) - rule_names
    assert not unknown, f"profiles/slurm sets resources for rules that do not exist: {unknown}"


def test_training_gpu_request_is_the_rules_and_the_partition_follows_it():
    # The rule asks for a GPU from the model's accelerator (tests/test_running.py);
    # the profile names the site's partitions, and the plugin puts a GPU job in a GPU one.
    train = SLURM["set-resources"]["train"]
    assert not {"gpu", "gres", "slurm_partition"} & set(train), train
    partitions = yaml.safe_load((PROFILE_DIR / SLURM["slurm-partition-config"]).read_text())
    max_gpu = {name: p.get("max_gpu", 0) for name, p in partitions["partitions"].items()}
    assert max_gpu["gpu"] >= 1, "no partition takes the training job's GPU"
    assert 0 in max_gpu.values(), "no partition for CPU jobs: they would queue for a GPU node"


def test_only_training_asks_for_a_gpu():
    for rule, resources in SLURM["set-resources"].items():
        if rule != "train":
            assert "gpu" not in resources and "gres" not in resources, rule
    assert "gpu" not in SLURM["default-resources"]


@pytest.mark.parametrize("rule", [None, *SLURM["set-resources"]], ids=lambda r: r or "default")
@pytest.mark.parametrize("resource", ["mem_mb", "runtime"])
def test_resources_grow_with_attempt_and_data(rule, resource):
    resources = SLURM["default-resources"] if rule is None else SLURM["set-resources"][rule]
    expression = resources[resource]
    small = evaluate(expression, size_mb=1, attempt=1)
    assert isinstance(small, int) and small > 0, (rule, resource, small)
    assert evaluate(expression, size_mb=1, attempt=2) == 2 * small, "no more on retry"
    if resource == "mem_mb":
        # A 10 GB .h5ad must get more memory than a tiny one.
        assert evaluate(expression, size_mb=10_000, attempt=1) > small, "not sized from data"
