"""Integration metrics (scib-metrics, model vs PCA): cell choice, label source, scores, card."""

from __future__ import annotations

import json
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from helpers import ROOT, rule_settings
from scvi_hub_workflow import integration
from scvi_hub_workflow.card import render_card
from scvi_hub_workflow.config import model_settings
from scvi_hub_workflow.figures import integration_scores, save_png
from scvi_hub_workflow.model_summary import summary_row
from test_card import inputs as card_inputs

# Few labels and batches: jax compiles the per-label metrics once per label size.
N_CELLS, N_LABELS, N_BATCHES, N_LATENT = 240, 3, 2, 8


def planted(seed=0):
    """Labels and batches drawn independently, so a latent can hold one and not the other."""
    rng = np.random.default_rng(seed)
    labels = np.array([f"type_{i}" for i in rng.integers(0, N_LABELS, N_CELLS)], dtype="U16")
    batches = np.array([f"batch_{i}" for i in rng.integers(0, N_BATCHES, N_CELLS)])
    return labels, batches


def pure(values, seed):
    """A latent made of the groups of ``values`` alone: group centres plus a little noise."""
    rng = np.random.default_rng(seed)
    codes = pd.Categorical(values).codes
    centres = rng.normal(scale=4.0, size=(codes.max() + 1, N_LATENT))
    return (centres[codes] + rng.normal(size=(len(values), N_LATENT))).astype(np.float32)


@pytest.fixture(scope="module")
def pure_scores():
    labels, batches = planted()
    embeddings = {"label": pure(labels, 1), "batch": pure(batches, 2)}
    return integration.score_embeddings(embeddings, labels, batches, baseline="batch")


@pytest.mark.slow  # jax compiles scib-metrics: ~20 s
def test_a_latent_of_pure_batch_scores_worse_than_one_of_pure_label(pure_scores):
    table = pure_scores.set_index("metric")
    for aggregate in ("total", "bio_conservation", "batch_correction"):
        assert table.loc[aggregate, "label"] > table.loc[aggregate, "batch"] + 0.2, aggregate
    # every metric that is not relative to the baseline ranks them the same way
    kinds = table[table["type"] != "Aggregate score"].drop(index="PCR comparison")
    assert (kinds["label"] > kinds["batch"]).all(), kinds
    assert set(table.loc[table["type"] == "Batch correction"].index) >= {"BRAS", "iLISI"}
    assert "KBET" not in table.index  # left out: integration.LEFT_OUT_METRICS


def test_like_for_like_aggregates_leave_out_pcr_comparison_for_both():
    rows = [
        ("cLISI", "Bio conservation", 0.9, 0.8),
        ("KMeans NMI", "Bio conservation", 0.7, 0.6),
        ("BRAS", "Batch correction", 0.8, 0.7),
        ("iLISI", "Batch correction", 0.4, 0.3),
        ("PCR comparison", "Batch correction", 0.9, 0.0),
        ("batch_correction", "Aggregate score", 0.7, 1.0 / 3),
        ("bio_conservation", "Aggregate score", 0.8, 0.7),
        ("total", "Aggregate score", 0.76, 0.42 + 0.4 / 3),
    ]
    table = pd.DataFrame(rows, columns=["metric", "type", "model", "pca"])
    full = integration.with_like_for_like(table, ["model", "pca"]).set_index("metric")
    assert full.loc["batch_correction_without_pcr", ["model", "pca"]].tolist() == pytest.approx(
        [0.6, 0.5]
    )
    assert full.loc["total_without_pcr", "model"] == pytest.approx(0.4 * 0.6 + 0.6 * 0.8)
    assert full.loc["total_without_pcr", "pca"] == pytest.approx(0.4 * 0.5 + 0.6 * 0.7)
    # with PCR comparison the gap is 0.37; like with like it is 0.1
    assert full.loc["batch_correction", "model"] - full.loc["batch_correction", "pca"] > 0.3
    contents = integration.aggregate_contents(full.reset_index())
    assert contents["batch_correction"] == "mean of BRAS, iLISI, PCR comparison"
    assert contents["batch_correction_without_pcr"] == "mean of BRAS, iLISI"
    assert contents["bio_conservation"] == "mean of cLISI, KMeans NMI"
    assert "0.4 x batch_correction_without_pcr" in contents["total_without_pcr"]
    assert set(integration.totals(full.reset_index(), "pca")) == set(integration.AGGREGATE_NAMES)


