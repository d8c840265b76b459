"""Benchmark: the query mapping check (rule query_check) at the default size and at 27k x 3k.

For each size (cells x genes) it simulates the built-in labelled atlas
(``builtin_datasets.simulated_atlas``, 3 batches) as the step's hvg.h5ad, trains the full model
once for the comparison (cached under benchmarks/results/query_check/), then runs the step as its
rule script does, in a fresh interpreter, and prints a table of wall time (with interpreter start
and imports, as a job pays them), peak RSS, and the epochs and seconds of the reference training and
of the query's fine-tune, so the cost per epoch (and of a full recipe) can be computed.

Settings: the default config's simulated-scanvi model (SCANVI from SCVI). At 1500x400 its own
epochs (40 SCVI + 10 SCANVI, query_epochs 50); at 27000x3000 ``--epochs`` per phase (default
2 SCVI, 2 SCANVI, 2 query: the cost is per epoch).

    python benchmarks/query_check.py                        # 1500x400 and 27000x3000
    python benchmarks/query_check.py --sizes 27000x3000 --epochs 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

from measure import measured

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "query_check"
SIZES = ["1500x400", "27000x3000"]
DEFAULT_SIZE = "1500x400"
SEED = 0


def settings_for(size: str, epochs: int):
    """The simulated-scanvi model's query_check settings; few epochs above the default size."""
    import yaml
    from scvi_hub_workflow import config as config_model

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    models = config_model.resolve(config, ROOT)
    settings = models["simulated-scanvi"]
    train = settings.train.replace(accelerator="cpu")
    if size == DEFAULT_SIZE:
        return settings.replace(train=train)
    train = train.replace(scvi_max_epochs=epochs, max_epochs=epochs, early_stopping=False)
    criticism = settings.criticism.replace(query_epochs=epochs)
    return settings.replace(train=train, criticism=criticism)


def prepare(size: str, epochs: int) -> Path:
    """hvg.h5ad and the full model's latent means (latent.tsv), cached per size and epochs."""
    out = RESULTS / f"{size}-{epochs}"
    if (out / "latent.tsv").exists():
        return out
    import pandas as pd
    from scvi_hub_workflow import training
    from scvi_hub_workflow.builtin_datasets import simulated_atlas

    n_cells, n_genes = (int(n) for n in size.split("x"))
    out.mkdir(parents=True, exist_ok=True)
    adata = simulated_atlas(n_cells=n_cells, n_genes=n_genes, seed=SEED)
    adata.write_h5ad(out / "hvg.h5ad")
    s = settings_for(size, epochs)
    model, _, _ = training.train_model(adata, s, cuda_available=False)
    latent = pd.DataFrame(model.get_latent_representation(), index=adata.obs_names)
    latent.to_csv(out / "latent.tsv", sep="\t")
    return out


def worker(size: str, epochs: int, directory: Path) -> None:
    import pandas as pd
    import torch
    from scvi_hub_workflow.query_check import run_query_check

    torch.set_num_threads(os.cpu_count())
    latent = pd.read_csv(directory / "latent.tsv", sep="\t", index_col=0)
    result = run_query_check(
        str(directory / "hvg.h5ad"), latent, settings_for(size, epochs), cuda_available=False
    )
    (directory / "query_check.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES)
    parser.add_argument("--epochs", type=int, default=2, help="per phase above 1500x400")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), Path(args.worker[2]))
        return
    rows = []
    for size in args.sizes:
        directory = prepare(size, args.epochs)
        _, measurement = measured(__file__, size, str(args.epochs), str(directory), timeout=3600)
        result = json.loads((directory / "query_check.json").read_text())
        seconds = result["seconds"]
        row = {
            "size": size,
            "reference_epochs": sum(p["epochs"] for p in result["reference_phases"]),
            "reference_s": seconds["reference_training"],
            "query_epochs": result["query_epochs"],
            "query_s": seconds["query_mapping"],
            "knn_overlap": round(result["knn_overlap"], 3),
        } | measurement
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{datetime.date.today()}, {os.cpu_count()} CPUs\n")
    print(
        "| cells x genes | time (wall, with start-up) | peak RSS | reference training "
        "| query fine-tune | load average |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        ref_per = r["reference_s"] / max(r["reference_epochs"], 1)
        query_per = r["query_s"] / max(r["query_epochs"], 1)
        print(
            f"| {r['size']} | {r['seconds']} s | {r['peak_rss_gib']} GiB "
            f"| {r['reference_epochs']} epochs, {r['reference_s']:.1f} s ({ref_per:.2f} s/epoch) "
            f"| {r['query_epochs']} epochs, {r['query_s']:.1f} s ({query_per:.2f} s/epoch) "
            f"| {r['load_average']:.1f} |"
        )


if __name__ == "__main__":
    main()
