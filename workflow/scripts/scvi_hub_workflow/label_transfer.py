"""Label transfer of a model with a classifier: predictions (also from a minified model) and
their metrics.

Definitions in docs/metrics.md ("Label transfer"). The metrics are pure numpy/pandas functions;
``predict_probabilities`` needs scvi-tools and torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .compat import label_mapping, minified_label_probabilities
from .layout import SPLIT_COLUMN, TRUTH_COLUMN, latent_keys

# Bins of the predicted probability (confidence) for the calibration curve and ECE.
N_CALIBRATION_BINS = 10


def predict_probabilities(model) -> pd.DataFrame:
    """Per-cell label probabilities (cells x labels) of a model with a classifier, full or
    minified (scvi-tools' `predict` fails on minified data: compat.minified_label_probabilities).
    """
    if model.minified_data_type is None:
        return model.predict(soft=True)
    qzm_key, _ = latent_keys(type(model).__name__)
    scores = minified_label_probabilities(model, model.adata.obsm[qzm_key])
    labels = label_mapping(model, scores.shape[1])
    return pd.DataFrame(scores, index=model.adata.obs_names, columns=labels)


def evaluated_cells(
    obs: pd.DataFrame, labels_key: str, unlabeled_category: str | None, split: str = "validation"
) -> np.ndarray:
    """Mask of the labelled cells of ``split`` (the classifier never trained on them)."""
    if SPLIT_COLUMN not in obs:
        raise KeyError(f"obs has no {SPLIT_COLUMN!r} column (the model's split)")
    labels = obs[labels_key].astype(str).to_numpy()
    return (obs[SPLIT_COLUMN].astype(str).to_numpy() == split) & (labels != unlabeled_category)


def per_label_table(truth: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 and number of cells of every true label (sklearn's definitions)."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.unique(truth)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    return pd.DataFrame(
        {"label": labels, "n_cells": support, "precision": precision, "recall": recall, "f1": f1}
    )


def calibration_table(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> pd.DataFrame:
    """Cells binned by their predicted probability (equal-width bins of [0, 1]): per bin the
    number of cells, the mean predicted probability and the observed accuracy."""
    edges = np.round(np.linspace(0.0, 1.0, n_bins + 1), 6)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = bins == b
        n = int(inside.sum())
        rows.append(
            {
                "low": edges[b],
                "high": edges[b + 1],
                "n_cells": n,
                "mean_confidence": float(confidence[inside].mean()) if n else float("nan"),
                "accuracy": float(correct[inside].mean()) if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(table: pd.DataFrame) -> float:
    """Cell-weighted mean |accuracy - mean confidence| over the calibration bins."""
    filled = table[table["n_cells"] > 0]
    if filled.empty:
        return float("nan")
    gap = (filled["accuracy"] - filled["mean_confidence"]).abs()
    return float((gap * filled["n_cells"]).sum() / filled["n_cells"].sum())


def label_metrics(
    truth: np.ndarray, probabilities: pd.DataFrame, n_bins: int = N_CALIBRATION_BINS
) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Accuracy, macro-F1 and ECE of the most probable label against ``truth``.

    Returns (summary, per-label table, calibration table, confusion counts: true x predicted).
    """
    from sklearn.metrics import f1_score

    truth = np.asarray(truth, dtype=str)
    if len(truth) == 0:
        raise ValueError("no cells to evaluate label transfer on")
    columns = np.asarray(probabilities.columns, dtype=str)
    values = probabilities.to_numpy()
    predicted = columns[values.argmax(axis=1)]
    confidence = values.max(axis=1)
    correct = predicted == truth
    labels = np.unique(truth)
    calibration = calibration_table(confidence, correct, n_bins)
    summary = {
        "n_cells": len(truth),
        "accuracy": float(correct.mean()),
        # over the true labels: a label never predicted scores F1 0, not absent
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro")),
        "ece": expected_calibration_error(calibration),
        "n_bins": n_bins,
    }
    confusion = pd.crosstab(
        pd.Categorical(truth, categories=labels),
        pd.Categorical(predicted, categories=sorted(set(columns))),
        dropna=False,
    )
    confusion.index.name, confusion.columns.name = "true", "predicted"
    return summary, per_label_table(truth, predicted), calibration, confusion


def evaluate(
    obs: pd.DataFrame,
    probabilities: pd.DataFrame,
    *,
    labels_key: str,
    unlabeled_category: str | None,
) -> dict:
    """Label transfer on the validation split's labelled cells, and (when the data carry a
    planted truth, as the built-in simulation does) on the unlabelled cells against it.

    Returns {"validation": (summary, per_label, calibration, confusion), "unlabelled_truth":
    summary or None}.
    """
    if labels_key not in obs:
        raise KeyError(f"obs has no labels column {labels_key!r} (model.setup.labels_key)")
    mask = evaluated_cells(obs, labels_key, unlabeled_category)
    if not mask.any():
        raise ValueError(
            f"no labelled cells in the validation split (labels {labels_key!r}): "
            "label transfer cannot be measured; lower train.train_size"
        )
    truth = obs[labels_key].astype(str).to_numpy()
    result = {"validation": label_metrics(truth[mask], probabilities[mask]), "unlabelled": None}
    unlabelled = truth == unlabeled_category
    if TRUTH_COLUMN in obs and unlabelled.any():
        planted = obs[TRUTH_COLUMN].astype(str).to_numpy()
        result["unlabelled"] = label_metrics(planted[unlabelled], probabilities[unlabelled])[0]
    return result
