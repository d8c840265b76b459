"""The profile check of a model that learns one expression profile per cell type
(RNAStereoscope): are the profiles those of held-out cells of each type?

Definitions in docs/metrics.md ("Cell-type profiles"). The scores are pure numpy functions of
the model's profiles and the observed counts; ``profile_check`` reads a saved model.
"""

from __future__ import annotations

import numpy as np

from .layout import RAN, SKIPPED_REASON

# Profiles are compared as log1p of counts per 10,000, as the DE benchmark normalises.
SCALE = 1e4


def model_profiles(w: np.ndarray, px_o: np.ndarray) -> np.ndarray:
    """Each label's expected share of a cell's counts per gene (labels x genes, rows sum to 1).

    RNAStereoscope's counts of a cell of label l are negative binomial with total count
    library * softplus(W[g, l]) and logits px_o[g]: mean library * softplus(W[g, l]) *
    exp(px_o[g]).
    """
    mean = np.logaddexp(0.0, w) * np.exp(px_o)[:, None]  # softplus, genes x labels
    return (mean / mean.sum(axis=0, keepdims=True)).T


def observed_profiles(counts, labels: np.ndarray, n_labels: int) -> np.ndarray:
    """Each label's pseudobulk share of counts per gene (labels x genes); NaN rows for labels
    without cells."""
    profiles = np.full((n_labels, counts.shape[1]), np.nan)
    for label in range(n_labels):
        rows = counts[labels == label]
        if rows.shape[0]:
            total = np.asarray(rows.sum(axis=0), dtype=float).ravel()
            profiles[label] = total / total.sum() if total.sum() > 0 else np.nan
    return profiles


def profile_scores(model: np.ndarray, observed: np.ndarray) -> dict:
    """How well each label's model profile matches the held-out pseudobulk of that label.

    `pearson`: correlation over genes of log1p(share x 1e4), per label; `matched`: whether the
    label's own model profile is the best-correlated of all labels' (a model with shuffled
    labels matches at chance, 1 / number of labels).
    """
    present = ~np.isnan(observed).any(axis=1)
    log_model = np.log1p(model * SCALE)
    log_observed = np.log1p(observed[present] * SCALE)
    correlation = np.corrcoef(np.vstack([log_observed, log_model]))[
        : present.sum(), present.sum() :
    ]
    own = np.flatnonzero(present)
    pearson = correlation[np.arange(len(own)), own]
    matched = correlation.argmax(axis=1) == own
    return {
        "per_label": [
            {"label_index": int(i), "pearson": float(p), "matched": bool(m)}
            for i, p, m in zip(own, pearson, matched, strict=True)
        ],
        "mean_pearson": float(pearson.mean()),
        "match_accuracy": float(matched.mean()),
        "chance": 1.0 / model.shape[0],
    }


def heldout_log_likelihood(counts, labels: np.ndarray, w: np.ndarray, px_o: np.ndarray) -> float:
    """Mean negative binomial log-likelihood per cell of the counts under the model, given
    each cell's label."""
    from scipy.special import gammaln

    x = np.asarray(counts.todense() if hasattr(counts, "todense") else counts, dtype=float)
    library = x.sum(axis=1, keepdims=True)
    total = library * np.logaddexp(0.0, w[:, labels]).T  # cells x genes
    # NB(total_count r, logits o): log p(x) = lgamma(x + r) - lgamma(r) - lgamma(x + 1)
    #   + r * log(1 - p) + x * log(p), with log p = -softplus(-o), log(1 - p) = -softplus(o)
    log_p = -np.logaddexp(0.0, -px_o)
    log_1mp = -np.logaddexp(0.0, px_o)
    terms = gammaln(x + total) - gammaln(total) - gammaln(x + 1) + total * log_1mp + x * log_p
    return float(terms.sum(axis=1).mean())


def profile_check(model_dir, labels_key: str, layer: str | None, seed: int) -> dict:
    """The check on a saved RNAStereoscope model: its profiles against the pseudobulk of its
    validation cells (never trained on), and the held-out likelihood with the true labels and
    with labels shuffled among those cells (the baseline)."""
    from .model_io import load_model, validation_cells

    model = load_model(model_dir)
    w, px_o = model.module.get_params()
    cells = validation_cells(model, labels_key, layer)
    if not cells.n_cells:
        return {RAN: False, SKIPPED_REASON: "the model has no validation cells (train_size 1)"}
    codes, counts = cells.codes, cells.counts
    scores = profile_scores(
        model_profiles(w, px_o), observed_profiles(counts, codes, len(cells.labels))
    )
    for row in scores["per_label"]:
        label = row.pop("label_index")
        row |= {"label": cells.labels[label], "n_cells": int((codes == label).sum())}
    shuffled = np.random.default_rng(seed).permutation(codes)
    return {
        RAN: True,
        "labels_key": labels_key,
        "n_cells": cells.n_cells,
        **scores,
        "log_likelihood": heldout_log_likelihood(counts, codes, w, px_o),
        "log_likelihood_shuffled_labels": heldout_log_likelihood(counts, shuffled, w, px_o),
    }
