"""Training helpers that need no model: device choice, arguments, history."""

from __future__ import annotations

import pandas as pd
import pytest
from scvi_hub_workflow.config import model_settings
from scvi_hub_workflow.layout import latent_keys
from scvi_hub_workflow.model_kinds import KINDS
from scvi_hub_workflow.training import (
    AcceleratorError,
    choose_accelerator,
    history_table,
    phase_summary,
)


@pytest.mark.parametrize(
    ("requested", "fallback", "cuda", "expected"),
    [
        ("auto", False, True, "gpu"),
        ("auto", False, False, "cpu"),
        ("cpu", False, True, "cpu"),
        ("gpu", False, True, "gpu"),
        ("gpu", True, False, "cpu"),
    ],
)
def test_choose_accelerator(requested, fallback, cuda, expected):
    assert choose_accelerator(requested, fallback, cuda) == expected


def test_gpu_required_without_gpu_fails_clearly():
    with pytest.raises(AcceleratorError, match="train.allow_cpu_fallback"):
        choose_accelerator("gpu", False, False)


def test_setup_and_model_arguments_per_class():
    setup = model_settings(
        {
            "models": {
                "m": {
                    "dataset": {"source": "builtin:synthetic-iid"},
                    "model": {
                        "class": "SCANVI",
                        "setup": {"batch_key": "b", "labels_key": "l", "unlabeled_category": "u"},
                    },
                }
            }
        },
        "m",
    ).model.setup
    scvi, scanvi = KINDS["SCVI"], KINDS["SCANVI"]
    assert "unlabeled_category" not in setup.setup_anndata_kwargs(scvi)
    # SCANVI's labels first, as scvi-tools lists them (and the published cards record them)
    assert list(setup.setup_anndata_kwargs(scanvi))[:2] == ["labels_key", "unlabeled_category"]
    assert setup.setup_anndata_kwargs(scanvi)["unlabeled_category"] == "u"
    params = {"linear_classifier": True, "n_latent": 5}
    assert scvi.model_kwargs(params) == {"n_latent": 5}
    assert scanvi.model_kwargs(params) == params


def test_history_table_has_one_row_per_epoch():
    history = {
        "elbo_train": pd.DataFrame({"elbo_train": [3.0, 2.0]}),
        "elbo_validation": pd.DataFrame({"elbo_validation": [3.5, 2.5]}),
    }
    table = history_table(history)
    assert list(table.columns) == ["elbo_train", "elbo_validation"]
    assert len(table) == 2 and table.index.name == "epoch"


def test_history_of_two_phases_keeps_each_phase_and_its_epochs():
    scvi_history = {"elbo_train": pd.DataFrame({"elbo_train": [9.0, 8.0, 7.0]})}
    scvi_phase = history_table(scvi_history, "scvi")
    scanvi = history_table({"elbo_train": pd.DataFrame({"elbo_train": [6.0, 5.0]})}, "scanvi")
    table = pd.concat([scvi_phase, scanvi])
    assert list(table.columns) == ["phase", "elbo_train"]
    assert list(table["phase"]) == ["scvi"] * 3 + ["scanvi"] * 2
    assert list(table.index) == [0, 1, 2, 0, 1]  # each phase counts its own epochs
    assert phase_summary("scvi", "SCVI", {"elbo_train": [1, 2, 3]}, 5, False)["epochs"] == 3


def test_phase_summary_says_why_training_stopped():
    history = {"elbo_train": [1, 2, 3]}
    assert phase_summary("scvi", "SCVI", history, 5, True)["stopped"] == "early stopping"
    assert phase_summary("scvi", "SCVI", history, 3, True)["stopped"] == "max_epochs reached"
    assert phase_summary("scvi", "SCVI", history, 5, False)["stopped"] == "max_epochs reached"


def test_latent_keys_are_named_as_on_the_cards():
    assert latent_keys("SCANVI") == ("scanvi_latent_qzm", "scanvi_latent_qzv")
