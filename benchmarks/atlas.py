"""Atlas-scale benchmark: the real rules on a CELLxGENE-shaped file, time and peak RSS per step.

The file is made like a CELLxGENE Discover H5AD: counts in `raw.X`, log-normalised values in
`X`, Ensembl-style IDs as `var_names` and symbols in `var["feature_name"]`, about 1,800
non-zeros per cell over 20,000 genes, 24 cell types, 4 donors and a `tissue` column (4 tissues
of 40/30/20/10% of the cells). It is written block by block, so making a 500k-cell file does
not need it in memory. The workflow then runs with `dataset.subset: {tissue: lung}` (40% of the
cells), `hvg` (seurat_v3, 2,000 genes, per donor), `train` (SCVI, 1 epoch), `minify`,
`posterior_predictive_check` and `card`; each rule's `benchmark:` file gives its wall time and
peak RSS (Snakemake's `s` and `max_rss`). Each result is appended to
benchmarks/results/atlas.jsonl as soon as its size finishes; the table comes at the end.

    .venv/bin/python benchmarks/atlas.py --sizes 27000 100000 500000
    .venv/bin/python benchmarks/atlas.py --sizes 500000 --until hvg   # the data steps only
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
from scvi_hub_workflow.h5ad_io import CsrWriter  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
N_GENES, NNZ_PER_CELL, N_TYPES, N_DONORS = 20_000, 1_800, 24, 4
TISSUES, TISSUE_SHARE = ["lung", "liver", "spleen", "blood"], [0.4, 0.3, 0.2, 0.1]
STEPS = ["dataset", "hvg", "train", "minify", "posterior_predictive_check", "card"]
BLOCK = 10_000
POOL_BLOCKS = 10


def make_atlas(path: Path, n_cells: int, seed: int = 0) -> None:
    """Write the CELLxGENE-shaped file, 10,000 cells at a time."""
    rng = np.random.default_rng(seed)
    base = rng.lognormal(0, 1.5, N_GENES)
    type_factor = np.ones((N_TYPES, N_GENES))
    for t in range(N_TYPES):  # 100 marker genes per type, 4-16x up
        type_factor[t, rng.choice(N_GENES, 100, replace=False)] = rng.uniform(4, 16, 100)
    weights = base * type_factor
    weights /= weights.sum(1, keepdims=True)
    cumulative = np.cumsum(weights, axis=1)
    cell_type = rng.integers(N_TYPES, size=n_cells)
    # Cells past the first POOL_BLOCKS blocks repeat them (types and counts), so a 500k-cell
    # file takes minutes to make; files up to POOL_BLOCKS * BLOCK cells are all distinct.
    for start in range(POOL_BLOCKS * BLOCK, n_cells, BLOCK):
        source = (start // BLOCK % POOL_BLOCKS) * BLOCK
        n = min(BLOCK, n_cells - start)
        cell_type[start : start + n] = cell_type[source : source + n]
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{t:02d}" for t in cell_type]),
            "donor_id": pd.Categorical(
                [f"donor_{d}" for d in rng.integers(N_DONORS, size=n_cells)]
            ),
            "tissue": pd.Categorical(rng.choice(TISSUES, size=n_cells, p=TISSUE_SHARE)),
            "is_primary_data": np.ones(n_cells, dtype=bool),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(
        {"feature_name": [f"GENE{i}" for i in range(N_GENES)]},
        index=[f"ENSG{i:011d}" for i in range(N_GENES)],
    )
    skeleton = ad.AnnData(obs=obs, var=var)
    skeleton.write_h5ad(path)
    with h5py.File(path, "a") as f:
        raw = f.create_group("raw")
        raw.attrs["encoding-type"], raw.attrs["encoding-version"] = "raw", "0.1.0"
        ad.io.write_elem(raw, "var", pd.DataFrame(index=var.index))
        counts_out = CsrWriter(raw, "X", n_cells, N_GENES)
        norm_out = CsrWriter(f, "X", n_cells, N_GENES)
        pool = []
        for start in range(0, n_cells, BLOCK):
            types = cell_type[start : start + BLOCK]
            n = types.size
            if start >= POOL_BLOCKS * BLOCK:
                counts = pool[start // BLOCK % POOL_BLOCKS][:n]
                _append(counts_out, norm_out, counts)
                continue
            # ~2,400 draws per cell give ~1,800 distinct genes; repeats become counts > 1.
            draws = 2_400
            u = rng.random((n, draws))
            genes = np.empty((n, draws), dtype=np.int32)
            for t in np.unique(types):
                rows = types == t
                genes[rows] = np.searchsorted(cumulative[t], u[rows]).clip(max=N_GENES - 1)
            row = np.repeat(np.arange(n), draws)
            counts = sp.csr_matrix(
                (np.ones(row.size, dtype=np.float32), (row, genes.ravel())), shape=(n, N_GENES)
            )
            counts.sum_duplicates()
            if n_cells > POOL_BLOCKS * BLOCK:
                pool.append(counts)
            _append(counts_out, norm_out, counts)
        counts_out.close()
        norm_out.close()


def _append(counts_out: CsrWriter, norm_out: CsrWriter, counts: sp.csr_matrix) -> None:
    counts_out.append(counts)
    norm = counts.copy()
    totals = np.asarray(counts.sum(1)).ravel()
    norm.data = np.log1p(norm.data / np.repeat(totals, np.diff(norm.indptr)) * 1e4)
    norm_out.append(norm.astype(np.float32))


def config_for(data: Path) -> dict:
    return {
        "models": {
            "atlas": {
                "tissues": ["lung"],
                "dataset": {"source": str(data), "counts": "raw.X", "subset": {"tissue": "lung"}},
                "model": {
                    "class": "SCVI",
                    "params": {"n_latent": 10, "gene_likelihood": "nb"},
                    "setup": {"batch_key": "donor_id", "labels_key": "cell_type"},
                },
                "hvg": {"n_top_genes": 2000},
                "train": {"max_epochs": 1, "accelerator": "cpu", "batch_size": 1024},
                "criticism": {"n_samples": 1},
            }
        }
    }


def run_size(n_cells: int, workdir: Path, timeout_s: int, until: str) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / f"atlas_{n_cells}.h5ad"
    started = time.monotonic()
    if not data.exists():
        partial = data.with_suffix(".partial")
        make_atlas(partial, n_cells)
        partial.rename(data)  # a stopped run never leaves a file that looks complete
    made_s = time.monotonic() - started
    (workdir / "config.yaml").write_text(yaml.safe_dump(config_for(data)))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--workflow-profile",
        "none",
        "--cores",
        "2",
        {"card": "results/atlas/card/README.md", "hvg": "results/atlas/hvg.h5ad"}[until],
    ]
    load_before = os.getloadavg()[0]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        status = "ok" if result.returncode == 0 else f"failed: {result.stderr[-400:]}"
    except subprocess.TimeoutExpired:
        status = f"timeout after {timeout_s} s"
    steps = {}
    for step in STEPS:
        tsv = workdir / "results" / "atlas" / "benchmarks" / f"{step}.tsv"
        if tsv.exists():
            with open(tsv) as handle:
                row = next(csv.DictReader(handle, delimiter="\t"))
            steps[step] = {"s": float(row["s"]), "max_rss_mib": float(row["max_rss"])}
    summary = workdir / "results" / "atlas" / "dataset.json"
    kept = json.loads(summary.read_text())["n_cells"] if summary.exists() else None
    return {
        "n_cells": n_cells,
        "n_cells_kept": kept,
        "file_gib": data.stat().st_size / 2**30,
        "make_s": made_s,
        "status": status,
        "steps": steps,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def table(results: list[dict]) -> str:
    lines = [
        "| cells in file (kept) | " + " | ".join(STEPS) + " |",
        "|---|" + "---|" * len(STEPS),
    ]
    for r in results:
        cells = []
        for step in STEPS:
            s = r["steps"].get(step)
            cells.append(f"{s['s']:.0f} s, {s['max_rss_mib'] / 1024:.2f} GiB" if s else "not run")
        kept = f"{r['n_cells_kept']:,}" if r["n_cells_kept"] else "-"
        lines.append(f"| {r['n_cells']:,} ({kept}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[27_000, 100_000, 500_000])
    parser.add_argument("--workdir", type=Path, default=RESULTS / "atlas")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per size")
    parser.add_argument(
        "--until",
        choices=["card", "hvg"],
        default="card",
        help="last step to run (hvg: the data steps only)",
    )
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = []
    for n_cells in args.sizes:
        result = run_size(n_cells, args.workdir / str(n_cells), args.timeout, args.until)
        print(json.dumps(result), flush=True)
        with open(RESULTS / "atlas.jsonl", "a") as handle:
            handle.write(json.dumps(result) + "\n")
        results.append(result)
    print(table(results))


if __name__ == "__main__":
    main()
