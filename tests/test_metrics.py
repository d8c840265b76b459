"""Metric definitions: perfect and chance scores, R² direction, NaN handling, scvi-tools parity."""

import numpy as np
import pytest
from reference import cell_wise_cv, gene_wise_cv, wilcoxon_one_vs_rest
from scipy import sparse
from scvi_hub_workflow import metrics
from sklearn.metrics import r2_score

ALPHA, TOP_N = 0.05, 10


def _counts_with_markers(n_cells=600, n_genes=120, n_groups=4, seed=0):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, n_groups, n_cells)
    means = rng.gamma(1.0, 1.0, (n_groups, n_genes))
    for k in range(n_groups):
        means[k, rng.choice(n_genes, 8, replace=False)] *= 8
    counts = rng.poisson(means[groups] * rng.lognormal(0, 0.3, (n_cells, 1)))
    return counts.astype(np.float32), groups


def _de(counts, groups, n_groups=4):
    log_x = metrics.log_normalise(counts, counts.sum(axis=1))
    return wilcoxon_one_vs_rest(sparse.csr_matrix(log_x), groups, n_groups)


def _group_rows(observed, samples, n_groups=4):
    rows = []
    for k in range(n_groups):
        obs = {f: getattr(observed, f)[k] for f in ("scores", "logfoldchanges", "pvals_adj")}
        sam = [{f: getattr(s, f)[k] for f in ("scores", "logfoldchanges")} for s in samples]
        rows.append(metrics.group_de_metrics(obs, sam, alpha=ALPHA, top_n=TOP_N))
    return rows


def _sign_disagrees(observed, k):
    # significant genes whose Wilcoxon score and scanpy lfc point in opposite directions
    significant = observed.pvals_adj[k] < ALPHA
    return significant & (np.sign(observed.scores[k]) != np.sign(observed.logfoldchanges[k]))


def test_samples_equal_to_observed_score_perfectly():
    counts, groups = _counts_with_markers()
    observed = _de(counts, groups)
    rows = _group_rows(observed, [observed, observed])
    for row in rows:
        assert row["gene_f1"] == 1
        assert row["lfc_mae"] == 0
        assert row["lfc_pearson"] == pytest.approx(1) and row["lfc_spearman"] == pytest.approx(1)
        assert row["n_true_up"] > 0 and row["n_true_two_sided"] > row["n_true_up"]
        # exactly 1: up-regulated truth follows the sign of the score it is ranked by
        assert row["roc_auc"] == 1 and row["pr_auc"] == 1
        assert row["roc_auc_two_sided"] == 1
        # average precision sums many precision steps: 1 up to float rounding
        assert row["pr_auc_two_sided"] == pytest.approx(1, abs=1e-12)
    # the case that truth by fold-change sign got wrong (AUC < 1) is present in this data
    assert any(_sign_disagrees(observed, k).any() for k in range(4))
    cv = cell_wise_cv(counts)
    assert metrics.compare_cv(cv, cv) == pytest.approx(
        {"mae": 0, "pearson": 1, "spearman": 1, "r2": 1}
    )


def test_samples_shuffled_across_cells_score_at_chance():
    counts, groups = _counts_with_markers(n_cells=1500, n_genes=300)
    observed = _de(counts, groups)
    rng = np.random.default_rng(1)
    samples = [_de(counts[rng.permutation(len(counts))], groups) for _ in range(3)]
    rows = _group_rows(observed, samples)
    for key in ("roc_auc", "roc_auc_two_sided"):
        mean_auc = np.mean([row[key] for row in rows])
        assert abs(mean_auc - 0.5) < 0.1, (key, mean_auc)
    assert np.mean([row["gene_f1"] for row in rows]) < 0.3
    # the same test gives the real markers back: the chance level is not an artefact
    assert np.mean([r["roc_auc"] for r in _group_rows(observed, [observed])]) > 0.99


def test_r2_scores_the_model_as_prediction_of_the_observation():
    observed = np.array([0.2, 0.5, 0.9, 1.4])
    model = np.array([0.3, 0.4, 1.2, 1.0])
    result = metrics.compare_cv(model, observed)
    assert result["r2"] == pytest.approx(r2_score(observed, model))
    assert result["r2"] != pytest.approx(r2_score(model, observed))


