"""Streaming posterior predictive check: equals the in-memory definitions, and the rule scripts."""

import json
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import declared_keys
from reference import cell_wise_cv, gene_wise_cv, wilcoxon_one_vs_rest
from scipy import sparse, stats
from scvi_hub_workflow import config, criticism, metrics
from scvi_hub_workflow.layout import DE_COLUMNS
from scvi_hub_workflow.settings import to_text

SCRIPTS = Path(__file__).resolve().parents[1] / "workflow" / "scripts"


def _arrays(n_cells=230, n_genes=40, n_samples=2, seed=0):
    rng = np.random.default_rng(seed)
    observed = rng.poisson(rng.gamma(0.5, 2.0, n_genes), (n_cells, n_genes)).astype(np.float32)
    samples = rng.poisson(rng.gamma(0.5, 2.0, n_genes), (n_samples, n_cells, n_genes))
    observed[3] = 0  # a cell without counts
    splits = rng.choice(["train", "validation", "test"], n_cells, p=[0.6, 0.3, 0.1])
    return observed, samples.astype(np.float32), splits


def _feed(accumulator, observed, samples, block=64):
    for start in range(0, len(observed), block):
        stop = min(start + block, len(observed))
        sources = [criticism.Nonzeros.from_dense(observed[start:stop])]
        sources += [criticism.Nonzeros.from_dense(s[start:stop]) for s in samples]
        accumulator.add(start, stop, accumulator.contribution(start, stop, sources))


def test_streamed_cv_equals_in_memory_definition():
    observed, samples, splits = _arrays()
    cv = criticism.CoefficientOfVariation(splits, len(samples), observed.shape[1])
    _feed(cv, observed, samples)
    result = cv.result()
    for split in ("train", "validation"):
        mask = splits == split
        expected = metrics.compare_cv(cell_wise_cv(samples[:, mask]), cell_wise_cv(observed[mask]))
        ceiling = metrics.replicate_ceiling([cell_wise_cv(s[mask]) for s in samples])
        got = result["cell_wise"][split]
        assert got.pop("ceiling") == pytest.approx(ceiling)
        assert got == pytest.approx(expected | {"n_cells": mask.sum()})
    for split in ("all", "train", "validation"):
        mask = np.ones(len(splits), bool) if split == "all" else splits == split
        expected = metrics.compare_cv(gene_wise_cv(samples[:, mask]), gene_wise_cv(observed[mask]))
        ceiling = metrics.replicate_ceiling([gene_wise_cv(s[mask]) for s in samples])
        got = result["gene_wise"][split]
        assert got.pop("ceiling") == pytest.approx(ceiling)
        assert got == pytest.approx(expected | {"n_genes": 40})


def test_split_without_cells_gives_null_metrics():
    observed, samples, splits = _arrays()
    splits = np.where(splits == "validation", "train", splits)
    cv = criticism.CoefficientOfVariation(splits, len(samples), observed.shape[1])
    _feed(cv, observed, samples)
    result = cv.result()
    assert result["cell_wise"]["validation"]["n_cells"] == 0
    assert np.isnan(result["cell_wise"]["validation"]["mae"])
    assert np.isnan(result["gene_wise"]["validation"]["r2"])
    assert np.isfinite(result["gene_wise"]["train"]["r2"])


def test_streamed_de_equals_in_memory_wilcoxon(tmp_path):
    observed, samples, _ = _arrays(n_cells=300, n_genes=50)
    groups = np.random.default_rng(2).integers(-1, 3, len(observed))  # -1: not tested
    # a tiny memory budget forces many gene chunks in the disk store, ranked in two threads
    nonzeros = (observed > 0).sum(axis=0)
    de = criticism.DifferentialExpression(
        groups, 3, len(samples), nonzeros, tmp_path, 48 * 2000, n_workers=2
    )
    _feed(de, observed, samples)
    results = de.results()
    assert len(de.chunks) > 3 and not list(tmp_path.iterdir())  # store cleaned up
    for counts, ours in zip([observed, *samples], results, strict=True):
        log_x = metrics.log_normalise(counts, counts.sum(axis=1))
        expected = wilcoxon_one_vs_rest(sparse.csr_matrix(log_x), groups, 3)
        np.testing.assert_allclose(ours.scores, expected.scores, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ours.logfoldchanges, expected.logfoldchanges, rtol=1e-9)
        np.testing.assert_allclose(ours.pvals_adj, expected.pvals_adj, rtol=1e-9)


