"""The deconvolution check of a spatial reference (CondSCVI for DestVI, RNAStereoscope for
Stereoscope): pseudo-spots of held-out cells with known cell-type proportions, deconvolved by
the spatial model started from the published one, as a user starts it.

Definitions in docs/metrics.md ("Deconvolution"). ``pseudo_spots`` and ``proportion_scores``
are pure numpy; ``deconvolution_check`` trains the spatial model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .layout import RAN, SKIPPED_REASON

# Cells summed into one pseudo-spot, drawn uniformly in this range (Visium spots hold a few to
# about ten cells).
CELLS_PER_SPOT = (2, 10)


def pseudo_spots(
    counts, labels: np.ndarray, n_labels: int, n_spots: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(spot counts, true proportions): each spot sums the counts of 2 to 10 distinct random
    cells; its proportions are the fractions of those cells of each label."""
    counts = sp.csr_matrix(counts)
    n_cells = counts.shape[0]
    spots = np.zeros((n_spots, counts.shape[1]), dtype=np.float32)
    truth = np.zeros((n_spots, n_labels))
    low, high = CELLS_PER_SPOT
    for spot in range(n_spots):
        size = min(int(rng.integers(low, high + 1)), n_cells)
        members = rng.choice(n_cells, size=size, replace=False)
        spots[spot] = np.asarray(counts[members].sum(axis=0)).ravel()
        truth[spot] = np.bincount(labels[members], minlength=n_labels) / size
    return spots, truth


def proportion_scores(truth: np.ndarray, estimated: np.ndarray) -> dict:
    """How well estimated proportions (spots x labels) recover the true ones: root mean squared
    error, mean per-label Pearson correlation over spots, and the RMSE of the baseline that
    gives every spot the mean true proportions."""
    rmse = float(np.sqrt(np.mean((truth - estimated) ** 2)))
    baseline = float(np.sqrt(np.mean((truth - truth.mean(axis=0, keepdims=True)) ** 2)))
    pearsons = [
        float(np.corrcoef(truth[:, j], estimated[:, j])[0, 1])
        for j in range(truth.shape[1])
        if np.ptp(truth[:, j]) > 0 and np.ptp(estimated[:, j]) > 0
    ]
    return {
        "rmse": rmse,
        "rmse_mean_baseline": baseline,
        "mean_pearson": float(np.mean(pearsons)) if pearsons else None,
    }


def deconvolution_check(
    model_dir,
    spatial_class: type,
    *,
    labels_key: str,
    layer: str | None,
    n_spots: int,
    max_epochs: int,
    seed: int,
) -> dict:
    """Pseudo-spots of the validation cells, deconvolved by `spatial_class.from_rna_model` of
    the saved model (default arguments but the epochs), scored against their true proportions.
    """
    from .model_io import load_model, validation_cells

    model = load_model(model_dir)
    cells = validation_cells(model, labels_key, layer)
    if cells.n_cells < CELLS_PER_SPOT[1]:
        return {
            RAN: False,
            SKIPPED_REASON: f"the model has {cells.n_cells} validation cells, fewer than "
            f"the {CELLS_PER_SPOT[1]} of the largest pseudo-spot",
        }
    rng = np.random.default_rng(seed)
    spots, truth = pseudo_spots(cells.counts, cells.codes, len(cells.labels), n_spots, rng)

    import anndata as ad

    st = ad.AnnData(spots)
    st.var_names = model.adata.var_names
    st.obs_names = [f"spot_{i}" for i in range(n_spots)]
    spatial_class.setup_anndata(st)
    spatial = spatial_class.from_rna_model(st, model)
    spatial.train(max_epochs=max_epochs, enable_progress_bar=False)
    estimated = spatial.get_proportions()[cells.labels].to_numpy(dtype=float)
    return {
        RAN: True,
        "spatial_model": type(spatial).__name__,
        "n_spots": n_spots,
        "cells_per_spot": list(CELLS_PER_SPOT),
        "n_cells": cells.n_cells,
        "epochs": max_epochs,
        **proportion_scores(truth, estimated),
    }
