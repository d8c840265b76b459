"""The deconvolution check's pseudo-spots and scores: known proportions, a perfect estimate
scores perfectly, the mean-proportion baseline as the reference of no skill."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scvi_hub_workflow.deconvolution import CELLS_PER_SPOT, proportion_scores, pseudo_spots


def test_pseudo_spots_sum_their_cells_and_know_their_proportions():
    rng = np.random.default_rng(0)
    counts = sp.csr_matrix(rng.poisson(1.0, size=(50, 8)))
    labels = np.repeat([0, 1, 2], [10, 15, 25])
    spots, truth = pseudo_spots(counts, labels, 3, 40, np.random.default_rng(1))
    assert spots.shape == (40, 8) and truth.shape == (40, 3)
    assert np.allclose(truth.sum(axis=1), 1)
    low, high = CELLS_PER_SPOT
    # every spot's total is that of 2 to 10 distinct cells: replaying the draws gives it back
    replay = np.random.default_rng(1)
    for spot in range(40):
        size = int(replay.integers(low, high + 1))
        members = replay.choice(50, size=size, replace=False)
        assert np.allclose(spots[spot], counts[members].sum(axis=0))
        assert np.allclose(truth[spot], np.bincount(labels[members], minlength=3) / size)


def test_the_truth_scores_perfectly_and_the_mean_is_the_baseline():
    rng = np.random.default_rng(0)
    truth = rng.dirichlet(np.ones(4), size=100)
    perfect = proportion_scores(truth, truth)
    assert perfect["rmse"] == 0 and perfect["mean_pearson"] == pytest.approx(1)
    mean = np.repeat(truth.mean(axis=0, keepdims=True), 100, axis=0)
    baseline = proportion_scores(truth, mean)
    assert baseline["rmse"] == pytest.approx(baseline["rmse_mean_baseline"])
    assert baseline["mean_pearson"] is None  # a constant estimate has no correlation
    shuffled = proportion_scores(truth, truth[rng.permutation(100)])
    assert shuffled["rmse"] > baseline["rmse_mean_baseline"]
    assert abs(shuffled["mean_pearson"]) < 0.3