def test_label_groups_drop_unlabeled_and_small_groups():
    labels = pd.Series(["a"] * 5 + ["b"] * 2 + ["Unknown"] * 6 + ["c"] * 3)
    grouping = criticism.label_groups(labels, unlabeled_category="Unknown", min_cells=3, key="ct")
    assert grouping.names == ["a", "c"]
    assert grouping.codes.tolist() == [0] * 5 + [-1] * 8 + [1] * 3
    assert grouping.grouping == "labels"


class _Files(list):
    """A snakemake Namedlist stand-in: index and attribute access."""

    def __init__(self, **named):
        super().__init__(named.values())
        self.__dict__.update(named)

    def __getitem__(self, key):
        return self.__dict__[key] if isinstance(key, str) else super().__getitem__(key)


def _run_rule(script, *, input, output, settings, log):
    snakemake = SimpleNamespace(
        input=_Files(**input),
        output=_Files(**output),
        params=SimpleNamespace(settings=settings),
        threads=2,
        log=[str(log)],
    )
    runpy.run_path(str(SCRIPTS / script), init_globals={"snakemake": snakemake})


def _engine_samples(model_dir, n_samples, batch_size, seed):
    model = criticism.load_minified_model(model_dir)
    blocks = criticism.likelihood_blocks(
        model, n_samples=n_samples, batch_size=batch_size, seed=seed
    )
    drawn = [
        np.stack(list(criticism.draw_counts(likelihood, criticism.sample_rng(seed, start))))
        for start, _, likelihood in blocks
    ]
    return model, np.concatenate(drawn, axis=1)


def _rule_settings(labels_key) -> str:
    """The rule's params: the settings it declares, as the workflow passes them (text)."""
    entry = {
        "dataset": {"source": "builtin:synthetic-iid"},
        "model": {"class": "SCVI", "setup": {"labels_key": labels_key}},
        "criticism": {
            "n_samples": 2,
            "batch_size": 100,
            "alpha": 0.05,
            "top_n": 10,
            "min_cells": 10,
            "cluster_resolution": 0.5,
        },
        "train": {"seed": 3},
    }
    settings = config.model_settings({"models": {"m": entry}}, "m")
    return to_text(settings, declared_keys("posterior_predictive_check"))


def _run_check(minified_model, tmp_path, labels_key):
    output = {
        "cv": str(tmp_path / "cv.json"),
        "de_table": str(tmp_path / "de.tsv"),
        "de_summary": str(tmp_path / "de.json"),
        "cells": str(tmp_path / "cells.tsv"),
        "cv_cells": str(tmp_path / "cv_cells.tsv"),
        "cv_genes": str(tmp_path / "cv_genes.tsv"),
        "cv_protein_cells": str(tmp_path / "cv_protein_cells.tsv"),
        "cv_proteins": str(tmp_path / "cv_proteins.tsv"),
    }
    _run_rule(
        "posterior_predictive_check.py",
        input={"model": str(minified_model / "minified"), "data": str(minified_model / "hvg.h5ad")},
        output=output,
        settings=_rule_settings(labels_key),
        log=tmp_path / "ppc.log",
    )


