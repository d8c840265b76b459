"""Label-transfer metrics: a perfect predictor scores 1, a shuffled one scores near chance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scvi_hub_workflow.label_transfer import (
    calibration_table,
    evaluate,
    expected_calibration_error,
    label_metrics,
    macro_f1_interval,
    summary_record,
    wilson_interval,
)

LABELS = np.array(["B cell", "T cell", "NK cell", "monocyte"])


def one_hot(labels: np.ndarray, confidence: float = 1.0) -> pd.DataFrame:
    """Probabilities that put ``confidence`` on ``labels`` and spread the rest evenly."""
    rest = (1 - confidence) / (len(LABELS) - 1)
    values = np.where(labels[:, None] == LABELS[None, :], confidence, rest)
    return pd.DataFrame(values, columns=LABELS)


def truth(n: int = 4000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(LABELS, size=n, p=[0.4, 0.3, 0.2, 0.1])


def test_a_predictor_that_is_always_right_scores_one():
    labels = truth()
    summary, per_label, calibration, confusion = label_metrics(labels, one_hot(labels))
    assert summary["accuracy"] == 1.0 and summary["macro_f1"] == 1.0
    assert summary["ece"] == pytest.approx(0.0)  # confident and right: perfectly calibrated
    assert (per_label[["precision", "recall", "f1"]] == 1.0).all().all()
    assert per_label.set_index("label")["n_cells"].sum() == len(labels)
    assert np.array_equal(np.diag(confusion.to_numpy()), confusion.sum(axis=1).to_numpy())
    assert calibration["n_cells"].iloc[-1] == len(labels)  # every cell in the top bin


def test_a_shuffled_predictor_scores_near_chance():
    labels = truth()
    shuffled = np.random.default_rng(1).permutation(labels)
    summary, per_label, _, _ = label_metrics(labels, one_hot(shuffled, confidence=0.9))
    # independent predictions with the same label frequencies: accuracy = sum of p²
    chance = sum(np.mean(labels == label) ** 2 for label in LABELS)
    assert summary["accuracy"] == pytest.approx(chance, abs=0.03)
    assert summary["macro_f1"] == pytest.approx(0.25, abs=0.04)  # per label F1 = its frequency
    # 90% confident and right about 30% of the time: badly calibrated
    assert summary["ece"] == pytest.approx(0.9 - summary["accuracy"], abs=1e-9)


def test_a_label_never_predicted_counts_as_f1_zero():
    labels = np.array(["a"] * 5 + ["b"] * 5)
    probabilities = pd.DataFrame({"a": np.ones(10), "b": np.zeros(10)})
    summary, per_label, _, _ = label_metrics(labels, probabilities)
    assert summary["accuracy"] == 0.5
    assert per_label.set_index("label").loc["b", "f1"] == 0.0
    assert summary["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_calibration_bins_and_ece():
    confidence = np.array([0.05, 0.15, 0.95, 0.95, 1.0])
    correct = np.array([False, True, True, False, True])
    table = calibration_table(confidence, correct, n_bins=10)
    assert list(table["n_cells"]) == [1, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    top = table.iloc[-1]
    assert top["mean_confidence"] == pytest.approx((0.95 + 0.95 + 1.0) / 3)
    assert top["accuracy"] == pytest.approx(2 / 3)
    expected = (1 * 0.05 + 1 * 0.85 + 3 * abs(2 / 3 - 2.9 / 3)) / 5
    assert expected_calibration_error(table) == pytest.approx(expected)


def test_evaluate_uses_the_labelled_validation_cells_and_the_planted_truth():
    obs = pd.DataFrame(
        {
            "cell_type": ["a", "a", "b", "unknown", "unknown", "b"],
            "true_cell_type": ["a", "a", "b", "b", "a", "b"],
            "split": ["validation", "train", "validation", "validation", "train", "train"],
        }
    )
    predicted = np.array(["a", "b", "a", "b", "b", "b"])
    probabilities = pd.DataFrame({"a": predicted == "a", "b": predicted == "b"}, dtype=float)
    result = evaluate(obs, probabilities, labels_key="cell_type", unlabeled_category="unknown")
    summary = result["validation"][0]
    assert summary["n_cells"] == 2 and summary["accuracy"] == 0.5  # the two labelled ones
    assert result["unlabelled"]["n_cells"] == 2 and result["unlabelled"]["accuracy"] == 0.5


def test_no_labelled_validation_cells_is_an_error_naming_the_column():
    obs = pd.DataFrame({"cell_type": ["a", "b"], "split": ["train", "train"]})
    probabilities = pd.DataFrame({"a": [1.0, 0.0], "b": [0.0, 1.0]})
    with pytest.raises(ValueError, match="no labelled cells in the validation split.*cell_type"):
        evaluate(obs, probabilities, labels_key="cell_type", unlabeled_category="unknown")
    with pytest.raises(KeyError, match="labels_key"):
        evaluate(obs, probabilities, labels_key="celltype", unlabeled_category="unknown")


def test_wilson_intervals_equal_statsmodels_and_stay_honest_at_few_cells():
    from statsmodels.stats.proportion import proportion_confint

    for k, n in [(0, 3), (3, 3), (1, 2), (91, 100), (0, 1)]:
        expected = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert wilson_interval(k, n) == pytest.approx(expected, abs=1e-9)
    low, high = wilson_interval(np.array([0, 3]), np.array([0, 3]))
    assert np.isnan(low[0]) and np.isnan(high[0]) and high[1] == 1.0 and low[1] < 0.5


def test_counts_and_intervals_behind_every_number():
    rng = np.random.default_rng(0)
    labels = truth(n=400)
    # right 80% of the time; the rarest label (monocyte, ~40 cells) only 3 times in a few
    predicted = np.where(rng.random(len(labels)) < 0.8, labels, rng.choice(LABELS, len(labels)))
    summary, per_label, _, confusion = label_metrics(labels, one_hot(predicted, 0.9))
    assert summary["n_correct"] == int((predicted == labels).sum())
    low, high = summary["accuracy_interval"]
    assert low < summary["accuracy"] < high and high - low < 0.1
    low, high = summary["macro_f1_interval"]
    assert low < summary["macro_f1"] < high and high - low < 0.15
    rows = per_label.set_index("label")
    for label in LABELS:
        assert rows.loc[label, "n_predicted"] == (predicted == label).sum()
        assert rows.loc[label, "n_correct"] == ((predicted == label) & (labels == label)).sum()
        assert rows.loc[label, "recall_low"] <= rows.loc[label, "recall"]
        assert rows.loc[label, "recall"] <= rows.loc[label, "recall_high"]
    # a few cells: a wide interval; the same error rate on 100x the cells: a narrow one
    few = macro_f1_interval(confusion)
    many = macro_f1_interval(confusion * 10)
    assert few[1] - few[0] > 2 * (many[1] - many[0])
    perfect = pd.DataFrame(np.diag([5, 3, 1]), index=list("abc"), columns=list("abc"))
    assert macro_f1_interval(perfect) == (1.0, 1.0)


def test_classes_without_validation_cells_are_named_with_their_counts():
    obs = pd.DataFrame(
        {
            "cell_type": ["a", "a", "b", "rare", "rare", "unknown"],
            "split": ["validation", "train", "validation", "train", "train", "validation"],
        }
    )
    probabilities = pd.DataFrame(
        np.eye(3)[[0, 0, 1, 2, 2, 0]], columns=["a", "b", "rare"], dtype=float
    )
    result = evaluate(obs, probabilities, labels_key="cell_type", unlabeled_category="unknown")
    assert result["not_scored"] == [
        {
            "label": "rare",
            "n_cells_labelled": 2,
            "n_cells_train": 2,
            "n_cells_validation": 0,
            "n_cells_test": 0,
        }
    ]
    record = summary_record(result, "cell_type")
    assert record["not_scored"] == result["not_scored"] and record["n_labels"] == 2
    assert {"n_cells", "n_correct", "accuracy_interval", "macro_f1_interval"} <= set(record)
    assert {"n_predicted", "n_correct", "recall_low"} <= set(record["per_label"][0])
