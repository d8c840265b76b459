"""Benchmark: streaming criticism engine vs scvi-tools' PosteriorPredictiveCheck.

For each size (cells x genes) it simulates negative-binomial counts with 24 labels and 3 batches,
trains one small SCVI model (cached under benchmarks/results/), then computes all card metrics
(cell-wise CV, gene-wise CV, DE) with our engine and with scvi-tools, each in its own subprocess
with peak memory measured and capped (memory and time: a capped run is reported as
"killed (out of memory)" or "timeout", never dropped). Each engine's result is printed and
appended to benchmarks/results/criticism.jsonl as soon as it finishes; the markdown table comes
at the end.

    python benchmarks/criticism.py                    # all sizes
    python benchmarks/criticism.py --sizes 5000x2000  # one size
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
from scvi_hub_workflow import training

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = ["400x100", "5000x2000", "10000x2000", "27000x3000", "200000x3000"]
OURS_ONLY = {"200000x3000"}  # scvi-tools would need terabytes here
N_LABELS, N_BATCHES, N_SAMPLES, SEED = 24, 3, 3, 0
MEMORY_CAP_BYTES = 20 * 2**30
TIME_CAP_SECONDS = {"ours": 1800, "scvi": 600}
BATCH_SIZE = 1024
LOG = RESULTS / "criticism.jsonl"


# --- data and model ------------------------------------------------------------------------


def simulate(n_cells: int, n_genes: int, seed: int = SEED):
    """NB counts with 24 labels (each with its own markers) and 3 batches, built in row chunks."""
    import anndata
    import pandas as pd
    from scipy import sparse

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_LABELS, n_cells)
    batches = rng.integers(0, N_BATCHES, n_cells)
    base = rng.gamma(0.4, 1.0, n_genes)
    label_effect = np.exp(rng.normal(0, 0.4, (N_LABELS, n_genes)))
    for k in range(N_LABELS):
        label_effect[k, rng.choice(n_genes, max(n_genes // 50, 2), replace=False)] *= 8
    batch_effect = np.exp(rng.normal(0, 0.2, (N_BATCHES, n_genes)))
    chunks = []
    for start in range(0, n_cells, 20000):
        rows = slice(start, min(start + 20000, n_cells))
        size = rng.lognormal(0, 0.4, (rows.stop - rows.start, 1))
        mean = base * label_effect[labels[rows]] * batch_effect[batches[rows]] * size
        counts = rng.negative_binomial(3, 3 / (3 + mean)).astype(np.float32)
        chunks.append(sparse.csr_matrix(counts))
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical([f"type_{k:02d}" for k in labels]),
            "batch": pd.Categorical([f"batch_{b}" for b in batches]),
        },
        index=[f"cell_{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene_{j}" for j in range(n_genes)])
    return anndata.AnnData(X=sparse.vstack(chunks).tocsr(), obs=obs, var=var)


def prepare(size: str) -> Path:
    """Simulated counts (hvg.h5ad) and a trained, minified SCVI model, cached per size."""
    out = RESULTS / size
    if (out / "minified" / "model.pt").exists() and (out / "hvg.h5ad").exists():
        return out
    import scvi

    n_cells, n_genes = (int(n) for n in size.split("x"))
    out.mkdir(parents=True, exist_ok=True)
    scvi.settings.seed = SEED
    adata = simulate(n_cells, n_genes)
    adata.write_h5ad(out / "hvg.h5ad")
    scvi.model.SCVI.setup_anndata(adata, batch_key="batch", labels_key="cell_type")
    model = scvi.model.SCVI(adata, n_latent=10)
    # A few epochs: the benchmark measures criticism, not model quality.
    epochs = 20 if n_cells <= 10000 else 2 if n_cells <= 50000 else 1
    model.train(max_epochs=epochs, batch_size=512, train_size=0.9, enable_progress_bar=False)
    # The workflow's own steps: record the split, then minify (train and minify rules).
    training.record_split(model, adata)
    training.minify(model)
    model.save(out / "minified", save_anndata=True, overwrite=True)
    return out


# --- workers (each runs in its own subprocess) ---------------------------------------------


def run_ours(directory: Path) -> dict:
    import scvi  # noqa: F401  (imported before the clock starts, as in run_scvi_tools)
    from scvi_hub_workflow import criticism

    started = time.perf_counter()
    model = criticism.load_minified_model(directory / "minified")
    data = directory / "hvg.h5ad"
    settings = {"layer": None, "n_samples": N_SAMPLES, "batch_size": BATCH_SIZE, "seed": SEED}
    grouping = criticism.resolve_groups(
        model, labels_key="cell_type", unlabeled_category=None, min_cells=10, cluster_resolution=1
    )
    cv, table, *_ = criticism.criticise(
        model, data, grouping, **settings, alpha=0.05, top_n=100, tmp_dir=RESULTS
    )
    return {
        "seconds": time.perf_counter() - started,
        "cell_cv_pearson_train": cv["cell_wise"]["train"]["pearson"],
        "mean_roc_auc": float(table["roc_auc"].mean()),
    }


def run_scvi_tools(directory: Path) -> dict:
    """scvi-tools the way create_criticism_report runs it: PPC with n_samples, CV both ways,
    then differential_expression with its defaults (t-test, one sample, p_val_thresh=0.2)."""
    import anndata
    import scvi
    from scvi.criticism import PosteriorPredictiveCheck

    # differential_expression insists on leidenalg being importable even when it is given the
    # groups (it only clusters without them); leidenalg is not installed (its wheels pin igraph
    # < 0.12), so register an empty module for that check. It is never used here.
    sys.modules.setdefault("leidenalg", types.ModuleType("leidenalg"))
    started = time.perf_counter()
    model = scvi.model.SCVI.load(str(directory / "minified"))
    adata = anndata.read_h5ad(directory / "hvg.h5ad")
    # scvi-tools 1.4.2's PPC fails on a sparse X ("setting an array element with a sequence"
    # in its integer check), so it gets the counts dense; it converts them to pydata-sparse.
    adata.X = adata.X.toarray()
    ppc = PosteriorPredictiveCheck(adata, {"model": model}, n_samples=N_SAMPLES)
    _stage("sampled", started)
    ppc.coefficient_of_variation("features")
    ppc.coefficient_of_variation("cells")
    _stage("cv done", started)
    ppc.differential_expression(de_groupby="cell_type", p_val_thresh=0.2)
    return {"seconds": time.perf_counter() - started}


def _stage(name: str, started: float) -> None:
    # progress on stdout, so a run killed later still tells how far it got
    print(json.dumps({"stage": name, "seconds": time.perf_counter() - started}), flush=True)


# --- driver --------------------------------------------------------------------------------


def measure(engine: str, directory: Path, memory_cap: int, time_cap: float) -> dict:
    """Run one worker in a subprocess; poll its memory and kill it above ``memory_cap`` bytes
    of RSS or after ``time_cap`` seconds."""
    import tempfile

    import psutil

    cmd = [sys.executable, __file__, "--worker", engine, "--dir", str(directory)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.DEVNULL, text=True)
        watched, killed = psutil.Process(proc.pid), None
        while True:
            # wait4 gives this child's own peak RSS (ru_maxrss, KiB on Linux)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                if killed is None and watched.memory_info().rss > memory_cap:
                    killed = "killed (out of memory)"
                elif killed is None and time.perf_counter() - started > time_cap:
                    killed = "timeout"
                if killed:
                    proc.kill()
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.05)
        stdout.seek(0)
        lines = [json.loads(line) for line in stdout.read().splitlines() if line.startswith("{")]
    result = {
        "engine": engine,
        "wall_seconds": time.perf_counter() - started,
        "peak_bytes": usage.ru_maxrss * 1024,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }
    stages = [line for line in lines if "stage" in line]
    if stages:
        result["last_stage"] = stages[-1]
    if killed:
        return result | {"status": killed}
    if os.waitstatus_to_exitcode(status) != 0 or not lines or "stage" in lines[-1]:
        return result | {"status": f"failed (exit {os.waitstatus_to_exitcode(status)})"}
    return result | {"status": "ok"} | lines[-1]


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _time(result: dict) -> str:
    if result["status"] == "ok":
        return f"{result['seconds']:.1f} s"
    stage = result.get("last_stage", {}).get("stage")
    where = f", after stage '{stage}'" if stage else ""
    return f"{result['status']} after {result['wall_seconds']:.0f} s{where}"


def table_row(size: str, ours: dict, theirs: dict | None) -> str:
    """One markdown row: time and peak RSS of both engines, speed-up and memory ratio."""
    cells = [size, _time(ours), _gib(ours["peak_bytes"])]
    if theirs is None:
        return "| " + " | ".join([*cells, "not run", "-", "-", "-"]) + " |"
    cells += [_time(theirs)]
    if theirs["status"] != "ok":
        # a capped run gives lower bounds: it had used this long and this much when stopped
        cells += [f">= {_gib(theirs['peak_bytes'])}"]
        ratios = [f"> {theirs['wall_seconds'] / ours['seconds']:.0f}x", "-"]
    else:
        cells += [_gib(theirs["peak_bytes"])]
        ratios = [
            f"{theirs['seconds'] / ours['seconds']:.1f}x",
            f"{theirs['peak_bytes'] / ours['peak_bytes']:.1f}x",
        ]
    cells += ratios if ours["status"] == "ok" else ["-", "-"]
    return "| " + " | ".join(cells) + " |"


TABLE_HEAD = (
    "| cells x genes | ours time | ours peak RSS | scvi-tools time | scvi-tools peak RSS "
    "| speed-up | memory ratio |\n|---|---|---|---|---|---|---|"
)


def main() -> None:
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES)
    parser.add_argument("--engines", nargs="+", default=["ours", "scvi"])
    parser.add_argument("--worker", choices=["ours", "scvi"])
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--scvi-timeout", type=float, default=TIME_CAP_SECONDS["scvi"])
    args = parser.parse_args()
    if args.worker:
        worker = run_ours if args.worker == "ours" else run_scvi_tools
        print(json.dumps(worker(args.dir)))
        return

    time_caps = TIME_CAP_SECONDS | {"scvi": args.scvi_timeout}
    rows = []
    for size in args.sizes:
        directory = prepare(size)
        results = {}
        for engine in args.engines:
            if engine == "scvi" and size in OURS_ONLY:
                continue
            # never more than the memory free now (other jobs share this machine)
            cap = min(MEMORY_CAP_BYTES, int(psutil.virtual_memory().available * 0.9))
            results[engine] = measure(engine, directory, cap, time_caps[engine])
            record = {"size": size, "date": datetime.date.today().isoformat()} | results[engine]
            print(json.dumps(record), file=sys.stderr, flush=True)
            with LOG.open("a") as log:
                log.write(json.dumps(record) + "\n")
        if "ours" in results:
            rows.append(table_row(size, results["ours"], results.get("scvi")))
            print(rows[-1], file=sys.stderr, flush=True)
    print(TABLE_HEAD)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