def test_posterior_predictive_check_rule_cv(minified_model, tmp_path):
    _run_check(minified_model, tmp_path, "cell_type")
    result = json.loads((tmp_path / "cv.json").read_text())
    assert result["n_samples"] == 2 and result["seed"] == 3
    # the same samples through the in-memory definitions give the same figures
    model, samples = _engine_samples(minified_model / "minified", 2, 100, 3)
    import anndata

    observed = anndata.read_h5ad(minified_model / "hvg.h5ad").X.toarray()
    splits = model.adata.obs["split"].astype(str).to_numpy()
    for split in ("train", "validation"):
        mask = splits == split
        expected = metrics.compare_cv(cell_wise_cv(samples[:, mask]), cell_wise_cv(observed[mask]))
        got = result["cell_wise"][split]
        ceiling = metrics.replicate_ceiling([cell_wise_cv(s[mask]) for s in samples])
        assert got.pop("ceiling") == pytest.approx(ceiling)
        assert got == pytest.approx(expected | {"n_cells": mask.sum()})
    expected = metrics.compare_cv(gene_wise_cv(samples), gene_wise_cv(observed))
    ceiling = metrics.replicate_ceiling([gene_wise_cv(s) for s in samples])
    assert result["gene_wise"]["all"].pop("ceiling") == pytest.approx(ceiling)
    assert result["gene_wise"]["all"] == pytest.approx(expected | {"n_genes": 80})
    assert result["gene_wise"]["train"]["n_genes"] == 80
    # the per-cell and per-gene values behind those figures, as the report plots them
    cells = pd.read_csv(tmp_path / "cv_cells.tsv", sep="\t", index_col="cell")
    np.testing.assert_allclose(cells["model_cv"], cell_wise_cv(samples))
    np.testing.assert_allclose(cells["observed_cv"], cell_wise_cv(observed))
    assert (cells["split"].to_numpy() == splits).all()
    genes = pd.read_csv(tmp_path / "cv_genes.tsv", sep="\t", index_col="gene")
    np.testing.assert_allclose(genes["model_cv"], gene_wise_cv(samples))
    assert (tmp_path / "cv_proteins.tsv").read_text() == ""  # an RNA model has no proteins


@pytest.mark.parametrize("labels_key", ["cell_type", None])
def test_posterior_predictive_check_rule_de(minified_model, tmp_path, labels_key):
    _run_check(minified_model, tmp_path, labels_key)
    table = pd.read_csv(tmp_path / "de.tsv", sep="\t")
    assert list(table.columns) == list(DE_COLUMNS)
    assert (np.diff(table["n_cells"]) <= 0).all() and (table["n_cells"] >= 10).all()
    summary = json.loads((tmp_path / "de.json").read_text())
    expected_grouping = "labels" if labels_key else "clusters"
    assert summary["grouping"] == expected_grouping and summary["test"] == "wilcoxon"
    assert summary["alpha"] == 0.05 and summary["top_n"] == 10 and summary["n_samples"] == 2
    assert [row["group"] for row in summary["groups"]] == table["group"].astype(str).tolist()
    cells = pd.read_csv(tmp_path / "cells.tsv", sep="\t")
    assert len(cells) == 360 and list(cells.columns) == ["cell", labels_key or "leiden", "in_de"]
    assert cells["in_de"].sum() == table["n_cells"].sum()
    if labels_key:
        assert sorted(table["group"]) == ["type_0", "type_1", "type_2", "type_3"]
        assert table["n_cells"].sum() == 360
        assert ((table["gene_f1"] >= 0) & (table["gene_f1"] <= 1)).all()


def _labels(model):
    return criticism.resolve_groups(
        model, labels_key="cell_type", unlabeled_category=None, min_cells=10, cluster_resolution=1
    )


def test_counts_from_a_layer(minified_model_with_layer):
    model = criticism.load_minified_model(minified_model_with_layer / "minified")
    data = minified_model_with_layer / "hvg.h5ad"
    with criticism.ObservedCounts(data, "counts") as observed:
        assert observed.nonzeros(0, 200).values.sum() > 0
    with criticism.ObservedCounts(data) as observed:
        assert observed.nonzeros(0, 200).values.size == 0  # X is empty in this file
    cv, table, *_ = criticism.criticise(
        model, data, _labels(model), **SETTINGS, alpha=0.05, top_n=5, layer="counts"
    )
    assert cv["cell_wise"]["train"]["n_cells"] > 0
    assert np.isfinite(cv["cell_wise"]["train"]["mae"])
    assert np.isfinite(table["lfc_pearson"]).all()


