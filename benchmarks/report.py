"""Benchmark: the report's steps (figures, label_transfer) at the default size and at 27k x 3k.

For each size (cells x genes) it simulates the built-in labelled atlas
(``builtin_datasets.simulated_atlas``), trains a small SCANVI from SCVI (one epoch each: the
benchmark measures the report's steps, not the model; cached under benchmarks/results/report/),
minifies it, then runs each step as its rule script does, in its own subprocess, and prints a table
of wall time (with interpreter start and imports, as a job pays them) and peak RSS.

The figures step is given the model's real history and latent space, and per-cell / per-gene
CV tables of the right size (random values: plotting time depends on the number of points only).

    python benchmarks/report.py                      # 1500x400 (default model) and 27000x3000
    python benchmarks/report.py --sizes 27000x3000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

from measure import measured

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "report"
SIZES = ["1500x400", "27000x3000"]
SEED = 0


def prepare(size: str) -> Path:
    """The minified SCANVI model and its history, cached per size."""
    out = RESULTS / size
    if (out / "minified" / "model.pt").exists():
        return out
    import scvi
    import yaml
    from scvi_hub_workflow import config as config_model
    from scvi_hub_workflow import training
    from scvi_hub_workflow.builtin_datasets import simulated_atlas

    n_cells, n_genes = (int(n) for n in size.split("x"))
    out.mkdir(parents=True, exist_ok=True)
    adata = simulated_atlas(n_cells=n_cells, n_genes=n_genes, seed=SEED)
    # the default config's SCANVI settings, one epoch per phase
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    settings = config_model.resolve(config)["simulated-scanvi"]
    train = settings.train.replace(
        accelerator="cpu", scvi_max_epochs=1, max_epochs=1, early_stopping=False
    )
    settings = settings.replace(train=train)
    scvi.settings.seed = SEED
    model, history, _ = training.train_model(adata, settings, cuda_available=False)
    history.to_csv(out / "history.tsv", sep="\t")
    training.minify(model)
    model.save(str(out / "minified"), save_anndata=True, overwrite=True)
    return out


def worker_label_transfer(directory: Path) -> None:
    from scvi_hub_workflow import figures
    from scvi_hub_workflow.label_transfer import evaluate, predict_probabilities
    from scvi_hub_workflow.model_io import load_model

    model = load_model(directory / "minified")
    result = evaluate(
        model.adata.obs,
        predict_probabilities(model),
        labels_key="cell_type",
        unlabeled_category="unknown",
    )
    summary, _, calibration, confusion = result["validation"]
    figures.save_png(figures.confusion_matrix(confusion), directory / "confusion.png")
    figures.save_png(figures.calibration_curve(calibration, summary["ece"]), directory / "cal.png")


def worker_figures(directory: Path) -> None:
    import anndata as ad
    import numpy as np
    import pandas as pd
    from scvi_hub_workflow.figures import model_figures, save_png

    adata = ad.read_h5ad(directory / "minified" / "adata.h5ad")
    rng = np.random.default_rng(SEED)
    cells = pd.DataFrame(
        {
            "split": adata.obs["split"].astype(str).to_numpy(),
            "observed_cv": rng.gamma(2, 1, adata.n_obs),
            "model_cv": rng.gamma(2, 1, adata.n_obs),
        },
        index=adata.obs_names,
    )
    genes = pd.DataFrame(
        {"observed_cv": rng.gamma(2, 1, adata.n_vars), "model_cv": rng.gamma(2, 1, adata.n_vars)},
        index=adata.var_names,
    )
    names = sorted(set(adata.obs["true_cell_type"].astype(str)))
    de = pd.DataFrame(
        {"group": names, "n_cells": 100}
        | {m: 0.5 for m in ("gene_f1", "roc_auc", "pr_auc", "lfc_pearson")}
    )
    made = model_figures(
        pd.read_csv(directory / "history.tsv", sep="\t", index_col="epoch"),
        adata.obs,
        np.asarray(adata.obsm["scanvi_latent_qzm"]),
        cells,
        genes,
        de,
        batch_key="batch",
        labels_key="cell_type",
        seed=SEED,
    )
    for name, figure in made.items():
        save_png(figure, directory / f"{name}.png")


WORKERS = {"figures": worker_figures, "label_transfer": worker_label_transfer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        WORKERS[args.worker[0]](Path(args.worker[1]))
        return
    rows = []
    for size in args.sizes:
        directory = prepare(size)
        for step in WORKERS:
            _, measurement = measured(__file__, step, str(directory))
            row = {"size": size, "step": step} | measurement
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\n{datetime.date.today()}, {os.cpu_count()} CPUs\n")
    print("| cells x genes | step | time (wall, with start-up) | peak RSS | load average |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['step']} | {r['seconds']} s | {r['peak_rss_gib']} GiB "
            f"| {r['load_average']:.1f} |"
        )


if __name__ == "__main__":
    main()
