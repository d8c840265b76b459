"""Training throughput: SCVI over a grid of batch sizes x data loaders, on the device here.

Trains SCVI with the default config's `simulated-scanvi` network (the Tabula Sapiens card's
settings: 3 layers, n_latent 20, layer norm, NB; the same SCVI as that model's pre-training) on
the built-in labelled simulation, for each batch size (default 128, 1024, 4096) and each loader:

- `default`: scvi-tools' AnnDataLoader in the main process (today's training).
- `pinned`: pinned host memory + persistent loader workers (`--workers`).
- `device`: the whole training matrix on the device (DeviceBackedDataSplitter).
- `sparse`: sparse CSR minibatches, densified on the device (`load_sparse_tensor`; not in the
  default grid).

Per cell of the grid it prints seconds per training epoch (the training batches alone, mean over
the epochs after the first, which pays for worker start and warm-up), training cells per second,
peak memory (GPU memory on a GPU; the process's peak resident memory on the CPU) and the
validation ELBO (scvi-tools' `get_elbo` on the held-out cells, higher is better) after the same
number of epochs. The learning rate grows with the batch size (`--lr-scaling`, square root by
default) from 1e-3 at 128: a larger batch takes fewer steps per epoch. The KL warm-up is counted
in epochs (scvi-tools' n_epochs_kl_warmup), so it is the same at every batch size.

Sizes over 50,000 cells repeat a 50,000-cell simulation (throughput does not depend on which
cells they are; their validation ELBO then is on cells seen, as copies, in training).

Run from the repository root:

    python benchmarks/training.py --sizes 5000x1000 --epochs 3
    python benchmarks/training.py --sizes 27000x3000 500000x3000 --epochs 3 --out table.md
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import yaml
from lightning.pytorch.callbacks import Callback
from scvi_hub_workflow import config as config_model
from scvi_hub_workflow.builtin_datasets import simulated_atlas
from scvi_hub_workflow.loaders import LoaderSettings, loader_train_kwargs, used_data_on_device
from scvi_hub_workflow.model_kinds import kind_of

BATCH_SIZES = (128, 1024, 4096)
LOADERS = ("default", "pinned", "device")
ALL_LOADERS = (*LOADERS, "sparse")
BASE_LR, BASE_BATCH = 1e-3, 128
SIMULATE_AT_MOST = 50_000


class EpochTimer(Callback):
    """Seconds of each training epoch: from its start to its last training batch (validation and
    checkpointing excluded)."""

    def __init__(self):
        self.seconds: list[float] = []
        self._start = self._last = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._last = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(self._last - self._start)


def loader_settings(name: str, workers: int) -> LoaderSettings:
    return {
        "default": LoaderSettings(),
        "pinned": LoaderSettings(
            pin_memory=True, num_workers=workers, persistent_workers=workers > 0
        ),
        "device": LoaderSettings(data_on_device=True),
        "sparse": LoaderSettings(load_sparse_tensor=True),
    }[name]


def cpu_name() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"CPU {model}, {os.cpu_count()} cores visible"


def scaled_lr(batch_size: int, scaling: str) -> float:
    ratio = batch_size / BASE_BATCH
    return BASE_LR * {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[scaling]


def atlas(n_cells: int, n_genes: int) -> ad.AnnData:
    if n_cells <= SIMULATE_AT_MOST:
        return simulated_atlas(n_cells=n_cells, n_genes=n_genes, n_cell_types=24)
    base = simulated_atlas(n_cells=SIMULATE_AT_MOST, n_genes=n_genes, n_cell_types=24)
    repeats = -(-n_cells // SIMULATE_AT_MOST)
    rows = np.arange(n_cells) % SIMULATE_AT_MOST
    obs = base.obs.iloc[rows].reset_index(drop=True)
    obs.index = [f"cell_{i}" for i in range(n_cells)]
    matrix = sp.vstack([base.X] * repeats, format="csr")[:n_cells]
    return ad.AnnData(X=matrix, obs=obs, var=base.var)


def network_settings() -> tuple[dict, dict]:
    """(constructor arguments, setup_anndata arguments) of the default config's simulated-scanvi
    pre-training model (SCVI)."""
    config = yaml.safe_load(Path("config/config.yaml").read_text())
    spec = config_model.resolve(config)["simulated-scanvi"].model
    base = kind_of(spec.kind.pretrained_from)
    return base.model_kwargs(spec.params), spec.setup.setup_anndata_kwargs(base)


class PeakMemory:
    """Peak GPU memory (torch's allocator) on a GPU, else the process's peak resident memory
    (Linux VmHWM, reset through /proc/self/clear_refs), in MiB; None when neither is readable."""

    def __init__(self, gpu: bool):
        self.gpu = gpu

    def reset(self) -> None:
        import torch

        if self.gpu:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")

    def peak_mib(self) -> float | None:
        import torch

        if self.gpu:
            return torch.cuda.max_memory_allocated() / 2**20
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None


def measure(adata, params, setup, batch_size, loader, args, accelerator) -> dict:
    import scvi
    import torch

    gpu = accelerator == "gpu"
    scvi.settings.seed = 0
    scvi.model.SCVI.setup_anndata(adata, **setup)
    model = scvi.model.SCVI(adata, **params)
    lr = scaled_lr(batch_size, args.lr_scaling)
    timer = EpochTimer()
    kwargs = {
        "max_epochs": args.epochs,
        "accelerator": accelerator,
        "devices": 1 if gpu else "auto",
        "batch_size": batch_size,
        "early_stopping": False,
        "plan_kwargs": {"lr": lr},
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "callbacks": [timer],
    }
    settings = loader_settings(loader, args.workers)
    kwargs |= loader_train_kwargs(
        settings,
        model,
        accelerator=accelerator,
        batch_size=batch_size,
        train_size=None,
        max_epochs=args.epochs,
    )
    memory = PeakMemory(gpu)
    memory.reset()
    started = time.perf_counter()
    model.train(**kwargs)
    seconds = time.perf_counter() - started
    peak = memory.peak_mib()
    assert used_data_on_device(model) == settings.data_on_device, loader
    steady = timer.seconds[1:] or timer.seconds
    per_epoch = sum(steady) / len(steady)
    n_train = len(model.train_indices)
    elbo = model.get_elbo(indices=model.validation_indices, batch_size=4096)
    elbo = float(elbo.item() if isinstance(elbo, torch.Tensor) else elbo)
    return {
        "size": f"{adata.n_obs}x{adata.n_vars}",
        "batch_size": batch_size,
        "loader": loader,
        "lr": lr,
        "epochs": len(timer.seconds),
        "train_seconds": seconds,
        "s_per_epoch": per_epoch,
        "cells_per_s": n_train / per_epoch,
        "peak_mib": peak,
        "elbo_validation": elbo,
    }


def table(rows: list[dict], memory_label: str) -> str:
    lines = [
        f"| cells x genes | batch | loader | lr | epochs | s/epoch | cells/s | {memory_label} "
        "| validation ELBO | train() s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(
                f"| {r['size']} | {r['batch_size']} | {r['loader']} | | | | | | {r['skipped']} | |"
            )
            continue
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(
            f"| {r['size']} | {r['batch_size']} | {r['loader']} | {r['lr']:.2g} | {r['epochs']} "
            f"| {r['s_per_epoch']:.2f} | {r['cells_per_s']:,.0f} | {peak} "
            f"| {r['elbo_validation']:.1f} | {r['train_seconds']:.1f} |"
        )
    return "\n".join(lines)


def report(args, rows: list[dict], device: str, gpu: bool, started: float, final=False) -> None:
    """The table so far, with what it was measured on; printed at the end, and written to
    `--out` (atomically) after every cell."""
    import torch

    memory_label = "peak GPU MiB" if gpu else "peak RSS MiB"
    text = (
        f"Device: {device}; torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"`pinned` with {args.workers} workers; lr scaling {args.lr_scaling}; "
        f"{time.perf_counter() - started:.0f} s {'in all' if final else 'so far'}.\n\n"
        + table(rows, memory_label)
    )
    if final:
        print("\n" + text)
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["5000x1000", "27000x3000"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=list(BATCH_SIZES))
    parser.add_argument("--loaders", nargs="+", choices=ALL_LOADERS, default=list(LOADERS))
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, max(1, (os.cpu_count() or 2) // 2)),
        help="loader workers of the `pinned` loader",
    )
    parser.add_argument("--lr-scaling", choices=["sqrt", "linear", "none"], default="sqrt")
    parser.add_argument(
        "--device", choices=["auto", "cpu", "gpu"], default="auto", help="auto: the GPU if any"
    )
    parser.add_argument(
        "--budget-seconds",
        type=float,
        default=None,
        help="skip the grid's remaining cells once this much time has passed",
    )
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args()
    gpu = args.device == "gpu" or (args.device == "auto" and torch.cuda.is_available())
    accelerator = "gpu" if gpu else "cpu"
    device = torch.cuda.get_device_name(0) if gpu else cpu_name()
    params, setup = network_settings()
    started = time.perf_counter()
    rows = []
    for size in args.sizes:
        n_cells, n_genes = map(int, size.split("x"))
        t = time.perf_counter()
        adata = atlas(n_cells, n_genes)
        print(f"# {size}: simulated in {time.perf_counter() - t:.1f} s", flush=True)
        for batch_size in args.batch_sizes:
            for loader in args.loaders:
                if args.budget_seconds and time.perf_counter() - started > args.budget_seconds:
                    rows.append(
                        {"size": size, "batch_size": batch_size, "loader": loader,
                         "skipped": "skipped: time budget spent"}
                    )  # fmt: skip
                    continue
                rows.append(measure(adata, params, setup, batch_size, loader, args, accelerator))
                print(rows[-1], flush=True)
                report(args, rows, device, gpu, started)  # a run stopped later keeps these
    report(args, rows, device, gpu, started, final=True)


if __name__ == "__main__":
    main()
