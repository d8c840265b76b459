"""Training SCVI / SCANVI from the config, and minifying the trained model."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .config import ModelSettings, TrainSettings, TrainStep
from .layout import PHASE_COLUMN, SPLIT_COLUMN, SPLIT_LABELS, latent_keys

log = logging.getLogger(__name__)


class AcceleratorError(RuntimeError):
    """A GPU was required (`train.accelerator: gpu`) but none is visible."""


def choose_accelerator(requested: str, allow_cpu_fallback: bool, cuda_available: bool) -> str:
    """The Lightning accelerator to train on, given the config and the machine."""
    if requested == "cpu":
        return "cpu"
    if cuda_available:
        return "gpu"
    if requested == "gpu" and not allow_cpu_fallback:
        raise AcceleratorError(
            "train.accelerator is 'gpu' but no CUDA GPU is visible to this job "
            "(CUDA_VISIBLE_DEVICES, driver, or a job without a GPU allocation?). "
            "Set train.accelerator: auto, or train.allow_cpu_fallback: true to train on the CPU."
        )
    if requested == "gpu":
        log.warning("no GPU visible; train.allow_cpu_fallback is true, so training on the CPU")
    return "cpu"


def models_missing_a_gpu(models: dict[str, ModelSettings], cuda_available: bool) -> list[str]:
    """Models whose training will fail on this machine: `accelerator: gpu` without fallback."""
    if cuda_available:
        return []
    return sorted(
        name
        for name, s in models.items()
        if s.train.accelerator == "gpu" and not s.train.allow_cpu_fallback
    )


def model_kwargs(params: dict, model_class: str) -> dict:
    """Constructor arguments; `linear_classifier` exists only for SCANVI."""
    kwargs = dict(params)
    if model_class != "SCANVI":
        kwargs.pop("linear_classifier", None)
    return kwargs


def train_kwargs(
    train: TrainSettings, accelerator: str, max_epochs: int | None, phase: str
) -> dict:
    """`model.train` arguments of one phase (training's phases, the query check's fine-tune)."""
    from .progress import ProgressLog

    kwargs = {
        "max_epochs": max_epochs,
        "accelerator": accelerator,
        "devices": 1 if accelerator == "gpu" else "auto",
        "train_size": train.train_size,
        "batch_size": train.batch_size,
        "early_stopping": train.early_stopping,
        "plan_kwargs": {"lr": train.learning_rate},
        # Progress bars fill job logs with carriage returns; history.tsv has the per-epoch values.
        "enable_progress_bar": False,
        "callbacks": [ProgressLog(phase)],
    }
    if train.early_stopping:
        kwargs["early_stopping_patience"] = train.early_stopping_patience
    return kwargs


def history_table(history: dict[str, pd.DataFrame], phase: str | None = None) -> pd.DataFrame:
    """One row per epoch, one column per logged quantity (ELBO, losses; train and validation).

    With ``phase``, a first column names the training phase (e.g. "scvi" pre-training, then
    "scanvi"), so the phases of one model stack into one table, each with its own epochs.
    """
    columns = [frame.iloc[:, 0].rename(name) for name, frame in history.items() if len(frame)]
    table = pd.concat(columns, axis=1) if columns else pd.DataFrame()
    table.index.name = "epoch"
    if phase is not None:
        table.insert(0, PHASE_COLUMN, phase)
    return table


def phase_summary(phase: str, model_class: str, history: dict[str, pd.DataFrame]) -> dict:
    """One training phase as summary.json records it: which model, how many epochs."""
    epochs = len(history.get("elbo_train", []))
    return {"phase": phase, "model_class": model_class, "epochs": epochs}


def train_model(adata: ad.AnnData, settings: TrainStep, cuda_available: bool | None = None):
    """Set up, build and train the configured model; return (model, summary dict).

    The model's own train/validation/test split is written to `adata.obs["split"]`, so it
    travels with the saved data and the posterior predictive check can use it.
    """
    import scvi
    import torch

    spec, train = settings.model, settings.train
    model_class = spec.model_class
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    accelerator = choose_accelerator(train.accelerator, train.allow_cpu_fallback, cuda)
    scvi.settings.seed = train.seed
    setup = spec.setup.setup_anndata_kwargs(model_class)
    params = model_kwargs(spec.params, model_class)
    started = time.perf_counter()
    histories, phases = [], []

    if model_class == "SCANVI" and spec.from_scvi:
        scvi_setup = {k: v for k, v in setup.items() if k != "unlabeled_category"}
        scvi.model.SCVI.setup_anndata(adata, **scvi_setup)
        scvi_params = {k: v for k, v in params.items() if k != "linear_classifier"}
        pretrained = scvi.model.SCVI(adata, **scvi_params)
        log.info("pre-training SCVI: %s", pretrained)
        pretrained.train(
            **train_kwargs(train, accelerator, train.scvi_max_epochs, "SCVI pre-training")
        )
        histories.append(history_table(pretrained.history, "scvi"))
        phases.append(phase_summary("scvi", "SCVI", pretrained.history))
        extra = (
            {"linear_classifier": params["linear_classifier"]}
            if "linear_classifier" in params
            else {}
        )
        model = scvi.model.SCANVI.from_scvi_model(
            pretrained, unlabeled_category=setup["unlabeled_category"], **extra
        )
    else:
        model_cls = getattr(scvi.model, model_class)
        model_cls.setup_anndata(adata, **setup)
        model = model_cls(adata, **params)

    log.info("training %s on %s: %s", model_class, accelerator, model)
    kwargs = train_kwargs(train, accelerator, train.max_epochs, model_class)
    if model_class == "SCANVI":
        kwargs["n_samples_per_label"] = train.n_samples_per_label
    model.train(**kwargs)
    histories.append(history_table(model.history, model_class.lower()))
    phases.append(phase_summary(model_class.lower(), model_class, model.history))
    device = str(model.device)
    log.info("trained on device %s", device)

    split = record_split(model, adata)

    summary = {
        "model_class": model_class,
        "from_scvi": spec.from_scvi,
        "accelerator": accelerator,
        "device": device,
        "cuda_available": bool(cuda),
        "gpu_name": torch.cuda.get_device_name(0) if accelerator == "gpu" else None,
        # epochs of the final model; `phases` lists every phase (SCVI pre-training first)
        "epochs": phases[-1]["epochs"],
        "phases": phases,
        "total_epochs": sum(p["epochs"] for p in phases),
        "seconds": round(time.perf_counter() - started, 3),
        "n_cells": {s: int((split == s).sum()) for s in SPLIT_LABELS},
        "scvi_version": scvi.__version__,
        # The registry records scvi-tools' version but not anndata's: the card reads it here.
        "anndata_version": ad.__version__,
        "torch_version": torch.__version__,
    }
    return model, pd.concat(histories), summary


def record_split(model, adata: ad.AnnData) -> np.ndarray:
    """Write the model's own train/validation/test split to `adata.obs["split"]`."""
    split = np.full(adata.n_obs, "test", dtype=object)
    split[np.asarray(model.train_indices)] = "train"
    split[np.asarray(model.validation_indices)] = "validation"
    adata.obs[SPLIT_COLUMN] = pd.Categorical(split, categories=list(SPLIT_LABELS))
    return split


