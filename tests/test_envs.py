"""The conda envs (envs/*.yaml) agree with pyproject.toml, resolve, and cover what each rule runs.

Each env asks conda only for the interpreter and pip (conda-forge, which certainly has them) and
installs everything else from PyPI in a `pip:` section, pinned exactly as pyproject.toml's
[project].dependencies, the one list of pins. Each env lists only what its rules import. The
static tests fail when a pin drifts, a package is added on one side only, conda is asked for
anything else, a rule names a missing env, or a rule's script imports a package its env does not
provide. The slow test resolves each pip section with pip's resolver against PyPI (no conda
needed: CI cannot reach the conda channels, but it can reach PyPI).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
import urllib.request
from concurrent.futures import ThreadPoolExecutor
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
CHANNELS = ["conda-forge", "nodefaults"]
# All that conda installs: the interpreter, and pip to install the rest.
CONDA_DEPENDENCIES = ["python =3.11", "pip"]
# Pinned in pyproject only: snakemake runs the workflow and creates the envs; it is not in them.
PIP_ONLY = {"snakemake"}
PYPI = "https://pypi.org/simple/"
IN_CI = os.environ.get("CI", "").lower() == "true"

# What a pinned package (PyPI name) makes importable, with the dependencies its PyPI metadata
# declares as required, so a script may `import numpy` in an env that lists anndata. The
# resolution test checks every name here against what pip resolves for each env.
_ANNDATA = {"anndata", "numpy", "scipy", "pandas", "h5py", "packaging"}
PROVIDES = {
    "anndata": _ANNDATA,
    "scanpy": _ANNDATA | {"scanpy", "sklearn", "matplotlib", "numba", "networkx", "statsmodels"},
    "scvi-tools": _ANNDATA | {"scvi", "torch", "lightning", "sklearn", "mudata", "tqdm", "rich"},
    "torch": {"torch"},
    "igraph": {"igraph"},
    "scikit-misc": {"skmisc", "numpy"},
    "huggingface-hub": {"huggingface_hub", "httpx2", "yaml", "tqdm", "filelock", "fsspec"},
    "hf-xet": {"hf_xet"},
    "scikit-learn": {"sklearn", "numpy", "scipy"},
    "matplotlib": {"matplotlib", "numpy", "PIL"},
    "pyyaml": {"yaml"},
    "jsonschema": {"jsonschema"},
    "markdown-it-py": {"markdown_it", "mdurl"},
    "scib-metrics": {"scib_metrics", "jax", "chex", "plottable", "tqdm"},
    "jax": {"jax", "jaxlib", "numpy", "ml_dtypes", "opt_einsum"},
    "jaxlib": {"jaxlib", "numpy"},
}
# Import name -> PyPI distribution, where they differ (otherwise the same name, normalised).
IMPORT_TO_DIST = {
    "sklearn": "scikit-learn",
    "skmisc": "scikit-misc",
    "scvi": "scvi-tools",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "markdown_it": "markdown-it-py",
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


def pip_section(path: Path) -> list[str]:
    """The requirement lines of the env's `pip:` section."""
    sections = [d["pip"] for d in load_env(path)["dependencies"] if isinstance(d, dict)]
    assert len(sections) == 1, f"{path.name}: expected one pip: section, found {len(sections)}"
    return sections[0]


def env_pins(path: Path) -> dict[str, str]:
    """`name==1.2.3` lines of the pip section -> {normalised name: version}; anything else
    (a range, an extra, an option line) fails."""
    pins = {}
    for line in pip_section(path):
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and not req.extras, (
            f"{path.name}: '{line}' is not one exact pin"
        )
        name = canonicalize_name(req.name)
        assert name not in pins, f"{path.name}: {req.name} listed twice"
        pins[name] = specs[0].version
    return pins


def provided(path: Path) -> set[str]:
    """The import names an env provides: the standard library and its packages' PROVIDES."""
    names = set(sys.stdlib_module_names)
    for pkg in env_pins(path):
        assert pkg in PROVIDES, f"{path.name}: {pkg} is not in PROVIDES; say what it imports"
        names |= PROVIDES[pkg]
    return names


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
def test_conda_gives_only_python_and_pip(env):
    conda = [d for d in load_env(env)["dependencies"] if not isinstance(d, dict)]
    assert conda == CONDA_DEPENDENCIES, (
        f"{env.name}: conda installs {conda}; everything but {CONDA_DEPENDENCIES} belongs in "
        "the pip: section (conda-forge lacks several of our pins)"
    )


@pytest.mark.parametrize("env", ENV_FILES, ids=lambda p: p.name)
def test_pins_agree_with_pyproject(env):
    pins = pip_pins()
    for name, version in env_pins(env).items():
        assert name in pins, f"{env.name}: {name} has no pin in pyproject.toml"
        assert version == pins[name], (
            f"{env.name}: {name}=={version}, but pyproject.toml pins {name}=={pins[name]}"
        )


@pytest.mark.parametrize("env", ENV_FILES, ids=lambda p: p.name)
def test_python_matches_requires_python(env):
    python = CONDA_DEPENDENCIES[0].split("=")[-1]
    assert f"{python}.0" in SpecifierSet(pyproject()["project"]["requires-python"])
    assert [d for d in load_env(env)["dependencies"] if d == CONDA_DEPENDENCIES[0]]


