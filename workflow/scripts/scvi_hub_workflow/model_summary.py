"""The cross-model summary table of the report: every model of the config, headline metrics."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from .checks import CHECKS
from .layout import CELL_WISE, GENE_WISE, RAN

# Every model's columns, then those of the optional checks (checks.py), in their order.
BASE_COLUMNS = (
    "model",
    "class",
    "cells",
    "epochs",
    "cell_cv_pearson_validation",
    "gene_cv_pearson_all",
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
    aucs = [g["roc_auc"] for g in de.get("groups", []) if g.get("roc_auc") is not None]
    row = {
        "model": name,
        "class": training["model_class"],
        "cells": sum(training["n_cells"].values()),
        "epochs": training.get("total_epochs", training["epochs"]),
        "cell_cv_pearson_validation": cv[CELL_WISE]["validation"]["pearson"] if sampled else None,
        "gene_cv_pearson_all": cv[GENE_WISE]["all"]["pearson"] if sampled else None,
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