def minify(model) -> tuple[str, str]:
    """Store the latent posterior (qzm, qzv) in the model's AnnData and minify it in place."""
    qzm_key, qzv_key = latent_keys(type(model).__name__)
    qzm, qzv = model.get_latent_representation(give_mean=False, return_dist=True)
    model.adata.obsm[qzm_key] = qzm
    model.adata.obsm[qzv_key] = qzv
    model.minify_adata(use_latent_qzm_key=qzm_key, use_latent_qzv_key=qzv_key)
    # SCANVI.from_scvi_model registers its data with use_minified=False. Saved as is, the model
    # reloads as if unminified and samples from the emptied X: every posterior sample is zero.
    # (The published Tabula Sapiens card shows that state: "use_minified": false.)
    setup_args = model.adata_manager._registry["setup_args"]
    if "use_minified" in setup_args:
        setup_args["use_minified"] = True
    return qzm_key, qzv_key


def minify_model(model_dir: str | Path, out_dir: str | Path) -> dict:
    """Load a trained model, minify it, and save it with its minified AnnData."""
    import scvi

    from .model_io import load_model
    from .rule_io import atomic_dir

    model = load_model(model_dir)
    keys = minify(model)
    with atomic_dir(out_dir) as tmp:
        model.save(str(tmp), overwrite=True, save_anndata=True)
        if load_model(tmp).minified_data_type is None:
            raise RuntimeError(f"{model_dir}: the saved model does not reload as minified")
    return {"latent_keys": list(keys), "scvi_version": scvi.__version__}
