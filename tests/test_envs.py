"""The conda envs (envs/*.yaml) agree with pyproject.toml and cover what each rule runs.

pyproject.toml's [project].dependencies is the one list of pins. The env files repeat them under
conda names (CONDA_TO_PIP below); these tests fail when a pin drifts, a package is added on one
side only, a channel other than conda-forge/bioconda/nodefaults sneaks in, a rule names a missing
env, or a rule's script imports a package its env does not provide. Conda itself is not needed
(CI cannot reach the conda channels): everything here is read statically.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = ROOT / "envs"
ENV_FILES = sorted(ENV_DIR.glob("*.yaml"))
PACKAGE_DIR = ROOT / "workflow" / "scripts" / "scvi_hub_workflow"
CHANNELS = ["conda-forge", "bioconda", "nodefaults"]

# conda-forge name -> PyPI name, for every package pinned on both sides.
CONDA_TO_PIP = {
    "pytorch": "torch",
    "scvi-tools": "scvi-tools",
    "scanpy": "scanpy",
    "anndata": "anndata",
    "scikit-misc": "scikit-misc",
    "python-igraph": "igraph",
    "huggingface_hub": "huggingface-hub",
    "hf-xet": "hf-xet",
    "scikit-learn": "scikit-learn",
    "matplotlib-base": "matplotlib",
    "pyyaml": "pyyaml",
    "jsonschema": "jsonschema",
    "markdown-it-py": "markdown-it-py",
    "scib-metrics": "scib-metrics",
    "jax": "jax",
    "jaxlib": "jaxlib",
}
# Pinned in the envs only: the interpreter (checked against requires-python).
CONDA_ONLY = {"python"}
# Pinned in pyproject only: snakemake runs the workflow and creates the envs; it is not in them.
PIP_ONLY = {"snakemake"}

# What a conda package makes importable, with the dependencies it is known to pull in, so a
# script may `import numpy` in an env that lists anndata. Keep to dependencies the upstream
# recipes declare as required.
_ANNDATA = {"anndata", "numpy", "scipy", "pandas", "h5py", "packaging"}
PROVIDES = {
    "python": set(sys.stdlib_module_names),
    "anndata": _ANNDATA,
    "scanpy": _ANNDATA | {"scanpy", "sklearn", "matplotlib", "numba", "networkx", "statsmodels"},
    "scvi-tools": _ANNDATA | {"scvi", "torch", "lightning", "sklearn", "mudata", "tqdm", "rich"},
    "pytorch": {"torch", "numpy"},
    "python-igraph": {"igraph"},
    "scikit-misc": {"skmisc", "numpy"},
    "huggingface_hub": {"huggingface_hub", "httpx2", "yaml", "tqdm", "filelock", "fsspec"},
    "hf-xet": {"hf_xet"},
    "scikit-learn": {"sklearn", "numpy", "scipy"},
    "matplotlib-base": {"matplotlib", "numpy", "PIL"},
    "pyyaml": {"yaml"},
    "jsonschema": {"jsonschema"},
    "markdown-it-py": {"markdown_it", "mdurl"},
    "scib-metrics": {"scib_metrics", "jax", "chex", "plottable", "tqdm"},
    "jax": {"jax", "jaxlib", "numpy", "ml_dtypes", "opt_einsum"},
    "jaxlib": {"jaxlib", "numpy"},
}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pip_pins() -> dict[str, str]:
    pins = {}
    for line in pyproject()["project"]["dependencies"]:
        req = Requirement(line)
        (spec,) = req.specifier  # one exact pin each, by project policy
        assert spec.operator == "==", f"pyproject pin is not exact: {line}"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def load_env(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def conda_pins(path: Path) -> dict[str, str]:
    """`name =1.2.3` / `name=1.2.3` / `name==1.2.3` -> {name: version}; anything else fails."""
    pins = {}
    for dep in load_env(path)["dependencies"]:
        assert isinstance(dep, str), f"{path.name}: no pip: sections; use conda packages ({dep})"
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==?\s*([0-9][0-9A-Za-z.]*)", dep.strip())
        assert match, f"{path.name}: '{dep}' is not pinned to an exact version"
        name, version = match.groups()
        assert name not in pins, f"{path.name}: {name} listed twice"
        pins[name] = version
    return pins


@pytest.fixture(scope="module")
def rules(workflow_rules):
    """(name, conda env path or None, script path or None) for every rule in the workflow."""
    found = []
    for rule in workflow_rules:
        base = Path(rule.basedir)
        env = (base / rule.conda_env).resolve() if isinstance(rule.conda_env, str) else None
        script = (base / rule.script).resolve() if rule.script else None
        found.append((rule.name, env, script, not rule.norun, rule.conda_env))
    return found


def test_env_files_exist():
    assert {p.name for p in ENV_FILES} >= {
        "scanpy.yaml",
        "scvi.yaml",
        "publish.yaml",
        "integration.yaml",
    }


@pytest.mark.parametrize("env", ENV_FILES, ids=lambda p: p.name)
def test_channels(env):
    assert load_env(env)["channels"] == CHANNELS


@pytest.mark.parametrize("env", ENV_FILES, ids=lambda p: p.name)
def test_pins_agree_with_pyproject(env):
    pins = pip_pins()
    for name, version in conda_pins(env).items():
        if name in CONDA_ONLY:
            continue
        assert name in CONDA_TO_PIP, (
            f"{env.name}: {name} is not in CONDA_TO_PIP; pin it in pyproject.toml too and map it"
        )
        pip_name = canonicalize_name(CONDA_TO_PIP[name])
        assert pip_name in pins, f"{env.name}: {name} has no pin in pyproject.toml"
        assert version == pins[pip_name], (
            f"{env.name}: {name} ={version}, but pyproject.toml pins {pip_name}=={pins[pip_name]}"
        )


@pytest.mark.parametrize("env", ENV_FILES, ids=lambda p: p.name)
def test_python_matches_requires_python(env):
    python = conda_pins(env)["python"]
    assert f"{python}.0" in SpecifierSet(pyproject()["project"]["requires-python"])


def test_every_runtime_pin_is_in_an_env():
    in_envs = {
        canonicalize_name(CONDA_TO_PIP[name])
        for env in ENV_FILES
        for name in conda_pins(env)
        if name in CONDA_TO_PIP
    }
    missing = set(pip_pins()) - in_envs - {canonicalize_name(n) for n in PIP_ONLY}
    assert not missing, f"pinned in pyproject.toml but in no envs/*.yaml: {sorted(missing)}"


def test_name_map_has_no_stale_entries():
    pins = pip_pins()
    stale = {c for c, p in CONDA_TO_PIP.items() if canonicalize_name(p) not in pins}
    assert not stale, f"CONDA_TO_PIP maps packages pyproject.toml no longer pins: {stale}"


def test_every_rule_names_an_existing_env(rules):
    used = set()
    for name, env, _script, acts, raw in rules:
        if not acts:  # target-only rules such as `all`
            continue
        assert env is not None, f"rule {name} has no conda: env"
        assert env.is_file(), f"rule {name}: conda env {raw} does not exist"
        assert env.parent == ENV_DIR, f"rule {name}: env {env} is outside envs/"
        used.add(env)
    assert used == set(ENV_FILES), f"env files no rule uses: {set(ENV_FILES) - used}"


# ------------------------------------------------------------------ what each rule imports


@cache
def _module(name: str) -> ast.Module:
    """A package module by dotted name ("training", "criticism.check"; "criticism" is its
    __init__)."""
    path = PACKAGE_DIR.joinpath(*name.split("."))
    file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return ast.parse(file.read_text())


def _package_of(module: str) -> list[str]:
    """The dotted parts of the package a module sits in (a package is its own)."""
    parts = [] if module == "__init__" else module.split(".")
    return parts if PACKAGE_DIR.joinpath(*parts).is_dir() else parts[:-1]


def _package_target(
    node: ast.ImportFrom, alias: ast.alias, current: str = "__init__"
) -> tuple[str, str | None] | None:
    """(module, name) inside scvi_hub_workflow that `from ... import alias` binds, if any."""
    if node.level == 0 and (node.module or "").split(".")[0] != "scvi_hub_workflow":
        return None
    if node.level:
        base = _package_of(current)[: len(_package_of(current)) - (node.level - 1)]
        parts = base + ((node.module or "").split(".") if node.module else [])
    else:
        parts = (node.module or "").split(".")[1:]
    mod = ".".join(parts)
    whole = PACKAGE_DIR.joinpath(*parts, alias.name)
    if whole.is_dir() or whole.with_suffix(".py").is_file():
        # `from scvi_hub_workflow import training`: a whole module
        return ".".join([*parts, alias.name]), None
    return mod or "__init__", alias.name


def _imports_in(
    tree: ast.AST, current: str = "__init__"
) -> tuple[set[str], set[tuple[str, str | None]]]:
    """Third-party top-level names and package (module, name) pairs imported anywhere in tree."""
    third, package = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "scvi_hub_workflow":
                    mod = alias.name.partition(".")[2]
                    package.add((mod or "__init__", None))
                else:
                    third.add(top)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                target = _package_target(node, alias, current)
                if target:
                    package.add(target)
                elif node.level == 0 and node.module:
                    third.add(node.module.split(".")[0])
    return third, package


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements run on import (definitions' bodies excluded, `if TYPE_CHECKING:` skipped)."""
    keep = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
            continue
        keep.append(stmt)
    return keep


