"""Label transfer of a model with a classifier: predictions (also from a minified model) and
their metrics.

Definitions in docs/metrics.md ("Label transfer"). The metrics are pure numpy/pandas functions;
``predict_probabilities`` needs scvi-tools and torch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .compat import label_mapping, minified_label_probabilities
from .layout import SPLIT_COLUMN, SPLIT_LABELS, TRUTH_COLUMN, latent_keys

# Bins of the predicted probability (confidence) for the calibration curve and ECE.
N_CALIBRATION_BINS = 10
# Intervals: 95%; Wilson's for proportions (accuracy, recall, precision), a seeded bootstrap of
# the validation cells for macro-F1 (no closed form).
INTERVAL_LEVEL = 0.95
Z_95 = 1.959963984540054
N_BOOTSTRAP = 1000


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


def wilson_interval(successes, trials, z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion (95% by default); NaN where trials is 0.

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0-3 cells.
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        # exact at the ends (rounding would leave 1 - 1e-16 above a recall of 1)
        low = np.where(k == 0, 0.0, np.clip(centre - half, 0, 1))
        high = np.where(k == n, 1.0, np.clip(centre + half, 0, 1))
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def per_label_table(truth: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """Per true label: its cells, the cells predicted as it and the correct ones; precision,
    recall and F1 (sklearn's definitions); Wilson intervals of precision and recall."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = np.unique(truth)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    n_predicted = np.array([int((predicted == label).sum()) for label in labels])
    n_correct = np.array([int(((predicted == label) & (truth == label)).sum()) for label in labels])
    precision_low, precision_high = wilson_interval(n_correct, n_predicted)
    recall_low, recall_high = wilson_interval(n_correct, support)
    return pd.DataFrame(
        {
            "label": labels,
            "n_cells": support,
            "n_predicted": n_predicted,
            "n_correct": n_correct,
            "precision": precision,
            "precision_low": precision_low,
            "precision_high": precision_high,
            "recall": recall,
            "recall_low": recall_low,
            "recall_high": recall_high,
            "f1": f1,
        }
    )


def macro_f1_interval(
    confusion: pd.DataFrame, n_bootstrap: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of macro-F1 over the cells of ``confusion`` (true labels x
    predicted labels, counts).

    Resampling cells with replacement is a multinomial draw of the confusion counts, so the
    cost does not grow with the cells. A true label absent from a resample is left out of that
    resample's mean (it has no cells to score).
    """
    counts = confusion.to_numpy(dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts.ravel() / n, size=n_bootstrap)
    draws = draws.reshape(n_bootstrap, *counts.shape)
    support, predicted = draws.sum(axis=2), draws.sum(axis=1)
    # each true label's own predicted column (absent when the classifier never outputs it)
    columns = [str(c) for c in confusion.columns]
    true_positive = np.zeros(support.shape)
    n_predicted = np.zeros(support.shape)
    for row, label in enumerate(map(str, confusion.index)):
        if label in columns:
            column = columns.index(label)
            true_positive[:, row] = draws[:, row, column]
            n_predicted[:, row] = predicted[:, column]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * true_positive / (support + n_predicted))
    present = support > 0
    macro = (f1 * present).sum(axis=1) / present.sum(axis=1)
    tail = (1 - INTERVAL_LEVEL) / 2 * 100
    low, high = np.percentile(macro, [tail, 100 - tail])
    return float(low), float(high)


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
    truth: np.ndarray,
    probabilities: pd.DataFrame,
    n_bins: int = N_CALIBRATION_BINS,
    seed: int = 0,
) -> tuple[dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Accuracy, macro-F1 and ECE of the most probable label against ``truth``, with the
    counts behind them and 95% intervals (Wilson for accuracy, bootstrap for macro-F1).

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
    confusion = pd.crosstab(
        pd.Categorical(truth, categories=labels),
        pd.Categorical(predicted, categories=sorted(set(columns))),
        dropna=False,
    )
    confusion.index.name, confusion.columns.name = "true", "predicted"
    accuracy_low, accuracy_high = wilson_interval(int(correct.sum()), len(truth))
    summary = {
        "n_cells": len(truth),
        "n_correct": int(correct.sum()),
        "n_labels": len(labels),
        "accuracy": float(correct.mean()),
        "accuracy_interval": [float(accuracy_low), float(accuracy_high)],
        # over the true labels: a label never predicted scores F1 0, not absent
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro")),
        "macro_f1_interval": list(macro_f1_interval(confusion, seed=seed)),
        "interval_level": INTERVAL_LEVEL,
        "ece": expected_calibration_error(calibration),
        "n_bins": n_bins,
    }
    return summary, per_label_table(truth, predicted), calibration, confusion


def not_scored(
    obs: pd.DataFrame, labels_key: str, unlabeled_category: str | None, classes, scored
) -> list[dict]:
    """The classifier's classes with no scored cell, and their labelled cells per split (a
    class with all its cells in the training split cannot be scored on the validation split)."""
    labels = obs[labels_key].astype(str).to_numpy()
    splits = obs[SPLIT_COLUMN].astype(str).to_numpy()
    rows = []
    for label in sorted(set(map(str, classes)) - set(map(str, scored)) - {str(unlabeled_category)}):
        mine = labels == label
        rows.append(
            {"label": label, "n_cells_labelled": int(mine.sum())}
            | {f"n_cells_{s}": int((mine & (splits == s)).sum()) for s in SPLIT_LABELS}
        )
    return rows


def evaluate(
    obs: pd.DataFrame,
    probabilities: pd.DataFrame,
    *,
    labels_key: str,
    unlabeled_category: str | None,
    seed: int = 0,
) -> dict:
    """Label transfer on the validation split's labelled cells, and (when the data carry a
    planted truth, as the built-in simulation does) on the unlabelled cells against it.

    Returns {"validation": (summary, per_label, calibration, confusion), "unlabelled":
    summary or None, "not_scored": the classes without a validation cell (``not_scored``)}.
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
    result = {
        "validation": label_metrics(truth[mask], probabilities[mask], seed=seed),
        "unlabelled": None,
        "not_scored": not_scored(
            obs, labels_key, unlabeled_category, probabilities.columns, truth[mask]
        ),
    }
    unlabelled = truth == unlabeled_category
    if TRUTH_COLUMN in obs and unlabelled.any():
        planted = obs[TRUTH_COLUMN].astype(str).to_numpy()
        result["unlabelled"] = label_metrics(
            planted[unlabelled], probabilities[unlabelled], seed=seed
        )[0]
    return result


def summary_record(result: dict, labels_key: str) -> dict:
    """label_transfer.json: the validation summary (counts, intervals), the classes not
    scored, the unlabelled cells against a planted truth, and the per-label rows."""
    summary, per_label, _, _ = result["validation"]
    return (
        {"cells": "validation", "labels_key": labels_key}
        | summary
        | {
            "not_scored": result["not_scored"],
            "unlabelled_vs_truth": result["unlabelled"],
            "per_label": per_label.to_dict("records"),
        }
    )