def obs_of(labels, batches):
    index = [f"cell_{i}" for i in range(len(labels))]
    return pd.DataFrame({"batch": batches, "cell_type": labels}, index=index)


def write_inputs(out, obs, latent, counts) -> None:
    """The two files the integration rule reads: the model's data (obs, latent means) and the
    HVG counts of the same cells."""
    ad.AnnData(obs=obs, obsm={"scanvi_latent_qzm": latent}).write_h5ad(out / "model.h5ad")
    ad.AnnData(X=sp.csr_matrix(counts), obs=obs).write_h5ad(out / "hvg.h5ad")


def test_cells_are_a_seeded_recorded_subsample_of_the_labelled_cells():
    labels, batches = planted()
    labels[:50] = "unknown"
    obs = obs_of(labels, batches)

    def choose(seed, max_cells=100):
        return integration.choose_cells(
            obs,
            batch_key="batch",
            labels=obs["cell_type"],
            unlabeled_category="unknown",
            max_cells=max_cells,
            seed=seed,
        )

    first, again, other = choose(0), choose(0), choose(1)
    assert np.array_equal(first.rows, again.rows) and not np.array_equal(first.rows, other.rows)
    assert len(first.rows) == 100 and (np.diff(first.rows) > 0).all() and first.rows.min() >= 50
    assert "unknown" not in set(first.labels)
    assert np.array_equal(first.labels, labels[first.rows])
    assert np.array_equal(first.batches, batches[first.rows])
    assert first.record == {
        "n_cells_model": N_CELLS,
        "n_cells_unlabelled": 50,
        "n_cells_labelled": N_CELLS - 50,
        "n_cells": 100,
        "max_cells": 100,
        "subsampled": True,
        "seed": 0,
        "n_batches": N_BATCHES,
        "n_labels": N_LABELS,
    }
    everything = choose(0, max_cells=10_000)
    assert np.array_equal(everything.rows, np.arange(50, N_CELLS))
    assert not everything.record["subsampled"]


def test_one_batch_among_the_scored_cells_is_skipped_naming_the_key():
    labels, _ = planted()
    obs = obs_of(labels, np.full(N_CELLS, "only"))
    cells = integration.choose_cells(
        obs,
        batch_key="batch",
        labels=obs["cell_type"],
        unlabeled_category=None,
        max_cells=100,
        seed=0,
    )
    assert "at least 2 batches (model.setup.batch_key 'batch')" in cells.skipped
    assert "in 1 batch ('only')" in cells.skipped
    one_label = obs_of(np.full(N_CELLS, "t"), planted()[1])
    cells = integration.choose_cells(
        one_label,
        batch_key="batch",
        labels=one_label["cell_type"],
        unlabeled_category=None,
        max_cells=100,
        seed=0,
    )
    assert "at least 2 labels" in cells.skipped


