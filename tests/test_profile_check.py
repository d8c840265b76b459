"""The cell-type profile check (RNAStereoscope): a perfect model scores perfectly, a model with
shuffled labels at chance; the likelihood is scvi-tools' own."""

from __future__ import annotations

import numpy as np
import pytest
from scvi_hub_workflow.profile_check import (
    heldout_log_likelihood,
    model_profiles,
    observed_profiles,
    profile_scores,
)


def simulated(n_labels=6, n_genes=200, n_cells=600, seed=0):
    """Counts of cells of `n_labels` types, each with its own planted profile."""
    rng = np.random.default_rng(seed)
    profiles = rng.dirichlet(np.full(n_genes, 0.5), size=n_labels)
    labels = rng.integers(n_labels, size=n_cells)
    counts = rng.poisson(profiles[labels] * 2000)
    return profiles, labels, counts


def test_a_model_with_the_held_out_profiles_scores_perfectly():
    _, labels, counts = simulated()
    observed = observed_profiles(counts, labels, 6)
    perfect = profile_scores(observed, observed)
    assert perfect["match_accuracy"] == 1.0
    assert perfect["mean_pearson"] == pytest.approx(1.0)


def test_the_true_profiles_match_and_shuffled_labels_match_at_chance():
    profiles, labels, counts = simulated()
    observed = observed_profiles(counts, labels, 6)
    assert profile_scores(profiles, observed)["match_accuracy"] == 1.0
    # shuffled labels: each type's profile is another type's; over many shuffles, chance
    rng = np.random.default_rng(1)
    matched = [
        profile_scores(profiles[rng.permutation(6)], observed)["match_accuracy"] for _ in range(200)
    ]
    assert np.mean(matched) == pytest.approx(1 / 6, abs=0.04)
    assert profile_scores(profiles, observed)["chance"] == pytest.approx(1 / 6)


def test_model_profiles_are_the_expected_shares_of_a_cells_counts():
    rng = np.random.default_rng(0)
    w, px_o = rng.normal(size=(5, 3)), rng.normal(size=5)
    profiles = model_profiles(w, px_o)
    assert profiles.shape == (3, 5) and np.allclose(profiles.sum(axis=1), 1)
    mean = np.log1p(np.exp(w[:, 1])) * np.exp(px_o)
    assert np.allclose(profiles[1], mean / mean.sum())


def test_the_held_out_likelihood_is_that_of_scvi_tools_negative_binomial():
    import torch
    from scvi.distributions import NegativeBinomial

    rng = np.random.default_rng(0)
    w, px_o = rng.normal(size=(7, 3)), rng.normal(size=7)
    counts = rng.poisson(3.0, size=(4, 7)).astype(float)
    labels = np.array([0, 2, 1, 2])
    # RNADeconv's loss: NegativeBinomial(library * softplus(W)[:, y].T, logits=px_o)
    library = counts.sum(axis=1, keepdims=True)
    total = torch.tensor(library * np.log1p(np.exp(w[:, labels])).T)
    expected = NegativeBinomial(total, logits=torch.tensor(px_o)).log_prob(torch.tensor(counts))
    assert heldout_log_likelihood(counts, labels, w, px_o) == pytest.approx(
        float(expected.sum(-1).mean()), rel=1e-6
    )


@pytest.mark.slow
def test_a_saved_model_is_checked_with_its_own_label_order(tmp_path):
    """The check reads the validation cells' labels in the order of the model's columns, not
    in the order of the AnnData's categories (here reversed), so a model trained on the planted
    profiles still matches every label to its own profile."""
    import anndata as ad
    import pandas as pd
    from scvi.external import RNAStereoscope
    from scvi_hub_workflow.layout import SPLIT_COLUMN
    from scvi_hub_workflow.profile_check import profile_check

    _, labels, counts = simulated(n_labels=4, n_genes=60, n_cells=400)
    names = np.array(["t0", "t1", "t2", "t3"])
    adata = ad.AnnData(counts.astype(np.float32))
    adata.obs["cell_type"] = pd.Categorical(names[labels], categories=names[::-1])
    adata.obs[SPLIT_COLUMN] = np.where(np.arange(len(labels)) % 5 == 0, "validation", "train")
    RNAStereoscope.setup_anndata(adata, labels_key="cell_type")
    model = RNAStereoscope(adata)
    model.train(max_epochs=200, enable_progress_bar=False)
    model.save(tmp_path / "model", save_anndata=True)

    result = profile_check(tmp_path / "model", "cell_type", layer=None, seed=0)
    assert result["n_cells"] == 80
    assert [row["label"] for row in result["per_label"]] == list(names[::-1])
    assert result["match_accuracy"] == 1.0
    assert result["log_likelihood"] > result["log_likelihood_shuffled_labels"]
