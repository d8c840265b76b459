"""The reference/query design end to end: labels in one batch, an unlabelled query batch, SCANVI
from SCVI. Every check measures what the data allow, says what it skipped and why, and the run
ends in a card and a hub folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from helpers import snakemake
from scvi_hub_workflow.builtin_datasets import simulated_atlas
from scvi_hub_workflow.layout import HUB_FILES

pytestmark = pytest.mark.slow  # trains SCANVI from SCVI and a query reference: ~2 min


def reference_and_query(path) -> None:
    """A labelled reference batch and an unlabelled query batch (the planted truth kept)."""
    adata = simulated_atlas(n_cells=500, n_genes=120, n_batches=2, seed=5)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    labels[(adata.obs["batch"] == "batch_1").to_numpy()] = "unknown"
    adata.obs["cell_type"] = labels
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    adata.write_h5ad(path)


@pytest.fixture(scope="module")
def refquery_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("refquery")
    reference_and_query(workdir / "refquery.h5ad")
    cfg = {
        "models": {
            "refquery": {
                "description": "SCANVI from SCVI, labels in the reference batch only.",
                "dataset": {"source": "refquery.h5ad"},
                "model": {
                    "class": "SCANVI",
                    "from_scvi": True,
                    "params": {"n_hidden": 16, "n_latent": 4},
                    "setup": {
                        "batch_key": "batch",
                        "labels_key": "cell_type",
                        "unlabeled_category": "unknown",
                    },
                },
                "hvg": {"n_top_genes": None},
                "train": {"scvi_max_epochs": 2, "max_epochs": 2, "accelerator": "cpu"},
                "criticism": {"n_samples": 2, "min_cells": 5, "query_epochs": 2},
            }
        }
    }
    (workdir / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    result = snakemake("--cores", "2", "--configfile", str(workdir / "cfg.yaml"), workdir=workdir)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


def test_a_reference_query_config_ends_in_a_card_and_a_hub_folder(refquery_run):
    hub = refquery_run / "results/refquery/hub"
    assert sorted(p.name for p in hub.iterdir()) == sorted(HUB_FILES)


def test_integration_is_skipped_with_its_reason_on_the_card(refquery_run):
    results = refquery_run / "results/refquery"
    integration = json.loads((results / "criticism/integration.json").read_text())
    assert integration["ran"] is False
    assert "at least 2 batches" in integration["skipped_reason"]
    card = (results / "card/README.md").read_text()
    assert "Integration" in card and integration["skipped_reason"] in card


def test_the_query_check_holds_out_the_unlabelled_batch_and_skips_label_metrics(refquery_run):
    results = refquery_run / "results/refquery"
    check = json.loads((results / "criticism/query_check.json").read_text())
    assert check["ran"] is True and check["query_batch"] == "batch_1"
    # decided before training, from dataset.json, and read by the check's job
    plan = json.loads((results / "criticism/query_plan.json").read_text())
    assert plan == {"ran": True, "query_batch": "batch_1", "n_query_cells": check["n_query_cells"]}
    assert (
        "holding out batch 'batch_1'" in (refquery_run / "logs/refquery/query_plan.log").read_text()
    )
    assert np.isfinite(check["knn_overlap"])
    # no labelled query cells: no agreement with labels, and the record says why
    assert check["label_agreement"] is None and check["classifier"] is None
    assert "no labelled cells" in check["skipped"]["classifier"]
    # the planted truth of the simulation still scores the classifier
    assert check["classifier_vs_truth"]["n_cells"] == check["n_query_cells"]
    card = (results / "card/README.md").read_text()
    assert check["skipped"]["classifier"] in card
