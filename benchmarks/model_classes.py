"""Training time and peak memory of each model class, and what `from_scvi: <model>` saves.

For every class of the model-kind registry (`model_kinds.KINDS`, so a new class appears without
editing this file) it trains one model as the train job does (`training.train_model`, then
`model.save` with its data), each in a fresh interpreter (`measure.measured`: wall time with
interpreter start and imports, peak RSS of that process). Settings: the class's model of the
Tabula Sapiens example (`config/examples/tabula-sapiens.yaml`, the notebook's recipe: SCVI 100
epochs, SCANVI 20 from that SCVI, CondSCVI 200, RNAStereoscope 100); a class the example lacks
gets its registry defaults on the simulation's columns and the training settings of
`config/examples/every-class.yaml` (TOTALVI: 40 epochs). Early stopping is off, so each phase
runs the epochs it is given (the recipe has none). Data: the built-in labelled simulation
shaped as a Tabula Sapiens tissue after its HVG step (`donor_id` and `assay`, joined into the
recipe's `donor_assay` as the dataset step joins them; every cell labelled in `cell_type`;
proteins in `obsm["protein_expression"]` for TOTALVI, 24 or 100; cached in
`benchmarks/results/model_classes/`):

- the default size, 1,500 cells x 400 genes (the default config's `simulated-scanvi` data after
  its HVG step): the recipe's epochs, measured whole (or `--default-epochs` per phase);
- 27,000 x 3,000 (a Tabula Sapiens tissue with the recipe's 3,000 HVGs): `--epochs` epochs
  per phase.

With fewer epochs than the recipe's, the table gives seconds per epoch (mean of the epochs
after the first, validation included) and the recipe's time **extrapolated**: each phase as
run plus its missing epochs at that pace (the time outside the phases, e.g. loading a
pre-trained model, counted once).

SCANVI's row is the example's `from_scvi: <model>`: its own phase, from the SCVI row's saved
model. The second table compares it, in the same run and right after it, with `from_scvi:
true` (SCANVI pre-training its own SCVI, with the SCVI model's recipe epochs and plan). A class
whose required setup the simulation cannot supply is listed as "not measured (needs ...)".

Run from the repository root:

    python benchmarks/model_classes.py                    # 1500x400 whole, 27000x3000 3 epochs
    python benchmarks/model_classes.py --default-epochs 10 --epochs 2
    python benchmarks/model_classes.py --classes TOTALVI --sizes 1500x400 --default-epochs 2
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import time
from pathlib import Path

from measure import measured

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "model_classes"
EXAMPLE = ROOT / "config" / "examples" / "tabula-sapiens.yaml"
# the training settings of a class the Tabula Sapiens collection lacks (TOTALVI)
EVERY_CLASS = ROOT / "config" / "examples" / "every-class.yaml"
SIZES = ["1500x400", "27000x3000"]
# The setup keys the simulation supplies, as the example's setup names its columns.
SUPPLIED = {
    "batch_key": "donor_id",
    "labels_key": "cell_type",
    "unlabeled_category": "unknown",
    "protein_expression_obsm_key": "protein_expression",
}
ASSAYS = ["10x 3' v3", "Smart-seq2"]


def data_file(size: str) -> Path:
    """The Tabula-Sapiens-shaped simulation of this size (cached)."""
    path = RESULTS / f"{size}-with-proteins.h5ad"
    if path.exists():
        return path
    import numpy as np
    import pandas as pd
    from scvi_hub_workflow.builtin_datasets import simulated_citeseq
    from scvi_hub_workflow.layout import TRUTH_COLUMN

    n_cells, n_genes = (int(n) for n in size.split("x"))
    small = n_cells < 5000
    # 6 cell types at the default config's size, 24 (a tissue's order) at atlas sizes; the
    # RNA is simulated_atlas's, with proteins beside it for TOTALVI (24, or a CITE-seq
    # panel's 100), which the other classes do not read
    adata = simulated_citeseq(
        n_cells=n_cells,
        n_genes=n_genes,
        n_proteins=24 if small else 100,
        n_cell_types=6 if small else 24,
    )
    rng = np.random.default_rng(0)
    adata.obs = pd.DataFrame(
        {
            "donor_id": adata.obs["batch"].to_numpy(),
            "assay": pd.Categorical(rng.choice(ASSAYS, size=n_cells, p=[0.8, 0.2])),
            "cell_type": adata.obs[TRUTH_COLUMN].to_numpy(),
        },
        index=adata.obs_names,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    adata.write_h5ad(tmp)
    tmp.replace(path)
    return path


def needs(kind) -> list[str]:
    """What the class requires that the simulation does not have (empty: measurable)."""
    return [
        f"{what}, model.setup.{key}"
        for key, what in kind.required_setup.items()
        if key not in SUPPLIED
    ]


@functools.cache
def recipes() -> dict:
    """Class name -> settings of its model in the Tabula Sapiens example (the first tissue's),
    or, for a class the example lacks, its registry defaults on the simulation's columns."""
    import yaml
    from scvi_hub_workflow import config as config_model
    from scvi_hub_workflow.model_kinds import KINDS

    found, every_class = {}, {}
    for settings in config_model.resolve(yaml.safe_load(EXAMPLE.read_text())).values():
        found.setdefault(settings.model.model_class, settings)
    for settings in config_model.resolve(yaml.safe_load(EVERY_CLASS.read_text())).values():
        every_class.setdefault(settings.model.model_class, settings)
    for name, kind in KINDS.items():
        if name in found or needs(kind):
            continue
        setup = {k: v for k, v in SUPPLIED.items() if k in kind.setup_keys}
        entry = {"dataset": {"source": "builtin:simulated-atlas"}, "model": {"class": name}}
        entry["model"] |= {"setup": setup} | (
            {"every_cell_labelled": True} if kind.has_unlabelled_cells else {}
        )
        settings = config_model.resolve({"models": {name: entry}})[name]
        if name in every_class:  # its epochs and plan as config/examples/every-class.yaml's
            settings = settings.replace(train=every_class[name].train)
        found[name] = settings
    return found


def run_settings(name: str, epochs: int | None, from_scvi: bool | None):
    """The settings of one run: the class's recipe, early stopping off, `epochs` per phase
    (None: the recipe's), and `from_scvi: true` when asked (the base class's recipe for its
    pre-training phase)."""
    from scvi_hub_workflow.model_kinds import kind_of
    from scvi_hub_workflow.training import PLAN_KEYS

    every = recipes()
    settings = every[name]
    train = settings.train.replace(early_stopping=False)
    model = settings.model
    if from_scvi:
        base = every[kind_of(name).pretrained_from].train
        train = train.replace(
            scvi_max_epochs=base.max_epochs,
            scvi_plan={key: getattr(base, key) for key in PLAN_KEYS},
        )
        model = model.replace(from_scvi=True)
    if epochs is not None:
        train = train.replace(
            max_epochs=epochs, scvi_max_epochs=epochs if from_scvi else train.scvi_max_epochs
        )
    return settings.replace(train=train, model=model)


def recipe_epochs(name: str, phase: str) -> int | None:
    """The recipe's epochs of one phase (the class's own, or the pre-training of the class it
    starts from)."""
    from scvi_hub_workflow.model_kinds import kind_of

    every = recipes()
    own = name if phase == name.lower() else kind_of(name).pretrained_from
    return every[own].train.max_epochs


def worker(job: dict) -> None:
    import anndata as ad
    import torch
    from scvi_hub_workflow import progress
    from scvi_hub_workflow.joined_columns import join_columns
    from scvi_hub_workflow.training import train_model

    epoch_ends: list[list[float]] = []  # per phase: seconds from its start to each epoch's end

    class EpochClock(progress.ProgressLog):
        """The train job's progress log, also noting when each epoch (with its validation)
        ends."""

        def on_train_start(self, trainer, pl_module):
            super().on_train_start(trainer, pl_module)
            epoch_ends.append([])

        def on_train_epoch_end(self, trainer, pl_module):
            super().on_train_epoch_end(trainer, pl_module)
            epoch_ends[-1].append(time.monotonic() - self.started)

    progress.ProgressLog = EpochClock  # training.train_kwargs looks it up at each phase
    torch.set_num_threads(job["threads"])
    settings = run_settings(job["class"], job["epochs"], job["from_scvi"])
    adata = ad.read_h5ad(job["data"])
    # the obs columns the dataset step makes (the recipe's donor_assay)
    adata.obs = join_columns(adata.obs, settings.dataset.join_columns)
    model, _, summary = train_model(adata, settings, pretrained_dir=job["pretrained"])
    model.save(job["save"], overwrite=True, save_anndata=True)  # as the train job does
    phases = []
    for phase, ends in zip(summary["phases"], epoch_ends, strict=True):
        # the epochs after the first, which also pays for the loaders' and plan's start
        steady = (ends[-1] - ends[0]) / (len(ends) - 1) if len(ends) > 1 else ends[0]
        phases.append(
            {k: phase[k] for k in ("phase", "epochs", "seconds")} | {"s_per_epoch": steady}
        )
    print(json.dumps({"seconds": summary["seconds"], "phases": phases}))


def run(name: str, size: str, epochs: int | None, from_scvi: bool, threads: int) -> dict:
    """Train one model in a fresh interpreter; its row."""
    from scvi_hub_workflow.model_kinds import kind_of

    kind = kind_of(name)
    folder = RESULTS / size
    job = {
        "class": name,
        "data": str(data_file(size)),
        "epochs": epochs,
        "from_scvi": from_scvi,
        "threads": threads,
        "save": str(folder / (name + ("-from-scvi-true" if from_scvi else ""))),
        # `from_scvi: <model>`: the base class's model of the same size, trained before
        "pretrained": (
            str(folder / kind.pretrained_from) if kind.pretrained_from and not from_scvi else None
        ),
    }
    last_line, measurement = measured(__file__, json.dumps(job))
    result = json.loads(last_line)
    outside = result["seconds"] - sum(p["seconds"] for p in result["phases"])
    recipe, extrapolated = outside, epochs is not None
    for p in result["phases"]:
        # the phase as run, plus its missing epochs at the pace of those after the first
        p["recipe_epochs"] = recipe_epochs(name, p["phase"])
        if p["recipe_epochs"] is None:
            recipe = None
        elif recipe is not None:
            recipe += p["seconds"] + p["s_per_epoch"] * (p["recipe_epochs"] - p["epochs"])
    mode = f" (`from_scvi: {'true' if from_scvi else '<model>'}`)" if kind.pretrained_from else ""
    row = {"class": name + mode, "size": size, "from_scvi": from_scvi} | result
    row |= {"seconds_wall": measurement["seconds"]} | {
        k: measurement[k] for k in ("peak_rss_gib", "load_average")
    }
    row |= {"recipe_seconds": None if recipe is None else round(recipe, 1)}
    return row | {"extrapolated": extrapolated}


def ordered_kinds() -> list:
    """Every class, each after the class it can start from."""
    from scvi_hub_workflow.model_kinds import KINDS

    return sorted(KINDS.values(), key=lambda kind: kind.pretrained_from is not None)


def _phases(row: dict, field: str) -> str:
    return " + ".join(f"{p['phase']} {p[field]}" for p in row["phases"])


def _recipe(row: dict) -> str:
    if row["recipe_seconds"] is None:
        return "n/a (no max_epochs)"
    return f"{row['recipe_seconds']:,.0f}" + (" (extrapolated)" if row["extrapolated"] else "")


def class_table(rows: list[dict]) -> str:
    lines = [
        "| class | cells x genes | epochs run | s/epoch | train s | recipe epochs "
        "| recipe train s | peak RSS GiB | wall s (with start-up) | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "not_measured" in r:
            lines.append(f"| {r['class']} | {r['size']} | {r['not_measured']} |||||||| ")
            continue
        per_epoch = " + ".join(f"{p['phase']} {p['s_per_epoch']:.2f}" for p in r["phases"])
        lines.append(
            f"| {r['class']} | {r['size']} | {_phases(r, 'epochs')} | {per_epoch} "
            f"| {r['seconds']:.1f} | {_phases(r, 'recipe_epochs')} | {_recipe(r)} "
            f"| {r['peak_rss_gib']} | {r['seconds_wall']} | {r['load_average']:.1f} |"
        )
    return "\n".join(lines)


def from_scvi_table(pairs: list[tuple[dict, dict]]) -> str:
    lines = [
        "| cells x genes | SCANVI | epochs run | train s | recipe train s | peak RSS GiB "
        "| wall s | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for own, from_model in pairs:
        for r, label in ((own, "`from_scvi: true`"), (from_model, "`from_scvi: <model>`")):
            lines.append(
                f"| {r['size']} | {label} | {_phases(r, 'epochs')} | {r['seconds']:.1f} "
                f"| {_recipe(r)} | {r['peak_rss_gib']} | {r['seconds_wall']} "
                f"| {r['load_average']:.1f} |"
            )
    lines.append("")
    for own, from_model in pairs:
        if own["recipe_seconds"] is None or from_model["recipe_seconds"] is None:
            continue
        saved = own["recipe_seconds"] - from_model["recipe_seconds"]
        ratio = own["recipe_seconds"] / from_model["recipe_seconds"]
        measured_ratio = own["seconds"] / from_model["seconds"]
        lines.append(
            f"- {own['size']}: `from_scvi: <model>` saves {saved:,.0f} s of the recipe's "
            f"training ({'extrapolated' if own['extrapolated'] else 'measured'}; `true` takes "
            f"{ratio:.1f}x as long); in the epochs run here, train s {measured_ratio:.1f}x."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=SIZES)
    parser.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="epochs per phase above the default size (the default size runs the recipe's)",
    )
    parser.add_argument(
        "--default-epochs",
        type=int,
        default=None,
        help="epochs per phase at the default size (default: the recipe's, measured whole)",
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each from_scvi pair (a noisy machine)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads, as the train job")
    parser.add_argument(
        "--classes", nargs="+", help="only these classes (default: every class of the registry)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    rows, pairs = [], []
    for size in args.sizes:
        epochs = args.default_epochs if size == SIZES[0] else args.epochs
        for kind in ordered_kinds():
            if args.classes and kind.name not in args.classes:
                continue
            missing = needs(kind)
            if missing:
                rows.append(
                    {"class": kind.name, "size": size, "not_measured": "not measured (needs "
                     + "; ".join(missing) + ")"}
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                continue
            rows.append(run(kind.name, size, epochs, False, args.threads))
            print(json.dumps(rows[-1]), flush=True)
            if not kind.pretrained_from:
                continue
            # right after it, the same class pre-training its own; then both again, alternating
            pairs.append((run(kind.name, size, epochs, True, args.threads), rows[-1]))
            print(json.dumps(pairs[-1][0]), flush=True)
            for _ in range(args.repeats - 1):
                own = run(kind.name, size, epochs, True, args.threads)
                pairs.append((own, run(kind.name, size, epochs, False, args.threads)))
                print(json.dumps(pairs[-1]), flush=True)
    print(f"\n{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs\n")
    print(class_table(rows) + "\n\n" + from_scvi_table(pairs))


if __name__ == "__main__":
    main()
