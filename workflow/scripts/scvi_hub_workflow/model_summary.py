"""The cross-model summary table of the report: every model of the config, headline metrics."""

from __future__ import annotations

import pandas as pd

from .checks import CHECKS
from .layout import CELL_WISE, GENE_WISE

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
    aucs = [g["roc_auc"] for g in de["groups"] if g.get("roc_auc") is not None]
    row = {
        "model": name,
        "class": training["model_class"],
        "cells": sum(training["n_cells"].values()),
        "epochs": training.get("total_epochs", training["epochs"]),
        "cell_cv_pearson_validation": cv[CELL_WISE]["validation"]["pearson"],
        "gene_cv_pearson_all": cv[GENE_WISE]["all"]["pearson"],
        "mean_de_roc_auc": sum(aucs) / len(aucs) if aucs else None,
    }
    for check in CHECKS:
        row |= check.summary_row((checks or {}).get(check.name))
    return row


def summary_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))