def imports_of_script(script: Path) -> set[str]:
    """Third-party modules a rule script can import: its own imports, the module-level imports
    of every package module it loads, and the imports inside the package functions it reaches
    (following calls by name within a module and imports between modules)."""
    third, todo = _imports_in(ast.parse(script.read_text()))
    seen: set[tuple[str, str | None]] = set()
    todo = set(todo) | {("__init__", None)}
    while todo:
        mod, name = todo.pop()
        if (mod, name) in seen:
            continue
        seen.add((mod, name))
        tree = _module(mod)
        top_third, top_package = _imports_in(
            ast.Module(body=_module_level(tree), type_ignores=[]), mod
        )
        third |= top_third
        todo |= top_package - seen
        defs = {
            d.name: d
            for d in tree.body
            if isinstance(d, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        }
        # A whole module imported as an object: anything in it may be used.
        reached = list(defs.values()) if name is None else [defs[name]] if name in defs else []
        bindings = {
            alias.asname or alias.name: target
            for stmt in _module_level(tree)
            if isinstance(stmt, ast.ImportFrom)
            for alias in stmt.names
            if (target := _package_target(stmt, alias, mod))
        }
        # A name a package re-exports: follow it to where it is defined.
        if name is not None and name not in defs and name in bindings:
            todo.add(bindings[name])
        # Module-level tables of functions (`BUILTINS = {"x": make_x}`): using the table
        # reaches every function in it.
        tables = {
            target.id: stmt.value
            for stmt in _module_level(tree)
            if isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None
            for target in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
            if isinstance(target, ast.Name)
        }
        for d in reached:
            inner_third, inner_package = _imports_in(d, mod)
            third |= inner_third
            todo |= inner_package - seen
            names = [n for n in ast.walk(d) if isinstance(n, ast.Name) and n.id != d.name]
            for table in {n.id for n in names} & tables.keys():
                names += [n for n in ast.walk(tables[table]) if isinstance(n, ast.Name)]
            for node in names:
                if node.id in defs:
                    todo.add((mod, node.id))
                elif node.id in bindings:
                    todo.add(bindings[node.id])
    return {name for name in third if name not in ("__future__",)}


def test_rule_scripts_import_only_what_their_env_provides(rules):
    problems = []
    for name, env, script, _acts, _raw in rules:
        if script is None or env is None:
            continue
        assert script.is_file(), f"rule {name}: script {script} does not exist"
        provided = set().union(*(PROVIDES[pkg] for pkg in conda_pins(env)))
        missing = imports_of_script(script) - provided
        if missing:
            problems.append(f"rule {name} ({env.name}) imports {sorted(missing)}")
    assert not problems, "\n".join(problems)


def test_import_scan_sees_lazy_imports():
    # The scan must follow calls into functions that import lazily (publish imports
    # huggingface_hub only inside functions); otherwise the check above proves nothing.
    scripts = ROOT / "workflow" / "scripts"
    assert "huggingface_hub" in imports_of_script(scripts / "publish.py")
    # builtin_dataset reaches `import scvi` through a module-level table of generators.
    assert "scvi" in imports_of_script(scripts / "builtin_dataset.py")
    # ... while prepare_dataset, in the same module, does not need scvi-tools.
    assert "scvi" not in imports_of_script(scripts / "dataset.py")


def test_only_the_integration_rule_reaches_jax(rules):
    # scib-metrics and jax cost seconds to import and are in envs/integration.yaml only.
    scripts = {name: script for name, _env, script, _acts, _raw in rules if script}
    assert "scib_metrics" in imports_of_script(scripts["integration"])
    for name, script in scripts.items():
        if name != "integration":
            assert not {"scib_metrics", "jax"} & imports_of_script(script), name
