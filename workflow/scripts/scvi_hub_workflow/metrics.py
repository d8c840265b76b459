"""The one place the criticism metrics are defined (see docs/metrics.md). Pure numpy functions.

Deliberate differences from ``scvi.criticism`` (which inspired these):

* R² is ``r2_score(y_true=observed, y_pred=model)``; scvi-tools passes them the other way round.
* A CV that is undefined in one posterior sample (a cell or gene with no counts) counts as 0 in
  that sample before averaging over samples; scvi-tools skips it (NaN-mean) for the model but
  zeroes it for the observed data.
* Marker recovery ranks up-regulated truth by the signed score and any-direction truth by |score|;
  "up" is the direction of the observed Wilcoxon score (not of the fold change), so samples equal
  to the observed data score 1 exactly; there is no silent fallback to "top-100 genes" when the
  truth set is empty: the AUC is NaN.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from .layout import CV_METRICS, DE_COLUMNS  # noqa: F401  (re-exported for the tables)

NORMALISATION = "normalize_total(1e4) + log1p"
TARGET_SUM = 1e4


# --- coefficient of variation -------------------------------------------------------------


def cv_from_moments(total: np.ndarray, total_of_squares: np.ndarray, n: int) -> np.ndarray:
    """Coefficient of variation std/mean (population std) from sums of x and x² over n values.

    Undefined CVs (mean 0, or n 0) are 0, like scvi.criticism does for observed data.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.asarray(total, dtype=np.float64) / n
        variance = np.maximum(np.asarray(total_of_squares, dtype=np.float64) / n - mean**2, 0.0)
        cv = np.sqrt(variance) / mean
    return np.nan_to_num(cv, nan=0.0, posinf=0.0, neginf=0.0)


def compare_cv(model_cv: np.ndarray, observed_cv: np.ndarray) -> dict[str, float]:
    """How well the model's CVs match the observed ones: MAE, Pearson, Spearman and R².

    R² scores the model as a prediction of the observation: r2(y_true=observed, y_pred=model).
    Empty inputs give NaN everywhere; a constant input gives NaN correlations.
    """
    model_cv = np.asarray(model_cv, dtype=np.float64)
    observed_cv = np.asarray(observed_cv, dtype=np.float64)
    if model_cv.size == 0:
        return dict.fromkeys(CV_METRICS, float("nan"))
    return {
        "mae": float(np.mean(np.abs(model_cv - observed_cv))),
        "pearson": pearson(model_cv, observed_cv),
        "spearman": spearman(model_cv, observed_cv),
        "r2": r2(y_true=observed_cv, y_pred=model_cv),
    }


def replicate_ceiling(sample_cvs: np.ndarray) -> dict[str, float]:
    """The CV metrics a model that is exactly right reaches with ``n`` samples: what
    ``compare_cv`` gives, in expectation, when the data are drawn from the model itself
    (docs/metrics.md, "The ceiling").

    ``sample_cvs`` is (samples, cells or genes): the CVs of each posterior sample. Each sample
    in turn stands in for the observed data and the mean of the other ``n - 1`` samples for
    the model (``leave_one_out_scores``); those scores are then corrected from a model of
    ``n - 1`` samples to one of ``n``, as the model is scored (``to_n_samples``). NaN with
    fewer than two samples.
    """
    sample_cvs = np.asarray(sample_cvs, dtype=np.float64)
    n = sample_cvs.shape[0]
    if n < 2 or sample_cvs.shape[1] == 0:
        return dict.fromkeys(CV_METRICS, float("nan"))
    return to_n_samples(leave_one_out_scores(sample_cvs), sample_cvs)


def leave_one_out_scores(sample_cvs: np.ndarray) -> dict[str, float]:
    """``compare_cv`` of the mean of the other ``n - 1`` samples against each sample, averaged
    over the samples: the ceiling of a model scored with ``n - 1`` samples."""
    sample_cvs = np.asarray(sample_cvs, dtype=np.float64)
    n = sample_cvs.shape[0]
    total = sample_cvs.sum(axis=0)
    rows = [compare_cv((total - sample_cvs[k]) / (n - 1), sample_cvs[k]) for k in range(n)]
    return {key: _mean([row[key] for row in rows]) for key in CV_METRICS}


