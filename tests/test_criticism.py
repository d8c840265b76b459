"""Streaming posterior predictive check: equals the in-memory definitions, and the rule scripts."""

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from scvi_hub_workflow import criticism, metrics
from scvi_hub_workflow.wilcoxon import wilcoxon_one_vs_rest

pytest_plugins = ["conftest_criticism"]

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
        accumulator.add(start, stop, observed[start:stop], samples[:, start:stop])


def test_streamed_cv_equals_in_memory_definition():
    observed, samples, splits = _arrays()
    cv = criticism.CoefficientOfVariation(splits, len(samples), observed.shape[1])
    _feed(cv, observed, samples)
    result = cv.result()
    for split in ("train", "validation"):
        mask = splits == split
        expected = metrics.compare_cv(
            metrics.cell_wise_cv(samples[:, mask]), metrics.cell_wise_cv(observed[mask])
        )
        assert result["cell_wise"][split] == pytest.approx(expected | {"n_cells": mask.sum()})
    for split in ("all", "train", "validation"):
        mask = np.ones(len(splits), bool) if split == "all" else splits == split
        expected = metrics.compare_cv(
            metrics.gene_wise_cv(samples[:, mask]), metrics.gene_wise_cv(observed[mask])
        )
        assert result["gene_wise"][split] == pytest.approx(expected | {"n_genes": 40})


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
    # a tiny memory budget forces many gene chunks in the disk store
    de = criticism.DifferentialExpression(groups, 3, len(samples), 50, tmp_path, 48 * 2000)
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


def _run_rule(script, *, input, output, settings, log):
    snakemake = SimpleNamespace(
        input=_Files(**input),
        output=_Files(**output),
        params=SimpleNamespace(settings=settings),
        log=[str(log)],
    )
    runpy.run_path(str(SCRIPTS / script), init_globals={"snakemake": snakemake})


def _engine_samples(model_dir, n_samples, batch_size, seed):
    model = criticism.load_minified_model(model_dir)
    blocks = criticism.posterior_predictive_blocks(
        model, n_samples=n_samples, batch_size=batch_size, seed=seed
    )
    return model, np.concatenate([b for _, _, b in blocks], axis=1)


RULE_SETTINGS = {
    "layer": None,
    "unlabeled_category": None,
    "n_samples": 2,
    "batch_size": 100,
    "seed": 3,
    "alpha": 0.05,
    "top_n": 10,
    "min_cells": 10,
    "cluster_resolution": 0.5,
}


def _run_check(minified_model, tmp_path, labels_key):
    output = {
        "cv": str(tmp_path / "cv.json"),
        "de_table": str(tmp_path / "de.tsv"),
        "de_summary": str(tmp_path / "de.json"),
    }
    _run_rule(
        "posterior_predictive_check.py",
        input={"model": str(minified_model / "minified"), "data": str(minified_model / "hvg.h5ad")},
        output=output,
        settings=RULE_SETTINGS | {"labels_key": labels_key},
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
        expected = metrics.compare_cv(
            metrics.cell_wise_cv(samples[:, mask]), metrics.cell_wise_cv(observed[mask])
        )
        assert result["cell_wise"][split] == pytest.approx(expected | {"n_cells": mask.sum()})
    expected = metrics.compare_cv(metrics.gene_wise_cv(samples), metrics.gene_wise_cv(observed))
    assert result["gene_wise"]["all"] == pytest.approx(expected | {"n_genes": 80})
    assert result["gene_wise"]["train"]["n_genes"] == 80


@pytest.mark.parametrize("labels_key", ["cell_type", None])
def test_posterior_predictive_check_rule_de(minified_model, tmp_path, labels_key):
    _run_check(minified_model, tmp_path, labels_key)
    table = pd.read_csv(tmp_path / "de.tsv", sep="\t")
    assert list(table.columns) == list(metrics.DE_COLUMNS)
    assert (np.diff(table["n_cells"]) <= 0).all() and (table["n_cells"] >= 10).all()
    summary = json.loads((tmp_path / "de.json").read_text())
    expected_grouping = "labels" if labels_key else "clusters"
    assert summary["grouping"] == expected_grouping and summary["test"] == "wilcoxon"
    assert summary["alpha"] == 0.05 and summary["top_n"] == 10 and summary["n_samples"] == 2
    assert [row["group"] for row in summary["groups"]] == table["group"].astype(str).tolist()
    if labels_key:
        assert sorted(table["group"]) == ["type_0", "type_1", "type_2", "type_3"]
        assert table["n_cells"].sum() == 360
        assert ((table["gene_f1"] >= 0) & (table["gene_f1"] <= 1)).all()


def test_counts_from_a_layer(minified_model_with_layer, tmp_path):
    model = criticism.load_minified_model(minified_model_with_layer / "minified")
    data = minified_model_with_layer / "hvg.h5ad"
    with criticism.ObservedCounts(data, "counts") as observed:
        assert observed.dense_rows(0, 200).sum() > 0
    with criticism.ObservedCounts(data) as observed:
        assert observed.dense_rows(0, 200).sum() == 0  # X is empty in this file
    result = criticism.coefficient_of_variation_check(
        model, data, layer="counts", n_samples=1, batch_size=64, seed=0
    )
    assert result["cell_wise"]["train"]["n_cells"] > 0
    assert np.isfinite(result["cell_wise"]["train"]["mae"])


def test_mismatched_counts_are_refused(minified_model, minified_model_with_layer):
    model = criticism.load_minified_model(minified_model / "minified")
    with pytest.raises(ValueError, match="do not match"):
        criticism.coefficient_of_variation_check(
            model,
            minified_model_with_layer / "hvg.h5ad",
            layer="counts",
            n_samples=1,
            batch_size=64,
            seed=0,
        )


def test_single_pass_equals_the_two_checks(minified_model):
    model = criticism.load_minified_model(minified_model / "minified")
    data = minified_model / "hvg.h5ad"
    grouping = criticism.resolve_groups(
        model, labels_key="cell_type", unlabeled_category=None, min_cells=10, cluster_resolution=1
    )
    settings = {"layer": None, "n_samples": 2, "batch_size": 90, "seed": 5}
    cv, table, summary = criticism.criticise(model, data, grouping, **settings, alpha=0.1, top_n=5)
    assert cv == criticism.coefficient_of_variation_check(model, data, **settings)
    separate, _ = criticism.differential_expression_check(
        model, data, grouping, **settings, alpha=0.1, top_n=5
    )
    pd.testing.assert_frame_equal(table, separate)
    assert summary["groups_key"] == "cell_type"
