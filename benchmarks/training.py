"""Training speed: epochs per second of the default SCANVI settings, on every device here.

Trains the default `simulated-scanvi` model (SCANVI from a pre-trained SCVI, the Tabula
Sapiens card's settings) on the built-in simulation at two sizes: the default config's
(1,500 cells x 400 genes) and the Tabula Sapiens card's seed size (27,000 cells x 3,000 genes),
for a few epochs of each phase, on the CPU and, when one is visible, the GPU. Prints a
markdown table. Run from the repository root:

    python benchmarks/training.py                      # both sizes, every device found
    python benchmarks/training.py --sizes 1500x400 --epochs 5
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml
from scvi_hub_workflow import config as config_model
from scvi_hub_workflow.builtin_datasets import simulated_atlas
from scvi_hub_workflow.training import train_model


def default_scanvi_settings(epochs: int, accelerator: str):
    config = yaml.safe_load(Path("config/config.yaml").read_text())
    settings = config_model.resolve(config)["simulated-scanvi"]
    train = settings.train.replace(
        max_epochs=epochs,
        scvi_max_epochs=epochs,
        early_stopping=False,
        accelerator=accelerator,
    )
    return settings.replace(train=train)


def measure(n_cells: int, n_genes: int, epochs: int, accelerator: str) -> dict:
    adata = simulated_atlas(n_cells=n_cells, n_genes=n_genes, n_cell_types=24)
    started = time.perf_counter()
    _, history, summary = train_model(adata, default_scanvi_settings(epochs, accelerator))
    seconds = time.perf_counter() - started
    total_epochs = 2 * epochs  # SCVI pre-training + SCANVI
    return {
        "size": f"{n_cells}x{n_genes}",
        "device": summary["gpu_name"] or summary["device"],
        "epochs": total_epochs,
        "seconds": seconds,
        "epochs_per_s": total_epochs / seconds,
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1500x400", "27000x3000"])
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each phase")
    args = parser.parse_args()
    devices = ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])
    rows = []
    for size in args.sizes:
        n_cells, n_genes = map(int, size.split("x"))
        for device in devices:
            rows.append(measure(n_cells, n_genes, args.epochs, device))
            print(rows[-1], flush=True)
    print("\n| cells x genes | device | epochs | seconds | epochs/s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']} | {r['device']} | {r['epochs']} | {r['seconds']:.1f} "
            f"| {r['epochs_per_s']:.2f} |"
        )
    if "gpu" not in devices:
        print("\nNo CUDA GPU visible: CPU only.")


if __name__ == "__main__":
    main()
