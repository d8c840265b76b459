"""The cross-model summary table of the report: every model of the config, headline metrics."""

from __future__ import annotations

import pandas as pd

COLUMNS = (
    "model",
    "class",
    "cells",
    "epochs",
    "cell_cv_pearson_validation",
    "gene_cv_pearson_all",
    "mean_de_roc_auc",
    "label_accuracy_validation",
    "label_macro_f1_validation",
    "label_ece_validation",
    "integration_total",
    "integration_total_pca",
    "query_knn_overlap",
    "query_label_accuracy",
)


def summary_row(
    name: str,
    training: dict,
    cv: dict,
    de: dict,
    label_transfer: dict | None = None,
    integration: dict | None = None,
    query_check: dict | None = None,
) -> dict:
    """One model's headline metrics, from its summary.json, cv.json, de.json, (SCANVI)
    label_transfer.json and (with a batch key) integration.json and query_check.json; a metric
    the model does not have, or a check that was skipped, is None (n/a)."""
    aucs = [g["roc_auc"] for g in de["groups"] if g.get("roc_auc") is not None]
    labels = label_transfer or {}
    query = query_check if query_check and query_check.get("ran") else {}
    # SCANVI: its classifier on the mapped batch; otherwise kNN transfer from the reference
    query_labels = query.get("classifier") or query.get("label_agreement") or {}
    return {
        "model": name,
        "class": training["model_class"],
        "cells": sum(training["n_cells"].values()),
        "epochs": training.get("total_epochs", training["epochs"]),
        "cell_cv_pearson_validation": cv["cell_wise"]["validation"]["pearson"],
        "gene_cv_pearson_all": cv["gene_wise"]["all"]["pearson"],
        "mean_de_roc_auc": sum(aucs) / len(aucs) if aucs else None,
        "label_accuracy_validation": labels.get("accuracy"),
        "label_macro_f1_validation": labels.get("macro_f1"),
        "label_ece_validation": labels.get("ece"),
        # scib-metrics' aggregate of the latent space, and of the PCA baseline on the same cells
        "integration_total": integration["total"]["total"] if integration else None,
        "integration_total_pca": integration["total_pca"]["total"] if integration else None,
        "query_knn_overlap": query.get("knn_overlap"),
        "query_label_accuracy": query_labels.get("accuracy"),
    }


def summary_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))
