"""The cross-model summary table of the report: every model of the config, headline metrics."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from .checks import CHECKS
from .layout import CELL_WISE, GENE_WISE, PROTEIN_CV, RAN
from .rule_io import atomic_path

COMPLETE = "complete"
# A model's steps in the order they run, each with the output (under results/{model}/) that
# shows it finished; a failed job leaves its log and no output (Snakemake removes it).
STEPS = (
    ("dataset", "dataset.json"),
    ("hvg", "hvg.h5ad"),
    ("de_groups", "criticism/groups.json"),
    ("query_plan", "criticism/query_plan.json"),
    ("train", "training/summary.json"),
    ("minify", "minified"),
    ("posterior_predictive_check", "criticism/cv.json"),
    ("integration", "criticism/integration.json"),
    ("label_transfer", "criticism/label_transfer.json"),
    ("query_check", "criticism/query_check.json"),
    ("figures", "report/de.png"),
    ("card", "card/README.md"),
    ("hub", "hub/README.md"),
    ("publish", "publish.json"),
)
# Every model's columns, then those of the optional checks (checks.py), in their order.
BASE_COLUMNS = (
    "model",
    "state",
    "class",
    "cells",
    "epochs",
    "cell_cv_pearson_validation",
    "gene_cv_pearson_all",
    # a CITE-seq model's (TOTALVI) posterior predictive check of its proteins
    "protein_cell_cv_pearson_validation",
    "protein_cv_pearson_all",
    "mean_de_roc_auc",
)
COLUMNS = BASE_COLUMNS + tuple(column for check in CHECKS for column in check.columns)


def summary_row(
    name: str, training: dict, cv: dict, de: dict, checks: dict[str, dict] | None = None
) -> dict:
    """One model's headline metrics, from its summary.json, cv.json, de.json and the results
    of its optional checks by name; a metric the model does not have, or a check that did not
    apply or was skipped, is None (n/a)."""
    # a class that cannot sample counts has no posterior predictive metrics (cv[RAN] false)
    sampled = cv.get(RAN, True)
    protein = cv.get(PROTEIN_CV) if sampled else None
    aucs = [g["roc_auc"] for g in de.get("groups", []) if g.get("roc_auc") is not None]
    row = {
        "model": name,
        "state": COMPLETE,
        "class": training["model_class"],
        "cells": sum(training["n_cells"].values()),
        "epochs": training.get("total_epochs", training["epochs"]),
        "cell_cv_pearson_validation": cv[CELL_WISE]["validation"]["pearson"] if sampled else None,
        "gene_cv_pearson_all": cv[GENE_WISE]["all"]["pearson"] if sampled else None,
        "protein_cell_cv_pearson_validation": (
            protein[CELL_WISE]["validation"]["pearson"] if protein else None
        ),
        "protein_cv_pearson_all": protein[GENE_WISE]["all"]["pearson"] if protein else None,
        "mean_de_roc_auc": sum(aucs) / len(aucs) if aucs else None,
    }
    for check in CHECKS:
        row |= check.summary_row((checks or {}).get(check.name))
    return row


def summary_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def models_in_table(path: str | Path) -> list[str] | None:
    """The models an existing models.tsv lists (None when there is none), read without pandas:
    Snakemake reads it while parsing, to say when the table is another config's."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, csv.Error):
        return None
    return sorted(row["model"] for row in rows if row.get("model"))


def stale_table_warning(path: str | Path, models) -> str | None:
    """A warning when models.tsv lists other models than the config: it was made by another
    config, and a report built now would show that config's table."""
    found = models_in_table(path)
    if found is None or found == sorted(models):
        return None
    return (
        f"{path} lists the models {found}, not this config's {sorted(models)}: it was made with "
        "another config. Run snakemake with this config (it remakes the table) before "
        "building a report (--report)."
    )


def model_state(name: str, workdir: str | os.PathLike = ".") -> str:
    """Where a model's run stands, from the files: complete, the step that failed (its log
    there, its output not), or the last step that finished before the run stopped."""
    results, logs = Path(workdir, "results", name), Path(workdir, "logs", name)
    if (results / "publish.json").exists():
        return COMPLETE
    done = [step for step, output in STEPS if (results / output).exists()]
    for step, output in STEPS:
        if (logs / f"{step}.log").exists() and not (results / output).exists():
            return f"failed in {step} (logs/{name}/{step}.log)"
    return f"stopped after {done[-1]}" if done else "not started"


def states_table(names, previous: pd.DataFrame | None, workdir=".") -> pd.DataFrame:
    """models.tsv after a failed run: the metrics of the complete models (from the previous
    table, when it has them) and every other model with its state, metrics n/a."""
    known = {} if previous is None else {r["model"]: r for r in previous.to_dict("records")}
    rows = []
    for name in sorted(names):
        state = model_state(name, workdir)
        row = known.get(name) if state == COMPLETE else None
        rows.append((row or {"model": name}) | {"state": state})
    return summary_table(rows)


def write_states(names, path: str | os.PathLike = "results/models.tsv", workdir=".") -> None:
    """Rewrite models.tsv with every model's state (the workflow's onerror handler): a failed
    model is listed, not left out of a table that still shows the last good run."""
    path = Path(workdir, path)
    previous = None
    if path.exists():
        previous = pd.read_csv(path, sep="\t")
        if "model" not in previous:
            previous = None
    path.parent.mkdir(parents=True, exist_ok=True)
    table = states_table(names, previous, workdir)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.3f")
