"""docs/architecture.md against the code: every rule is named, the import rule holds, each
concept has its one home (model classes, rule scripts, per-job benchmark files, module size)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from helpers import ROOT
from scvi_hub_workflow.model_kinds import KINDS

PACKAGE = ROOT / "workflow" / "scripts" / "scvi_hub_workflow"
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text()
# The shared layer of the import rule, as docs/architecture.md states it.
SHARED = {
    "layout",
    "model_kinds",
    "sources",
    "settings",
    "config",
    "config_files",
    "config_docs",
    "templates",
    "compat",
    "rule_io",
    "job_env",
    "stopping",
}
MAX_MODULE_LINES = 400


def modules() -> dict[str, Path]:
    """Dotted module names inside the package (without the package prefix) and their files."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"
        found[name] = path
    return found


def package_imports(name: str, path: Path) -> set[str]:
    """The package modules `name` imports (top level and inside functions)."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    package = [] if name == "__init__" else package
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = [*base, *(node.module.split(".") if node.module else [])]
            elif (node.module or "").startswith("scvi_hub_workflow"):
                target = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:
                whole = ".".join([*target, alias.name])
                found.add(whole if whole in modules() else ".".join(target) or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("scvi_hub_workflow."):
                    found.add(alias.name.partition(".")[2])
    return found


def test_every_rule_is_named_in_the_architecture_page(workflow_rules):
    missing = [
        r.name for r in workflow_rules if f" {r.name}" not in ARCHITECTURE and r.name != "all"
    ]
    assert not missing, f"docs/architecture.md does not name the rules {missing}"


def test_shared_modules_never_import_step_modules():
    for name, path in modules().items():
        top = name.split(".")[0]
        if top not in SHARED:
            continue
        steps = {m for m in package_imports(name, path) if m.split(".")[0] not in SHARED}
        assert not steps - {"__init__"}, f"shared module {name} imports step modules {steps}"
    for shared in SHARED:
        assert f"`{shared}`" in ARCHITECTURE, f"the import rule does not list {shared}"


def test_nothing_in_the_package_imports_a_rule_script():
    scripts = {p.stem for p in (ROOT / "workflow" / "scripts").glob("*.py")}
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                )
                assert not {n.split(".")[0] for n in names if n} & scripts, (name, names)


def test_every_rule_script_carries_its_rules_name(workflow_rules):
    for rule in workflow_rules:
        if rule.script:
            assert Path(rule.script).stem == rule.name, f"rule {rule.name} runs {rule.script}"


def test_every_job_records_its_resources_in_one_folder(workflow_rules):
    for rule in workflow_rules:
        if rule.benchmark:
            path = re.sub(r"\{model[^}]*\}", "{model}", str(rule.benchmark))
            assert path == f"results/{{model}}/resource_usage/{rule.name}.tsv"


def test_no_package_module_is_over_400_lines():
    long = {n: len(p.read_text().splitlines()) for n, p in modules().items()}
    assert not {n: k for n, k in long.items() if k > MAX_MODULE_LINES}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_class_name_is_a_string_in_the_registry_only(name):
    """ "Which class?" is asked of model_kinds; no other code under workflow/ spells a class."""
    literal = re.compile(rf"""["']{name}["']""")
    files = [*(ROOT / "workflow").rglob("*.py"), *(ROOT / "workflow").rglob("*.smk")]
    spelled = [p.relative_to(ROOT) for p in files if literal.search(p.read_text())]
    assert spelled == [PACKAGE.relative_to(ROOT) / "model_kinds.py"]
