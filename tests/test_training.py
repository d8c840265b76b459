"""Training: device choice, arguments, history, and a model starting from another."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import rule_settings
from scvi_hub_workflow.config import model_settings, resolve
from scvi_hub_workflow.layout import latent_keys
from scvi_hub_workflow.model_kinds import KINDS
from scvi_hub_workflow.training import (
    AcceleratorError,
    choose_accelerator,
    history_table,
    phase_summary,
    train_model,
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


@pytest.mark.slow
def test_scanvi_from_a_named_scvi_model_trains_its_own_phase_only(tmp_path, monkeypatch):
    import scvi

    cfg = {
        "models": {
            name: {
                "dataset": {"source": "builtin:synthetic-iid"},
                "model": model,
                "train": {"max_epochs": 2, "accelerator": "cpu"},
            }
            for name, model in (
                ("base", {"class": "SCVI", "params": {"n_hidden": 16, "n_latent": 3}}),
                (
                    "labelled",
                    {
                        "class": "SCANVI",
                        "from_scvi": "base",
                        "every_cell_labelled": True,
                        "params": {"n_hidden": 16, "n_latent": 3},
                        "setup": {"labels_key": "labels", "unlabeled_category": "unknown"},
                    },
                ),
            )
        }
    }
    models = resolve(cfg)
    adata = scvi.data.synthetic_iid(batch_size=60, n_genes=30, n_batches=1, n_labels=3)
    adata.obs["labels"] = adata.obs["labels"].astype(str).astype("category")
    base, _, _ = train_model(adata.copy(), rule_settings(models["base"], "train"))
    base.save(str(tmp_path / "base"), save_anndata=True)

    def no_scvi_training(*args, **kwargs):
        raise AssertionError("the SCVI model was trained again")

    monkeypatch.setattr(scvi.model.SCVI, "train", no_scvi_training)
    settings = rule_settings(models["labelled"], "train")
    model, history, summary = train_model(adata.copy(), settings, pretrained_dir=tmp_path / "base")
    assert type(model).__name__ == "SCANVI"
    assert [p["phase"] for p in summary["phases"]] == ["scanvi"]
    assert set(history["phase"]) == {"scanvi"}
    assert summary["pretrained_model"] == {
        "model": "base",
        "phase": "scvi",
        "model_class": "SCVI",
        "epochs": 2,
    }
    with pytest.raises(ValueError, match="model folder"):
        train_model(adata.copy(), settings)


@pytest.mark.parametrize("keep_best_epoch", [True, False])
def test_early_stopping_publishes_the_best_validation_epoch(keep_best_epoch):
    import scvi

    # a learning rate this high makes the validation ELBO get worse after a few epochs
    train = {"max_epochs": 10, "accelerator": "cpu", "learning_rate": 0.3}
    train |= {"early_stopping_patience": 3, "kl_warmup_epochs": 0}
    train["keep_best_epoch"] = keep_best_epoch
    cfg = {
        "models": {
            "m": {
                "dataset": {"source": "builtin:synthetic-iid"},
                "model": {"class": "SCVI", "params": {"n_hidden": 16, "n_latent": 3}},
                "train": train,
            }
        }
    }
    settings = rule_settings(resolve(cfg)["m"], "train")
    scvi.settings.seed = 0
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=40, n_batches=1)
    model, history, summary = train_model(adata, settings)
    (phase,) = summary["phases"]
    validation = history["elbo_validation"].astype(float).to_numpy()
    assert phase["epochs"] == len(validation) < 10
    assert phase["stopped"].startswith("early stopping: the validation ELBO")
    assert phase["final_kl_weight"] == 1.0  # no warm-up
    # the published model's validation ELBO is that of the epoch it says it kept
    published = -float(model.get_elbo(indices=model.validation_indices))
    best = int(np.nanargmin(validation))
    assert best + 1 < len(validation)  # the last epoch is not the best
    if keep_best_epoch:
        assert phase["kept_epoch"] == best + 1 and phase["kept"] == "best validation ELBO"
        assert published == pytest.approx(validation[best], rel=0.05)
    else:
        assert phase["kept_epoch"] == len(validation) and phase["kept"] == "last epoch"
        assert published == pytest.approx(validation[-1], rel=0.05)


def test_the_training_plan_keys_become_scvi_tools_plan_arguments():
    from scvi_hub_workflow.training import plan_kwargs, plan_values

    cfg = {"models": {"m": {"dataset": {"source": "x.h5ad"}, "model": {"class": "SCVI"}}}}
    train = model_settings(cfg, "m").train
    # the default config passes the learning rate only: scvi-tools' own plan otherwise
    assert plan_kwargs(plan_values(train)) == {"lr": 0.001}
    train = train.replace(kl_warmup_epochs=100, weight_decay=0.0, reduce_lr_on_plateau=True)
    assert plan_kwargs(plan_values(train)) == {
        "lr": 0.001,
        "n_epochs_kl_warmup": 100,
        "weight_decay": 0.0,
        "reduce_lr_on_plateau": True,
        "lr_scheduler_metric": "elbo_validation",
    }
    # a phase's own keys over the model's; steps replace scvi-tools' epoch warm-up
    phase = plan_values(train, {"kl_warmup_epochs": None, "kl_warmup_steps": 500, "lr_factor": 0.5})
    assert plan_kwargs(phase) == {
        "lr": 0.001,
        "n_epochs_kl_warmup": None,
        "n_steps_kl_warmup": 500,
        "weight_decay": 0.0,
        "reduce_lr_on_plateau": True,
        "lr_scheduler_metric": "elbo_validation",
        "lr_factor": 0.5,
    }


def test_a_class_whose_train_sets_its_plan_gets_the_plan_keys_as_its_arguments():
    """TOTALVI's train() sets the learning rate, the LR schedule and the KL warm-up over
    plan_kwargs from its own arguments (with their defaults when left out)."""
    kwargs = {
        "max_epochs": 3,
        "plan_kwargs": {"lr": 0.01, "n_epochs_kl_warmup": 5, "weight_decay": 0.0},
    }
    moved = KINDS["TOTALVI"].train_arguments(kwargs)
    assert moved["plan_kwargs"] == {"weight_decay": 0.0}
    assert (moved["lr"], moved["n_epochs_kl_warmup"]) == (0.01, 5)
    # its default reduce_lr_on_plateau is on: off in the config is passed as off
    assert moved["reduce_lr_on_plateau"] is False
    assert KINDS["CondSCVI"].train_arguments(kwargs) == {
        "max_epochs": 3,
        "plan_kwargs": {"n_epochs_kl_warmup": 5, "weight_decay": 0.0},
        "lr": 0.01,
    }
    assert KINDS["SCVI"].train_arguments(kwargs) == kwargs


@pytest.mark.slow
def test_totalvi_trains_with_the_configured_plan_and_keeps_its_proteins():
    from scvi_hub_workflow.builtin_datasets import simulated_citeseq

    adata = simulated_citeseq(n_cells=200, n_genes=60, n_proteins=8, seed=3)
    entry = {
        "dataset": {"source": "builtin:simulated-citeseq"},
        "model": {
            "class": "TOTALVI",
            "params": {"n_hidden": 16, "n_latent": 3},
            "setup": {"protein_expression_obsm_key": "protein_expression", "batch_key": "batch"},
        },
        "train": {
            "max_epochs": 2,
            "kl_warmup_epochs": 4,
            "learning_rate": 0.002,
            "reduce_lr_on_plateau": False,
            "accelerator": "cpu",
        },
    }
    settings = rule_settings(resolve({"models": {"m": entry}})["m"], "train")
    model, _, summary = train_model(adata, settings, cuda_available=False)
    plan = model.trainer.lightning_module
    assert (plan.n_epochs_kl_warmup, plan.lr, plan.reduce_lr_on_plateau) == (4, 0.002, False)
    # two of four warm-up epochs
    assert summary["phases"][-1]["final_kl_weight"] == pytest.approx(0.5, abs=0.01)
    assert model.summary_stats.n_proteins == 8


# A SCANVI phase as measured on the simulation (SCANVI from SCVI, 10 epochs): the validation
# ELBO is best at epoch 5, while the classifier's loss keeps falling to epoch 10.
ELBO_BY_EPOCH = [594.7, 596.7, 594.8, 593.4, 593.3, 593.9, 594.6, 595.1, 596.4, 596.3]
CLASSIFIER_LOSS_BY_EPOCH = [1.62, 1.20, 0.87, 0.72, 0.59, 0.31, 0.23, 0.08, 0.09, 0.05]


def test_a_classifier_phase_keeps_the_epoch_best_with_its_classifier():
    from scvi_hub_workflow.best_epoch import phase_end

    history = {
        "elbo_train": pd.DataFrame({"elbo_train": ELBO_BY_EPOCH}),
        "elbo_validation": pd.DataFrame({"elbo_validation": ELBO_BY_EPOCH}),
        "validation_classification_loss": pd.DataFrame({"c": CLASSIFIER_LOSS_BY_EPOCH}),
    }
    common = {"stopped_early": False, "patience": 45, "kept_best": True, "kl_weight": 0.02}
    # the ELBO alone keeps epoch 5, whose classifier is half trained
    assert phase_end(history, **common)["kept_epoch"] == 5
    end = phase_end(history, **common, classification_ratio=50)
    assert (
        end["kept_epoch"] == 9 + 1 and end["kept"] == "best validation ELBO + classification loss"
    )
    assert end["kept_value"] == pytest.approx(596.3 + 50 * 0.05)
    assert end["kept_elbo_validation"] == 596.3


@pytest.mark.slow
def test_scanvi_phase_is_stopped_and_kept_by_elbo_and_classifier_loss():
    import scvi

    cfg = {
        "models": {
            "m": {
                "dataset": {"source": "builtin:synthetic-iid"},
                "model": {
                    "class": "SCANVI",
                    "from_scvi": True,
                    "params": {"n_hidden": 16, "n_latent": 3},
                    "setup": {"labels_key": "labels", "unlabeled_category": "unknown"},
                },
                "train": {"scvi_max_epochs": 2, "max_epochs": 4, "accelerator": "cpu"},
            }
        }
    }
    settings = rule_settings(resolve(cfg)["m"], "train")
    assert settings.train.keep_best_epoch and settings.train.early_stopping  # the defaults
    scvi.settings.seed = 0
    adata = scvi.data.synthetic_iid(batch_size=100, n_genes=40, n_batches=1, n_labels=3)
    model, history, summary = train_model(adata, settings)
    scvi_phase, scanvi_phase = summary["phases"]
    assert scvi_phase["kept"] == "best validation ELBO"
    assert scanvi_phase["kept"] == "best validation ELBO + classification loss"
    own = history[history["phase"] == "scanvi"]
    measure = own["elbo_validation"] + 50 * own["validation_classification_loss"]
    assert scanvi_phase["kept_epoch"] == int(np.argmin(measure.to_numpy(float))) + 1