def test_every_runtime_pin_is_in_an_env():
    in_envs = {name for env in ENV_FILES for name in env_pins(env)}
    missing = set(pip_pins()) - in_envs - {canonicalize_name(n) for n in PIP_ONLY}
    assert not missing, f"pinned in pyproject.toml but in no envs/*.yaml: {sorted(missing)}"


def test_provides_has_no_stale_entries():
    stale = set(PROVIDES) - set(pip_pins())
    assert not stale, f"PROVIDES names packages pyproject.toml no longer pins: {stale}"


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


def test_catalog_file_declares_conda_and_report():
    # The Snakemake workflow catalog's "standardized usage" format: usage.mandatory-flags
    # {desc, flags} and usage.software-stack-deployment {conda, report, ...}.
    catalog = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())
    usage = catalog["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment"}
    assert set(usage["mandatory-flags"]) == {"desc", "flags"}
    assert usage["mandatory-flags"]["desc"].strip()
    assert usage["software-stack-deployment"] == {"conda": True, "report": True}


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
        provided_names = provided(env)
        missing = imports_of_script(script) - provided_names
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


# ------------------------------------------------------------------ resolving the pip sections


def _index_unreachable() -> str | None:
    """Why PyPI cannot be reached (None when it can); a quick request, before any resolving."""
    try:
        with urllib.request.urlopen(PYPI + "pip/", timeout=10) as response:
            response.read(1)
    except OSError as exc:
        return f"{PYPI} unreachable: {exc}"
    return None


def resolve(requirements: list[str], workdir: Path) -> subprocess.CompletedProcess:
    """pip's resolution of `requirements` into an empty Python 3.11 environment, as the report
    `pip install --report` writes (workdir/report.json).

    - `--dry-run --ignore-installed`: nothing is installed, and what this interpreter already has
      does not count, so the resolution is the one a fresh conda env's pip makes.
    - `--isolated`: pip's config files and PIP_* variables are ignored (a machine's
      find-links, extra indexes or constraints would change the answer); PyPI only.
    - `--use-feature=fast-deps`: pip reads each wheel's metadata with PEP 658 `.metadata`
      files where the index offers them (PyPI does), else with HTTP range requests into the
      wheel. Without it, on an index or proxy that hides the `.metadata` files, pip downloads
      whole wheels to read their metadata: the scvi env's torch and nvidia-* wheels are several
      GB (measured: torch 527 MB and nvidia-cublas 423 MB among them). With it, no wheel is
      downloaded; the resolution was checked to be the same package set either way.
    - The running interpreter decides environment markers, so the test needs Python 3.11, as
      the env files ask (requires-python says the same). `--python-version` is not an option:
      pip then accepts wheels only, and docrep (a scvi-tools dependency) is an sdist.
    """
    requirements_file = workdir / "requirements.txt"
    requirements_file.write_text("\n".join(requirements) + "\n")
    command = [
        *(sys.executable, "-m", "pip", "install", "--isolated", "--dry-run"),
        *("--ignore-installed", "--quiet", "--use-feature=fast-deps", "--index-url", PYPI),
        *("--report", str(workdir / "report.json"), "-r", str(requirements_file)),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, dict]]:
    """env file name -> (pip's run, {distribution: version} it resolved); the four envs resolve
    concurrently (the time goes to network round trips)."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip(f"resolving for the envs' Python 3.11 needs Python 3.11, not {sys.version}")
    reason = _index_unreachable()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true, so the envs must be resolved, but {reason}")
        pytest.skip(reason)

    def one(env: Path):
        workdir = tmp_path_factory.mktemp(env.stem)
        run = resolve(pip_section(env), workdir)
        report = workdir / "report.json"
        installs = json.loads(report.read_text())["install"] if run.returncode == 0 else []
        versions = {
            canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
            for item in installs
        }
        return env.name, (run, versions)

    with ThreadPoolExecutor(max_workers=len(ENV_FILES)) as pool:
        return dict(pool.map(one, ENV_FILES))


@pytest.mark.slow
@pytest.mark.parametrize("env", ENV_FILES, ids=lambda p: p.name)
def test_pip_section_resolves_for_python_311(env, resolutions):
    run, versions = resolutions[env.name]
    assert run.returncode == 0, f"{env.name}: pip cannot resolve its pip: section:\n{run.stderr}"
    for name, version in env_pins(env).items():
        assert versions.get(name) == version, f"{env.name}: {name} resolved to {versions.get(name)}"
    # What PROVIDES says each package brings in must be what pip installs with it.
    missing = {
        module
        for module in provided(env) - set(sys.stdlib_module_names)
        if canonicalize_name(IMPORT_TO_DIST.get(module, module)) not in versions
    }
    assert not missing, f"{env.name}: PROVIDES claims {sorted(missing)}, pip does not install them"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="PyPI's torch is a CUDA build on Linux only")
def test_pypi_torch_is_a_cuda_build_on_linux(resolutions):
    # docs/running.md promises a GPU node a CUDA torch from the scvi env: PyPI's Linux torch
    # wheel depends on the CUDA runtime wheels.
    _run, versions = resolutions["scvi.yaml"]
    assert "torch" in versions
    cudnn = [name for name in versions if name.startswith("nvidia-cudnn")]
    assert cudnn, f"no CUDA libraries among torch's dependencies: {sorted(versions)}"