def to_n_samples(scores: dict[str, float], sample_cvs: np.ndarray) -> dict[str, float]:
    """Leave-one-out scores (a model averaging ``n - 1`` samples) as a model averaging all
    ``n`` scores them. Per cell or gene i, a sample's CV is mu_i + e (variance s_i^2, the same
    distribution as the data's CV for a model that is exactly right), so with a model of m
    samples, model - data has mean 0 and variance s_i^2 (1 + 1/m):

    * R²: the expected squared error scales by (1 + 1/n) / (1 + 1/(n-1)) = 1 - 1/n², exactly;
      the data's variance does not change.
    * MAE: by sqrt(1 - 1/n²), exact when the error's shape does not depend on m (normal).
    * Pearson: the covariance with the data is var(mu) whatever m; the model side's variance
      across cells is var(mu) + S/m (S: the mean of s_i^2), so the correlation grows by
      sqrt((var(mu) + S/(n-1)) / (var(mu) + S/n)) = sqrt(1 + S / (n (n-1) V)), V = var(mu)
      + S/n the variance of the n-sample means, S from the samples' spread per cell or gene.
    * Spearman: as Pearson, on each sample's normal scores, through the normal copula.
    """
    sample_cvs = np.asarray(sample_cvs, dtype=np.float64)
    n = sample_cvs.shape[0]
    shrink = 1.0 - 1.0 / n**2
    return {
        "mae": scores["mae"] * float(np.sqrt(shrink)),
        "pearson": _correlation_to_n(scores["pearson"], sample_cvs),
        "spearman": _rank_correlation_to_n(scores["spearman"], sample_cvs),
        "r2": 1.0 - (1.0 - scores["r2"]) * shrink,
    }


def _correlation_to_n(value: float, sample_values: np.ndarray) -> float:
    n = sample_values.shape[0]
    spread = float(np.mean(np.var(sample_values, axis=0, ddof=1)))  # S
    between = float(np.var(sample_values.mean(axis=0)))  # V
    if not between > 0:
        return float("nan")
    return float(np.clip(value * np.sqrt(1.0 + spread / (n * (n - 1) * between)), -1.0, 1.0))


def _rank_correlation_to_n(value: float, sample_cvs: np.ndarray) -> float:
    # Spearman as the Pearson of normal scores (normal copula: r = 2 sin(pi r_s / 6)), whose
    # noise the samples' normal scores give
    ranks = stats.rankdata(sample_cvs, axis=1)
    scores = stats.norm.ppf(ranks / (sample_cvs.shape[1] + 1))
    pearson = _correlation_to_n(2 * np.sin(np.pi * value / 6), scores)
    return float(6 / np.pi * np.arcsin(pearson / 2))


def r2(*, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination of ``y_pred`` as a prediction of ``y_true``.

    NaN when ``y_true`` is constant (sklearn would report 0 or 1 there, hiding it).
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    residual = np.sum((y_true - np.asarray(y_pred, dtype=np.float64)) ** 2)
    total = np.sum((y_true - y_true.mean()) ** 2)
    return float(1.0 - residual / total) if total > 0 else float("nan")


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or has fewer than 2 values."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.pearsonr(a, b)[0])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; NaN when either side is constant or has fewer than 2 values."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b)[0])


# --- differential expression ---------------------------------------------------------------


def log_normalise(counts: np.ndarray, library_size: np.ndarray) -> np.ndarray:
    """scanpy's normalize_total(target_sum=1e4) then log1p, in float32 like scanpy.

    ``counts`` is cells x genes (dense) or the non-zero values of the cells whose library sizes
    are given (same length). Cells without counts stay 0.
    """
    divisor = np.asarray(library_size, dtype=np.float32) / np.float32(TARGET_SUM)
    divisor[divisor == 0] = 1
    if np.ndim(counts) == 2:
        divisor = divisor[:, None]
    return np.log1p(np.asarray(counts, dtype=np.float32) / divisor)


def log2_fold_change(mean_log_group: np.ndarray, mean_log_rest: np.ndarray) -> np.ndarray:
    """scanpy's log fold change from mean log1p expression of the group and of the rest."""
    return np.log2((np.expm1(mean_log_group) + 1e-9) / (np.expm1(mean_log_rest) + 1e-9))


def top_gene_f1(observed_scores: np.ndarray, sample_scores: np.ndarray, top_n: int) -> float:
    """F1 of the sample's top-N up-regulated genes against the observed top-N.

    Both sets have N genes, so F1 = |intersection| / N. Ties break by gene order.
    """
    n = min(top_n, len(observed_scores))
    top_observed = np.argsort(-np.asarray(observed_scores), kind="stable")[:n]
    top_sample = np.argsort(-np.asarray(sample_scores), kind="stable")[:n]
    return float(len(np.intersect1d(top_observed, top_sample)) / n) if n else float("nan")