def test_undefined_cv_counts_as_zero():
    counts = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 4.0]])
    cell_cv = cell_wise_cv(counts)
    assert cell_cv[0] == 0 and cell_cv[1] == pytest.approx(np.std([1, 1, 4]) / 2)
    gene_cv = gene_wise_cv(counts)
    assert np.isfinite(gene_cv).all()
    assert gene_cv[0] == pytest.approx(1.0)  # values 0 and 1: std 0.5, mean 0.5
    # averaged over samples with the undefined sample counted as 0
    samples = np.stack([counts, np.array([[1.0, 2.0, 3.0], [1.0, 1.0, 4.0]])])
    assert cell_wise_cv(samples)[0] == pytest.approx(np.std([1, 2, 3]) / 2 / 2)


def _cell_cvs_of_perfect_model(n_samples, seed):
    # NB counts around known means: the observed data and the samples of a model that knows them
    rng = np.random.default_rng(seed)
    n_cells, n_genes, theta = 800, 300, 5.0
    means = rng.lognormal(-1.0, 1.2, n_genes) * rng.lognormal(0, 0.35, (n_cells, 1))
    means *= np.where(rng.random((n_cells, n_genes)) < 0.03, 4.0, 1.0)

    def draw():
        return cell_wise_cv(rng.poisson(rng.gamma(theta, means / theta)))

    return draw(), np.stack([draw() for _ in range(n_samples)])


def test_the_ceiling_is_what_a_model_that_knows_the_truth_scores():
    perfect, ceiling = [], []
    for seed in range(4):
        observed, samples = _cell_cvs_of_perfect_model(3, seed)
        perfect.append(metrics.compare_cv(samples.mean(axis=0), observed)["pearson"])
        ceiling.append(metrics.replicate_ceiling(samples)["pearson"])
    # the data's own noise keeps even the true model far from 1, and the ceiling says so
    assert np.mean(perfect) < 0.8
    assert np.mean(ceiling) == pytest.approx(np.mean(perfect), abs=0.06)
    assert metrics.replicate_ceiling(samples)["mae"] > 0


@pytest.mark.parametrize("n_samples", [2, 3])
def test_the_ceiling_is_that_of_a_model_of_as_many_samples(n_samples):
    # Per cell a true CV mu and noise of its own size; the model averages n samples, as the
    # model is scored. Each sample against the mean of the n - 1 others scores lower (by 0.08
    # in Pearson and 0.25 in R² at n = 2): the ceiling corrects that to n samples.
    rng = np.random.default_rng(0)
    model, ceiling = [], []
    for _ in range(40):
        mu = rng.normal(1.0, 0.3, 3000)
        noise = 0.3 * rng.uniform(0.5, 1.5, mu.size)  # heteroscedastic
        observed = mu + noise * rng.standard_normal(mu.size)
        samples = mu + noise * rng.standard_normal((n_samples, mu.size))
        model.append(metrics.compare_cv(samples.mean(axis=0), observed))
        ceiling.append(metrics.replicate_ceiling(samples))
    for key, tolerance in (("mae", 0.003), ("pearson", 0.01), ("spearman", 0.01), ("r2", 0.02)):
        expected = np.mean([row[key] for row in model])
        assert np.mean([row[key] for row in ceiling]) == pytest.approx(expected, abs=tolerance)


def test_the_ceiling_needs_two_samples_and_is_perfect_for_identical_ones():
    cvs = np.random.default_rng(0).random((1, 50))
    assert all(np.isnan(v) for v in metrics.replicate_ceiling(cvs).values())
    same = metrics.replicate_ceiling(np.repeat(cvs, 3, axis=0))
    assert same == pytest.approx({"mae": 0, "pearson": 1, "spearman": 1, "r2": 1}, abs=1e-12)
    assert all(np.isnan(v) for v in metrics.replicate_ceiling(np.empty((3, 0))).values())


def test_empty_or_constant_inputs_give_nan_not_errors():
    assert all(np.isnan(v) for v in metrics.compare_cv(np.empty(0), np.empty(0)).values())
    flat = metrics.compare_cv(np.array([1.0, 2.0]), np.array([3.0, 3.0]))
    assert np.isnan(flat["pearson"]) and np.isnan(flat["r2"]) and flat["mae"] == 1.5


