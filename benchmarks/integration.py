"""Benchmark: the integration step (scib-metrics, model vs PCA) at the default size and 27k x 3k.

For each size (cells x genes x cell types) it simulates the built-in labelled atlas
(``builtin_datasets.simulated_atlas``, 3 batches, 10% unlabelled), writes its counts as the HVG file
and a model data file whose latent means are a synthetic 20-dimensional embedding (cell-type
centres plus a batch shift plus noise; cached under benchmarks/results/integration/). No model
is trained: the step's cost depends on the numbers of cells, genes, latent dimensions, labels
and batches, not on how well the latent space was learnt. Then it runs the step as its rule
script does (``integration.integrate`` and the figure), with ``--max-cells`` as
``criticism.integration_max_cells``, in its own subprocess, and prints a table of wall time
(with interpreter start and imports, as a job pays them) and peak RSS.

    python benchmarks/integration.py        # 1500x400x6 (the default model), 27000x3000x24
    python benchmarks/integration.py --sizes 27000x3000x24 --max-cells 5000 10000 27000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

from measure import measured

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "integration"
SIZES = ["1500x400x6", "27000x3000x24"]
N_LATENT = 20
SEED = 0


def prepare(size: str) -> Path:
    """hvg.h5ad (counts) and model.h5ad (obs, obsm latent means), cached per size."""
    out = RESULTS / size
    if (out / "model.h5ad").exists():
        return out
    import anndata as ad
    import numpy as np
    from scvi_hub_workflow.builtin_datasets import simulated_atlas

    n_cells, n_genes, n_types = (int(n) for n in size.split("x"))
    out.mkdir(parents=True, exist_ok=True)
    adata = simulated_atlas(n_cells=n_cells, n_genes=n_genes, n_cell_types=n_types, seed=SEED)
    adata.write_h5ad(out / "hvg.h5ad")
    rng = np.random.default_rng(SEED)
    types = adata.obs["true_cell_type"].astype("category").cat.codes.to_numpy()
    batches = adata.obs["batch"].astype("category").cat.codes.to_numpy()
    centres = rng.normal(scale=3.0, size=(n_types, N_LATENT))
    shifts = rng.normal(scale=1.0, size=(3, N_LATENT))
    latent = centres[types] + shifts[batches] + rng.normal(size=(n_cells, N_LATENT))
    model = ad.AnnData(obs=adata.obs, obsm={"scanvi_latent_qzm": latent.astype(np.float32)})
    model.write_h5ad(out / "model.h5ad")
    return out


def worker(directory: Path, max_cells: int) -> None:
    from scvi_hub_workflow import figures
    from scvi_hub_workflow.config import model_settings
    from scvi_hub_workflow.integration import integrate

    setup = {"batch_key": "batch", "labels_key": "cell_type", "unlabeled_category": "unknown"}
    entry = {
        "dataset": {"source": "builtin:simulated-atlas"},
        "model": {"class": "SCANVI", "setup": setup},
        "criticism": {"integration_max_cells": max_cells},
        "train": {"seed": SEED},
    }
    settings = model_settings({"models": {"m": entry}}, "m")
    summary, table = integrate(directory / "model.h5ad", directory / "hvg.h5ad", settings, n_jobs=2)
    figures.save_png(figures.integration_scores(table, summary), directory / "integration.png")
    print(json.dumps({"n_cells": summary["n_cells"], "seconds_in_step": summary["seconds"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES)
    parser.add_argument("--max-cells", nargs="+", type=int, default=[10000])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(Path(args.worker[0]), int(args.worker[1]))
        return
    rows = []
    for size in args.sizes:
        directory = prepare(size)
        n_cells = int(size.split("x")[0])
        # a larger cap than the labelled cells measures the same run again
        caps = sorted({min(cap, n_cells) for cap in args.max_cells})
        for cap in caps:
            last_line, measurement = measured(__file__, str(directory), str(cap))
            row = {"size": size, "max_cells": cap} | json.loads(last_line) | measurement
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{datetime.date.today()}, {os.cpu_count()} CPUs\n")
    print(
        "| cells x genes x cell types | cells scored | time (wall, with start-up) "
        "| of which scib-metrics | peak RSS | load average |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['n_cells']:,} | {r['seconds']} s "
            f"| {r['seconds_in_step']['scib']:.1f} s | {r['peak_rss_gib']} GiB "
            f"| {r['load_average']:.1f} |"
        )


if __name__ == "__main__":
    main()