SETTINGS = {"n_samples": 2, "batch_size": 64, "seed": 0}


def test_per_cell_and_per_gene_values_are_the_ones_behind_the_metrics(minified_model):
    model = criticism.load_minified_model(minified_model / "minified")
    data = minified_model / "hvg.h5ad"
    cv, _, _, values = criticism.criticise(
        model, data, _labels(model), **SETTINGS, alpha=0.05, top_n=5, layer=None
    )
    cells, genes = values.cells, values.genes
    assert list(cells.index) == list(model.adata.obs_names)
    assert list(genes.index) == list(model.adata.var_names)
    for split in ("train", "validation"):
        rows = cells[cells["split"] == split]
        expected = metrics.compare_cv(rows["model_cv"].to_numpy(), rows["observed_cv"].to_numpy())
        assert expected["pearson"] == pytest.approx(cv["cell_wise"][split]["pearson"])
        assert len(rows) == cv["cell_wise"][split]["n_cells"]
    expected = metrics.compare_cv(genes["model_cv"].to_numpy(), genes["observed_cv"].to_numpy())
    assert expected["pearson"] == pytest.approx(cv["gene_wise"]["all"]["pearson"])


def test_mismatched_counts_are_refused(minified_model, minified_model_with_layer):
    model = criticism.load_minified_model(minified_model / "minified")
    with pytest.raises(ValueError, match="do not match"):
        criticism.criticise(
            model,
            minified_model_with_layer / "hvg.h5ad",
            _labels(model),
            **SETTINGS,
            alpha=0.05,
            top_n=5,
            layer="counts",
        )


def test_results_do_not_depend_on_threads_or_store_chunks(minified_model):
    model = criticism.load_minified_model(minified_model / "minified")
    data = minified_model / "hvg.h5ad"
    settings = SETTINGS | {"layer": None, "alpha": 0.1, "top_n": 5}
    one = criticism.criticise(model, data, _labels(model), **settings, n_workers=1)
    # two threads, and a budget small enough for many gene chunks per source
    two = criticism.criticise(
        model, data, _labels(model), **settings, n_workers=2, memory_budget_bytes=48 * 3000
    )
    # cv.json records the threads it ran on; every figure is the same
    assert (one[0].pop("threads"), two[0].pop("threads")) == (1, 2)
    assert one[0] == two[0] and one[2] == two[2]
    pd.testing.assert_frame_equal(one[1], two[1])
    other_seed = criticism.criticise(model, data, _labels(model), **settings | {"seed": 1})
    assert other_seed[0] != one[0]


