"""Certification: the pushed revision, as a user meets it, works and holds the configured data.

Download exactly the pushed revision into an empty folder, load it in a fresh `python -I`
process that cannot import this package (certify_child.py), run the model's downstream use
(scArches query mapping of held-out cells for a class that maps queries; else loading it and
reading its latent space), and check that the repo's data are the configured tissue: the
subset in provenance.json and the card's tissue tags against the data's obs. Verification is
one of its steps: the same download's weights and latent space against the local model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..layout import CARD_FILE, DATA_FILE, HUB_FILES, PROVENANCE_FILE, SPLIT_COLUMN
from ..model_kinds import kind_of
from .errors import PublishError
from .verify import VERIFY_CELLS, compare_with_local

CHILD = Path(__file__).with_name("certify_child.py")
QUERY_CELLS = 50
QUERY_EPOCHS = 2
# obs columns that name a cell's tissue (CELLxGENE's schema)
TISSUE_COLUMNS = ("tissue", "tissue_general")
CHILD_TIMEOUT_S = 1800


def card_tissues(card: str) -> list[str]:
    """The `tissue:<name>` tags of a card's front matter."""
    match = re.match(r"^---\n(.*?)\n---\n", card, re.S)
    tags = (yaml.safe_load(match.group(1)) or {}).get("tags", []) if match else []
    return [str(t).split(":", 1)[1] for t in tags if str(t).startswith("tissue:")]


def tissue_check(obs, card: str, provenance: dict | None) -> dict[str, Any]:
    """Whether the data's obs are what the card and provenance.json say: every subset column's
    values within the configured values, and every card tissue a value of a tissue column.

    Returns {"checked": [...], "passed": bool, "reason": str | None}.
    """
    checked, problems = [], []
    subset = ((provenance or {}).get("input") or {}).get("subset") or {}
    for column, allowed in subset.items():
        if column not in obs.columns:
            problems.append(f"provenance.json's subset names obs column {column!r}, absent")
            continue
        found = sorted(set(map(str, obs[column].unique())))
        outside = sorted(set(found) - set(map(str, allowed)))
        checked.append(f"obs {column!r} within the subset {sorted(map(str, allowed))}")
        if outside:
            problems.append(
                f"obs {column!r} holds {outside[:5]}, outside provenance.json's subset "
                f"{sorted(map(str, allowed))}"
            )
    tissues = card_tissues(card)
    columns = [c for c in TISSUE_COLUMNS if c in obs.columns]
    if tissues and columns:
        values = {str(v) for c in columns for v in obs[c].unique()}
        checked.append(f"card tissues {tissues} among obs {columns}")
        missing = [t for t in tissues if t not in values]
        if missing:
            problems.append(
                f"the card's tissue {missing} is not in the data (obs {columns} hold "
                f"{sorted(values)[:5]})"
            )
    elif tissues:
        checked.append(f"card tissues {tissues}: not checked, the data have no {TISSUE_COLUMNS}")
    return {"checked": checked, "passed": not problems, "reason": "; ".join(problems) or None}


def _read_obs(path: Path):
    import anndata
    import h5py

    with h5py.File(path, "r") as handle:
        return anndata.io.read_elem(handle["obs"])


def write_query(model_dir: str | os.PathLike, out: Path, n_cells: int = QUERY_CELLS) -> int:
    """A few held-out cells (validation, else test, else the last) of the trained model's
    full data, with their counts (and proteins), as a user's query file. Returns the number
    of cells."""
    import anndata
    import numpy as np

    adata = anndata.read_h5ad(Path(model_dir) / DATA_FILE, backed="r")
    split = adata.obs[SPLIT_COLUMN].astype(str) if SPLIT_COLUMN in adata.obs else None
    rows = np.arange(adata.n_obs)
    for held_out in ("validation", "test"):
        if split is not None and (split == held_out).any():
            rows = np.flatnonzero((split == held_out).to_numpy())
            break
    rows = rows[-n_cells:]
    query = adata[rows].to_memory()
    adata.file.close()
    # without scvi-tools' registration; with the per-cell entries (a CITE-seq model's
    # proteins) and their names, which a query of such a model carries
    uns = {k: v for k, v in query.uns.items() if not k.startswith("_scvi")}
    query = anndata.AnnData(
        X=query.X,
        obs=query.obs,
        var=query.var,
        layers=dict(query.layers),
        obsm=dict(query.obsm),
        uns=uns,
    )
    query.write_h5ad(out)
    return int(query.n_obs)