def test_auc_is_nan_without_positives_and_n_true_says_why():
    observed = {
        "scores": np.array([0.1, -0.2, 0.3]),
        "logfoldchanges": np.array([0.1, -0.1, 0.2]),
        "pvals_adj": np.array([0.9, 0.8, 0.7]),
    }
    row = metrics.group_de_metrics(observed, [observed], alpha=0.05, top_n=2)
    assert row["n_true_up"] == 0 and row["n_true_two_sided"] == 0
    assert np.isnan(row["roc_auc"]) and np.isnan(row["pr_auc_two_sided"])
    assert row["gene_f1"] == 1


def test_up_regulated_truth_needs_significance_and_positive_score():
    up, any_direction = metrics.marker_truth(
        np.array([0.01, 0.01, 0.5]), np.array([1.0, -1.0, 2.0]), alpha=0.05
    )
    assert up.tolist() == [True, False, False]
    assert any_direction.tolist() == [True, True, False]
    # the fold change does not decide the direction: a positive score with a negative lfc is up
    observed = {
        "scores": np.array([5.0, -5.0, 0.1]),
        "logfoldchanges": np.array([-0.2, 0.3, 0.0]),
        "pvals_adj": np.array([0.001, 0.001, 0.9]),
    }
    row = metrics.group_de_metrics(observed, [observed], alpha=0.05, top_n=1)
    assert row["n_true_up"] == 1 and row["roc_auc"] == 1


@pytest.mark.parametrize("seed", range(4))
def test_aucs_equal_sklearn_with_ties(seed):
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(seed)
    truth = rng.random(300) < 0.2
    predictor = np.round(rng.normal(size=300) + truth, 1)  # rounding makes ties
    roc, pr = metrics.auc_pair(truth, predictor)
    assert roc == pytest.approx(roc_auc_score(truth, predictor), rel=1e-12)
    assert pr == pytest.approx(average_precision_score(truth, predictor), rel=1e-12)


def test_log_normalise_equals_scanpy():
    import anndata
    import scanpy as sc

    counts, _ = _counts_with_markers(n_cells=50, n_genes=30)
    counts[0] = 0  # a cell without counts stays 0
    adata = anndata.AnnData(sparse.csr_matrix(counts))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    ours = metrics.log_normalise(counts, counts.sum(axis=1))
    np.testing.assert_allclose(ours, adata.X.toarray(), rtol=1e-6)
    assert ours.dtype == np.float32


class _FixedSamples:
    """Stands in for a model in scvi-tools' PosteriorPredictiveCheck: returns given samples."""

    def __init__(self, samples, adata):
        self.samples = samples  # (samples, cells, genes)
        self.adata = adata

    def posterior_predictive_sample(self, adata, n_samples, batch_size, indices):
        import sparse as pydata_sparse

        return pydata_sparse.GCXS.from_numpy(np.moveaxis(self.samples, 0, -1))


def test_cv_equals_scvi_tools_on_identical_samples():
    import anndata
    from scvi.criticism import PosteriorPredictiveCheck

    rng = np.random.default_rng(0)
    observed = rng.poisson(3.0, (40, 25)).astype(np.float32)
    samples = rng.poisson(3.0, (3, 40, 25)).astype(np.float32)
    # no cell or gene without counts, where the two NaN conventions would differ
    assert (observed.sum(0) > 0).all() and (samples.sum(1) > 0).all() and (samples.sum(2) > 0).all()
    adata = anndata.AnnData(observed)  # scvi-tools' integer check fails on sparse input
    ppc = PosteriorPredictiveCheck(adata, {"model": _FixedSamples(samples, adata)}, n_samples=3)
    ppc.coefficient_of_variation("features")  # scvi's "cell-wise": across genes
    ppc.coefficient_of_variation("cells")
    theirs_cell, theirs_gene = ppc.metrics["cv_cell"], ppc.metrics["cv_gene"]
    np.testing.assert_allclose(cell_wise_cv(samples), theirs_cell["model"], rtol=1e-6)
    np.testing.assert_allclose(cell_wise_cv(observed), theirs_cell["Raw"], rtol=1e-6)
    np.testing.assert_allclose(gene_wise_cv(samples), theirs_gene["model"], rtol=1e-6)
    np.testing.assert_allclose(gene_wise_cv(observed), theirs_gene["Raw"], rtol=1e-6)