def test_labels_each_in_one_batch_are_skipped_before_scib_fails():
    # clusters that split by batch (a CITE-seq model's Leiden clusters): scib's batch
    # silhouette has no label to average over and fails on an empty list
    batches = np.repeat(["a", "b"], N_CELLS // 2)
    labels = np.where(batches == "a", "x", "y")
    cells = integration.unmeasurable(batches, labels, batch_key="model.setup.batch_key 'b'")
    assert "a label found in at least 2 batches (model.setup.batch_key 'b')" in cells
    labels[:3] = "y"  # one label in both batches: measurable
    assert integration.unmeasurable(batches, labels, batch_key="b") is None


def test_a_labelled_reference_beside_an_unlabelled_query_is_not_measured(tmp_path):
    # labels in one batch only: the labelled cells, which integration scores, have one batch
    labels, batches = planted()
    labels = np.where(batches == "batch_1", "unknown", labels)
    obs = obs_of(labels, batches)
    write_inputs(tmp_path, obs, pure(labels, 1), np.ones((N_CELLS, 5), dtype=np.float32))
    summary, table = run_integrate(tmp_path)
    assert summary["ran"] is False
    n_labelled = int((batches == "batch_0").sum())
    reason = summary["skipped_reason"]
    assert f"the {n_labelled} labelled cells are in 1 batch ('batch_0')" in reason
    assert summary["n_cells_unlabelled"] == int((batches == "batch_1").sum())
    assert table.empty and list(table.columns) == ["metric", "type", "model", "pca"]
    figure = integration_scores(table, summary)
    assert "Not computed" in figure.axes[0].texts[0].get_text()
    json.dumps(summary)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model data file (obs, latent means) and an HVG file (counts) of the same cells."""
    out = tmp_path_factory.mktemp("integration")
    labels, batches = planted()
    labels[:30] = "unknown"
    obs = obs_of(labels, batches)
    rng = np.random.default_rng(3)
    rates = rng.gamma(2.0, 1.0, size=(N_LABELS, 60))[pd.Categorical(planted()[0]).codes]
    rates *= rng.gamma(4.0, 0.25, size=(N_BATCHES, 60))[pd.Categorical(batches).codes]
    write_inputs(out, obs, pure(planted()[0], 1), rng.poisson(rates * 3).astype(np.float32))
    return out


def settings_for(rule, model_class="SCANVI", labels_key="cell_type", max_cells=200):
    """What `rule` declares, for a model of the test data with batches `batch`."""
    setup = {"batch_key": "batch", "labels_key": labels_key}
    if model_class == "SCANVI":
        setup["unlabeled_category"] = "unknown"
    entry = {
        "dataset": {"source": "builtin:simulated-atlas"},
        "model": {"class": model_class, "setup": setup},
        "criticism": {"integration_max_cells": max_cells},
        "train": {"seed": 0},
    }
    return rule_settings(model_settings({"models": {"m": entry}}, "m"), rule)


def run_integrate(files, labels=None, **settings):
    settings = settings_for("integration", **settings)
    return integration.integrate(files / "model.h5ad", files / "hvg.h5ad", settings, labels)


@pytest.mark.slow  # jax compiles scib-metrics: ~20 s
def test_integrate_reads_the_chosen_rows_and_scores_model_and_pca(files):
    summary, table = run_integrate(files, max_cells=150)
    assert summary["ran"] is True
    assert list(table.columns) == ["metric", "type", "model", "pca"]
    assert summary["label_source"] == "labels" and summary["labels_key"] == "cell_type"
    assert summary["n_cells"] == 150 and summary["n_cells_unlabelled"] == 30
    assert summary["subsampled"] and summary["seed"] == 0
    totals = table.set_index("metric").loc["total"]
    assert summary["total"]["total"] == pytest.approx(totals["model"])
    assert summary["total_pca"]["total"] == pytest.approx(totals["pca"])
    # the latent holds the labels and no batch: it integrates better than the counts' PCA
    assert summary["total"]["batch_correction"] > summary["total_pca"]["batch_correction"]
    model, pca = summary["metrics"]["model"], summary["metrics"]["pca"]
    assert pca["PCR comparison"] == 0  # the baseline is its own reference
    without = ("BRAS", "iLISI", "Graph connectivity")
    assert summary["total_pca"]["batch_correction_without_pcr"] == pytest.approx(
        np.mean([pca[m] for m in without])
    )
    assert summary["total"]["batch_correction_without_pcr"] == pytest.approx(
        np.mean([model[m] for m in without])
    )
    assert "PCR comparison" not in summary["aggregates"]["batch_correction_without_pcr"]
    assert set(summary["seconds"]) == {"read_and_pca", "scib"}
    json.dumps(summary)  # integration.json is plain JSON
    figure = integration_scores(table, summary)
    save_png(figure, files / "integration.png")
    assert (files / "integration.png").stat().st_size > 10_000


@pytest.mark.slow  # jax compiles scib-metrics: ~20 s
def test_without_labels_the_clusters_are_the_label_source(files):
    labels, _ = planted()
    clusters = pd.Series(pd.Categorical(labels).codes.astype(str))  # every cell has a cluster
    summary, _ = run_integrate(files, labels=clusters, labels_key=None, max_cells=1000)
    assert summary["label_source"] == "clusters" and summary["labels_key"] == "leiden"
    assert summary["n_cells"] == N_CELLS and summary["n_cells_unlabelled"] == 0


def test_clusters_each_in_one_batch_say_the_latent_keeps_batches_apart(files):
    _, batches = planted()
    clusters = pd.Series(np.asarray(batches, dtype=str))  # the latent's clusters are its batches
    summary, table = run_integrate(files, labels=clusters, labels_key=None, max_cells=1000)
    assert summary["ran"] is False and table.empty
    assert summary["skipped_reason"].endswith("the model's latent, which keeps batches apart")


def test_reading_is_refused_when_the_files_hold_other_cells(files, tmp_path):
    other = ad.read_h5ad(files / "hvg.h5ad")
    other.obs_names = [f"other_{i}" for i in range(other.n_obs)]
    other.write_h5ad(tmp_path / "hvg.h5ad")
    with pytest.raises(ValueError, match="same cells"):
        integration.integrate(
            files / "model.h5ad", tmp_path / "hvg.h5ad", settings_for("integration")
        )


SUMMARY = {
    "label_source": "labels",
    "labels_key": "cell_type",
    "batch_key": "batch",
    "n_cells_model": 1500,
    "n_cells_unlabelled": 150,
    "n_cells_labelled": 1350,
    "n_cells": 1000,
    "max_cells": 1000,
    "subsampled": True,
    "seed": 7,
    "n_batches": 3,
    "n_labels": 6,
    "total": {"total": 0.71, "bio_conservation": 0.8, "batch_correction": 0.58},
    "total_pca": {"total": 0.52, "bio_conservation": 0.7, "batch_correction": 0.25},
    "metrics": {
        "model": {"BRAS": 0.9, "total": 0.71},
        "pca": {"BRAS": 0.3, "total": 0.52},
    },
}


def test_card_section_says_source_cells_seed_and_baseline():
    card_in = card_inputs(labels_key="cell_type")
    card_in.checks["integration"] = SUMMARY
    card = render_card(card_in)
    assert "a random 1000 of the 1350 cells (seed 7" in card
    assert "the labels in 'cell_type' (150 unlabelled cells left out)" in card
    assert "0.71 for the model, 0.52 for the PCA" in card
    assert "| BRAS | 0.90 | 0.30 |" in card
    assert "| **Total** (aggregate) | 0.71 | 0.52 |" in card
    assert card.index("Integration") < card.index("# Model Properties")
    clusters = card_inputs()
    clusters.checks["integration"] = SUMMARY | {"label_source": "clusters", "labels_key": "leiden"}
    assert "Leiden clusters of the latent space ('leiden'" in render_card(clusters)
    assert "Not computed: the model was set up without a batch key" in render_card(card_inputs())


def test_card_compares_like_with_like_and_says_what_each_aggregate_contains():
    card_in = card_inputs(labels_key="cell_type")
    table = pd.DataFrame(
        [
            ("cLISI", "Bio conservation", 0.9, 0.8),
            ("BRAS", "Batch correction", 0.8, 0.7),
            ("PCR comparison", "Batch correction", 0.9, 0.0),
            ("batch_correction", "Aggregate score", 0.85, 0.35),
            ("bio_conservation", "Aggregate score", 0.9, 0.8),
            ("total", "Aggregate score", 0.88, 0.62),
        ],
        columns=["metric", "type", "model", "pca"],
    )
    table = integration.with_like_for_like(table, ["model", "pca"])
    summary = SUMMARY | {
        "aggregates": integration.aggregate_contents(table),
        "total": integration.totals(table, "model"),
        "total_pca": integration.totals(table, "pca"),
        "metrics": {e: dict(zip(table["metric"], table[e], strict=True)) for e in ("model", "pca")},
    }
    card_in.checks["integration"] = summary
    card = render_card(card_in)
    assert "like with like, without it: total 0.86 for the model, 0.76 for the PCA" in card
    assert "| **Total without PCR comparison** (aggregate) | 0.86 | 0.76 |" in card
    assert "- batch_correction_without_pcr: mean of BRAS" in card
    assert "- batch_correction: mean of BRAS, PCR comparison" in card


def test_card_says_why_integration_was_not_measured():
    card_in = card_inputs(labels_key="cell_type")
    reason = "integration needs at least 2 batches (model.setup.batch_key 'batch') among ..."
    card_in.checks["integration"] = {"ran": False, "skipped_reason": reason}
    assert f"Not computed: {reason}." in render_card(card_in)


def test_models_table_has_model_and_pca_totals():
    training = {"model_class": "SCVI", "n_cells": {"train": 9}, "epochs": 2}
    cv = {"cell_wise": {"validation": {"pearson": 0.7}}, "gene_wise": {"all": {"pearson": 0.9}}}
    row = summary_row("m", training, cv, {"groups": []}, {"integration": SUMMARY})
    assert (row["integration_total"], row["integration_total_pca"]) == (0.71, 0.52)
    like = SUMMARY | {
        "total": SUMMARY["total"] | {"total_without_pcr": 0.74},
        "total_pca": SUMMARY["total_pca"] | {"total_without_pcr": 0.69},
    }
    row = summary_row("m", training, cv, {"groups": []}, {"integration": like})
    assert row["integration_total_without_pcr"] == 0.74
    assert row["integration_total_pca_without_pcr"] == 0.69
    assert summary_row("m", training, cv, {"groups": []})["integration_total"] is None


# What every job other than the integration job imports: none of them may start jax, and
# importing the package changes neither the import machinery nor the environment.
OTHER_JOBS = """
import os, pkgutil, sys
import anndata, h5py, lightning, scanpy, torch  # their own import-time settings come first
before = (list(sys.meta_path), dict(os.environ))
import scvi_hub_workflow
for module in pkgutil.walk_packages(scvi_hub_workflow.__path__, "scvi_hub_workflow."):
    if not module.name.endswith("__main__"):
        __import__(module.name)
assert (list(sys.meta_path), dict(os.environ)) == before, "importing the package changed them"
from scvi_hub_workflow.compat import import_scvi
import_scvi()
import scvi.hub, scvi.model.base, scvi.distributions, scvi.utils, scvi.criticism, scanpy
assert not [f for f in sys.meta_path if "HiddenJax" in type(f).__name__], "jax stays hidden"
import numpy as np, scipy.stats
scipy.stats.pearsonr(np.arange(5.0), np.arange(5.0) ** 2)  # scipy looks for jax arrays
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "scib_metrics")
                and sys.modules[m] is not None)