def _run_child(
    repo_dir: Path, query: str, epochs: int, latent: Path, model_dir: str, timeout_s: int
) -> dict:
    # No PYTHONPATH, no user site, nothing from the Hub's credentials: a user's fresh process.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "HF_", "HUGGINGFACE", "SNAKEMAKE"))
    }
    command = [sys.executable, "-I", str(CHILD), str(repo_dir), query, str(epochs), str(latent)]
    done = subprocess.run(
        [*command, str(VERIFY_CELLS), str(Path(model_dir).resolve())],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=repo_dir.parent,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("CERTIFICATION "):
            return json.loads(line.removeprefix("CERTIFICATION "))
    tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
    return {"passed": False, "reason": f"the loading process exited {done.returncode}: {tail}"}


def _certify_folder(
    repo_dir: Path, commit: str, model_dir: str | os.PathLike, epochs: int, timeout_s: int
) -> dict[str, Any]:
    """The checks of a downloaded revision, in order; the first failure is the reason."""
    import numpy as np

    files = sorted(
        p.relative_to(repo_dir).as_posix()
        for p in repo_dir.rglob("*")
        if p.is_file() and ".cache" not in p.parts
    )
    result: dict[str, Any] = {"revision": commit, "files": files}
    missing = sorted(set(HUB_FILES) - set(files))
    if missing:
        return {**result, "passed": False, "reason": f"the revision lacks {missing}"}
    provenance = json.loads((repo_dir / PROVENANCE_FILE).read_text())
    model_class = provenance.get("settings", {}).get("model", {}).get("class")
    query = "-"
    if model_class and kind_of(model_class).can_map_queries:
        query = str(repo_dir.parent / "query.h5ad")
        write_query(model_dir, Path(query))
    latent = repo_dir.parent / "latent.npz"
    result.update(_run_child(repo_dir, query, epochs, latent, model_dir, timeout_s))
    if result["passed"]:
        with np.load(latent) as pulled:
            result["verification"] = compare_with_local(repo_dir, model_dir, pulled, commit)
        result["verification"]["model_class"] = result["model_class"]
        if not result["verification"]["passed"]:
            reason = f"verification: {result['verification']['reason']}"
            result.update(passed=False, reason=reason)
    data = tissue_check(
        _read_obs(repo_dir / DATA_FILE), (repo_dir / CARD_FILE).read_text(), provenance
    )
    result["data_check"] = data
    if result["passed"] and not data["passed"]:
        result.update(passed=False, reason=data["reason"])
    return result


def certify(
    repo_id: str,
    commit: str,
    model_dir: str | os.PathLike,
    token: str,
    *,
    epochs: int = QUERY_EPOCHS,
    timeout_s: int = CHILD_TIMEOUT_S,
) -> dict[str, Any]:
    """Certify ``repo_id`` at ``commit`` (see the module doc): one download of the revision,
    then its checks (the fresh process's load and downstream use, the comparison with the local
    model, the data). Returns the result, ``passed`` or not with its ``reason``; the caller
    records it and fails the job with :func:`certification_error`."""
    from huggingface_hub import snapshot_download

    with tempfile.TemporaryDirectory(prefix="scvi-hub-certify-") as tmp:
        repo_dir = Path(tmp) / "repo"  # empty: only the revision's files land here
        snapshot_download(
            repo_id,
            revision=commit,
            local_dir=repo_dir,
            cache_dir=Path(tmp) / "cache",
            token=token,
        )
        return _certify_folder(repo_dir, commit, model_dir, epochs, timeout_s)


def certification_error(repo_id: str, result: dict[str, Any], record: str | None) -> PublishError:
    """The job's error for a failed certification: the reason, that the commit is already
    public, what to do, and where the record is."""
    where = f" The certification is recorded in {record}." if record else ""
    return PublishError(
        f"certification of {repo_id} at {result.get('revision')} failed: {result['reason']}. "
        "The commit is already public on the Hub: fix the cause and publish again (a new commit "
        f"replaces it), or revert the commit on the Hub so users do not meet it.{where}"
    )