@pytest.mark.parametrize(
    ("mean", "theta"), [(0.05, 5.0), (0.3, 0.3), (1.0, 1.0), (3.9, 0.5), (12.0, 2.0), (60.0, 0.3)]
)
def test_negative_binomial_sampler_has_the_nb_distribution(mean, theta):
    # both regimes: inversion (mean <= 4) and gamma-Poisson (larger means)
    n = 200_000
    rng = np.random.default_rng(0)
    counts = criticism.negative_binomial(
        np.full((400, n // 400), mean, np.float32), np.full((400, n // 400), theta, np.float32), rng
    )
    assert counts.shape == (400, n // 400) and counts.dtype == np.float32
    k = np.arange(6)
    expected = stats.nbinom.pmf(k, theta, theta / (theta + mean))
    observed = np.array([(counts == i).mean() for i in k])
    # within 5 standard errors of the exact probabilities
    assert np.all(np.abs(observed - expected) <= 5 * np.sqrt(expected * (1 - expected) / n) + 1e-9)
    assert counts.mean() == pytest.approx(mean, rel=0.05)


def test_zero_inflation_and_poisson_in_draw_counts():
    shape = (2, 300, 500)
    mean = np.full(shape, 2.0, np.float32)
    zinb = criticism.CountLikelihood("zinb", mean, np.float32(1.5), np.full(shape, 0.4, np.float32))
    zinb_counts = np.stack(list(criticism.draw_counts(zinb, np.random.default_rng(0))))
    p_zero = 0.4 + 0.6 * stats.nbinom.pmf(0, 1.5, 1.5 / 3.5)
    assert (zinb_counts == 0).mean() == pytest.approx(p_zero, abs=0.005)
    assert zinb_counts.mean() == pytest.approx(0.6 * 2.0, rel=0.02)
    poisson = criticism.CountLikelihood("poisson", mean)
    poisson_counts = np.stack(list(criticism.draw_counts(poisson, np.random.default_rng(0))))
    assert (poisson_counts == 0).mean() == pytest.approx(np.exp(-2.0), abs=0.005)
    assert poisson_counts.var() == pytest.approx(2.0, rel=0.03)


def test_the_protein_mixture_sampler_matches_scvi_tools_distribution():
    """TOTALVI's proteins: background NB with the mixing probability, else foreground NB; the
    probabilities of small counts are those of scvi-tools' NegativeBinomialMixture."""
    import torch
    from scvi.distributions import NegativeBinomialMixture

    shape = (2, 400, 250)
    background, foreground, theta, logit = 3.0, 40.0, 2.0, 0.8
    likelihood = criticism.CountLikelihood(
        "nb_mixture",
        np.full(shape, background, np.float32),
        np.full(shape[1:], theta, np.float32),
        mean2=np.full(shape, foreground, np.float32),
        mix_prob=np.full(shape, 1 / (1 + np.exp(-logit)), np.float32),
    )
    counts = np.stack(list(criticism.draw_counts(likelihood, np.random.default_rng(0))))
    exact = NegativeBinomialMixture(
        mu1=torch.tensor(background),
        mu2=torch.tensor(foreground),
        theta1=torch.tensor(theta),
        mixture_logits=torch.tensor(logit),
    )
    k = np.arange(8)
    expected = np.exp(exact.log_prob(torch.tensor(k, dtype=torch.float32)).numpy())
    observed = np.array([(counts == i).mean() for i in k])
    n = counts.size
    assert np.all(np.abs(observed - expected) <= 5 * np.sqrt(expected * (1 - expected) / n))
    mix = 1 / (1 + np.exp(-logit))
    assert counts.mean() == pytest.approx(mix * background + (1 - mix) * foreground, rel=0.02)


def test_nonzeros_per_gene_reads_csr_and_dense(tmp_path):
    import anndata

    counts = np.random.default_rng(0).poisson(0.5, (70, 9)).astype(np.float32)
    for name, x in [("csr", sparse.csr_matrix(counts)), ("dense", counts)]:
        path = tmp_path / f"{name}.h5ad"
        anndata.AnnData(x).write_h5ad(path)
        with criticism.ObservedCounts(path) as observed:
            per_gene = observed.nonzeros_per_gene(rows_per_read=8)
            rows = observed.nonzeros(10, 30)
        np.testing.assert_array_equal(per_gene, (counts > 0).sum(axis=0))
        np.testing.assert_array_equal(rows.totals, counts[10:30].sum(axis=1))
        assert rows.values.sum() == counts[10:30].sum()


def test_clusters_without_pynndescent_are_seeded(monkeypatch):
    # three well-separated blobs; pynndescent (numba JIT) must not be needed
    monkeypatch.setitem(sys.modules, "pynndescent", None)
    rng = np.random.default_rng(0)
    truth = np.repeat([0, 1, 2], 120)
    latent = rng.normal(0, 0.3, (360, 5)) + 10 * np.eye(5)[truth]
    grouping = criticism.cluster_groups(latent, resolution=0.3, min_cells=10, seed=0)
    assert grouping.grouping == "clusters" and len(grouping.names) == 3
    assert len(set(zip(truth, grouping.codes, strict=True))) == 3  # one cluster per blob
    again = criticism.cluster_groups(latent, resolution=0.3, min_cells=10, seed=0)
    np.testing.assert_array_equal(grouping.codes, again.codes)