print(loaded)
import jax  # the integration job can still import it
"""


@pytest.mark.slow  # imports scvi-tools in a fresh interpreter: ~10 s
def test_other_jobs_do_not_import_jax_or_scib_metrics():
    out = subprocess.run(
        [sys.executable, "-c", OTHER_JOBS],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_what_integration_can_measure_is_decided_from_dataset_json_before_training():
    from scvi_hub_workflow.checks import skip_reason

    def settings(labels_key="cell_type"):
        return settings_for("de_groups", model_class="SCVI", labels_key=labels_key)

    reference_query = {
        "batches": {"ref": 100, "query": 80},
        "n_cells_labelled": 100,
        "labelled_per_batch": {"ref": 100, "query": 0},
        "labels": {"B": 40, "T": 60},
    }
    reason = skip_reason("integration", reference_query, settings())
    assert "at least 2 batches (model.setup.batch_key 'batch')" in reason
    assert "the 100 labelled cells are in 1 batch ('ref')" in reason
    both = json.loads(json.dumps(reference_query))
    both["labelled_per_batch"]["query"] = 5
    assert skip_reason("integration", both, settings()) is None
    one_label = both | {"labels": {"B": 105}}
    assert "at least 2 labels" in skip_reason("integration", one_label, settings())
    assert skip_reason("integration", reference_query, settings(labels_key=None)) is None