def lfc_agreement(observed_lfc: np.ndarray, sample_lfc: np.ndarray) -> dict[str, float]:
    """MAE, Pearson and Spearman between observed and sampled log2 fold changes (all genes)."""
    return {
        "lfc_mae": float(np.mean(np.abs(np.asarray(observed_lfc) - np.asarray(sample_lfc)))),
        "lfc_pearson": pearson(observed_lfc, sample_lfc),
        "lfc_spearman": spearman(observed_lfc, sample_lfc),
    }


def auc_pair(truth: np.ndarray, predictor: np.ndarray) -> tuple[float, float]:
    """(ROC-AUC, PR-AUC as average precision); NaN for both when truth is all one class.

    The same values as sklearn's ``roc_auc_score`` and ``average_precision_score`` (ties
    included), computed directly: sklearn's input validation costs more than the sums here,
    which run for every group and sample.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return float("nan"), float("nan")
    return roc_auc(truth, predictor), average_precision(truth, predictor)


def roc_auc(truth: np.ndarray, predictor: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic: the chance that a random true
    gene outranks a random other one, ties counting half."""
    n_true = int(truth.sum())
    n_other = truth.size - n_true
    ranks = stats.rankdata(predictor)
    return float((ranks[truth].sum() - n_true * (n_true + 1) / 2) / (n_true * n_other))


def average_precision(truth: np.ndarray, predictor: np.ndarray) -> float:
    """Sum over score thresholds (high to low) of precision times the recall gained there."""
    order = np.argsort(-np.asarray(predictor, dtype=np.float64), kind="stable")
    scores = np.asarray(predictor)[order]
    # one threshold per distinct score: the last position of each run of ties
    last = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    true_positives = np.cumsum(truth[order])[last]
    precision = true_positives / (last + 1)
    gained = np.diff(true_positives, prepend=0)
    return float(np.sum(gained * precision) / true_positives[-1])


def marker_truth(
    observed_pvals_adj: np.ndarray, observed_scores: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Observed markers as (up: adjusted p < alpha and Wilcoxon score > 0, either direction:
    adjusted p < alpha).

    "Up" follows the test's own direction of effect, the sign of its score, not the fold change:
    the fold change compares means of expm1 values and can point the other way than the ranks,
    and then even the observed data could not rank that marker on top by score.
    """
    significant = np.asarray(observed_pvals_adj) < alpha
    return significant & (np.asarray(observed_scores) > 0), significant


def marker_recovery(
    truth_up: np.ndarray, truth_any: np.ndarray, sample_scores: np.ndarray
) -> dict[str, float]:
    """How well the sample's Wilcoxon scores recover the observed markers.

    Up-regulated markers are ranked by the signed score, markers of either direction by |score|.
    """
    roc, pr = auc_pair(truth_up, sample_scores)
    roc_two, pr_two = auc_pair(truth_any, np.abs(sample_scores))
    return {"roc_auc": roc, "pr_auc": pr, "roc_auc_two_sided": roc_two, "pr_auc_two_sided": pr_two}


def group_de_metrics(
    observed: dict[str, np.ndarray],
    samples: list[dict[str, np.ndarray]],
    *,
    alpha: float,
    top_n: int,
) -> dict[str, float]:
    """All DE metrics of one group, averaged over posterior samples.

    ``observed`` and each sample hold the group's per-gene ``scores`` and ``logfoldchanges``;
    ``observed`` also ``pvals_adj``. The counts of true markers say why an AUC may be NaN.
    """
    truth_up, truth_any = marker_truth(observed["pvals_adj"], observed["scores"], alpha)
    per_sample = []
    for sample in samples:
        row = {"gene_f1": top_gene_f1(observed["scores"], sample["scores"], top_n)}
        row |= lfc_agreement(observed["logfoldchanges"], sample["logfoldchanges"])
        row |= marker_recovery(truth_up, truth_any, sample["scores"])
        per_sample.append(row)
    averaged = {key: _mean([row[key] for row in per_sample]) for key in per_sample[0]}
    averaged["n_true_up"] = int(truth_up.sum())
    averaged["n_true_two_sided"] = int(truth_any.sum())
    return averaged


def _mean(values: list[float]) -> float:
    # A metric that is NaN in every sample stays NaN; otherwise average the defined ones.
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
