"""Training a model of any registered class from its settings, and minifying it."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from .compat import import_scvi, mark_minified
from .layout import PHASE_COLUMN, SPLIT_COLUMN, SPLIT_LABELS, VALIDATION_ELBO, latent_keys
from .loaders import overall_speed, phase_speed, with_loader
from .model_io import scvi_class
from .model_kinds import kind_of
from .provenance import training_environment
from .settings import ModelSettings, TrainSettings

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


# The `train:` keys of scvi-tools' training plan; `train.scvi_plan` may set them for the
# pre-training phase.
PLAN_KEYS = (
    "learning_rate",
    "kl_warmup_epochs",
    "kl_warmup_steps",
    "weight_decay",
    "reduce_lr_on_plateau",
    "lr_factor",
    "lr_patience",
)


def plan_values(train: TrainSettings, overrides: dict | None = None) -> dict:
    """The plan keys of one phase: `train:`'s, with the phase's own (`scvi_plan`) over them."""
    return {key: getattr(train, key) for key in PLAN_KEYS} | dict(overrides or {})


def plan_kwargs(values: dict) -> dict:
    """scvi-tools' TrainingPlan arguments from a phase's plan keys; a key left null keeps
    scvi-tools' default (so the default config passes the learning rate only)."""
    kwargs = {"lr": values["learning_rate"]}
    if values.get("kl_warmup_steps") is not None:
        # scvi-tools uses the epochs whenever they are set, and they default to 400
        kwargs |= {"n_epochs_kl_warmup": None, "n_steps_kl_warmup": values["kl_warmup_steps"]}
    if values.get("kl_warmup_epochs") is not None:
        kwargs["n_epochs_kl_warmup"] = values["kl_warmup_epochs"]
    if values.get("weight_decay") is not None:
        kwargs["weight_decay"] = values["weight_decay"]
    if values.get("reduce_lr_on_plateau"):
        kwargs["reduce_lr_on_plateau"] = True
        kwargs["lr_scheduler_metric"] = VALIDATION_ELBO
        for key in ("lr_factor", "lr_patience"):
            if values.get(key) is not None:
                kwargs[key] = values[key]
    return kwargs


def train_kwargs(
    train: TrainSettings,
    accelerator: str,
    max_epochs: int | None,
    phase: str,
    plan: dict | None = None,
) -> dict:
    """`model.train` arguments of one phase (training's phases, the query check's fine-tune);
    `plan`: the phase's own plan keys over `train:`'s."""
    from .progress import ProgressLog

    kwargs = {
        "max_epochs": max_epochs,
        "accelerator": accelerator,
        "devices": 1 if accelerator == "gpu" else "auto",
        "train_size": train.train_size,
        "batch_size": train.batch_size,
        "early_stopping": train.early_stopping,
        "plan_kwargs": plan_kwargs(plan_values(train, plan)),
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


def phase_summary(
    phase: str,
    model_class: str,
    history: dict[str, pd.DataFrame],
    max_epochs: int | None,
    early_stopping: bool,
) -> dict:
    """One training phase as summary.json records it: which model, how many epochs, and why
    it stopped (with early stopping on, fewer epochs than allowed mean it ended training)."""
    epochs = len(history.get("elbo_train", []))
    if not early_stopping:
        stopped = "max_epochs reached"
    elif max_epochs is None:
        stopped = "early stopping or scvi-tools' default max_epochs"
    else:
        stopped = "max_epochs reached" if epochs >= max_epochs else "early stopping"
    return {
        "phase": phase,
        "model_class": model_class,
        "epochs": epochs,
        "max_epochs": max_epochs,
        "stopped": stopped,
    }


def train_phase(
    model, kwargs: dict, train: TrainSettings, has_latent: bool = True, classifier: bool = False
) -> dict:
    """Train one phase; return how it ended (`best_epoch.phase_end`). With early stopping and
    `train.keep_best_epoch`, the weights of the best validation epoch are restored at the end
    (scvi-tools' SaveCheckpoint with `load_best_on_end`; its checkpoints live in a temporary
    folder, removed afterwards). A phase that trains a `classifier` is judged by the validation
    ELBO plus the classifier's weighted loss (best_epoch.py says why)."""
    import_scvi()
    from scvi.train import SaveCheckpoint

    from .best_epoch import WITH_CLASSIFIER, ClassifierObjective, phase_end

    # the plan arguments its own train() takes (model_kinds) out of plan_kwargs
    kwargs = kind_of(type(model).__name__).train_arguments(with_loader(kwargs, model, train))
    monitor = VALIDATION_ELBO
    if classifier and kwargs.get("early_stopping"):
        monitor = WITH_CLASSIFIER
        kwargs = {**kwargs, "early_stopping_monitor": monitor}
        kwargs["callbacks"] = [*kwargs.get("callbacks", []), ClassifierObjective()]
    keep_best = bool(train.keep_best_epoch and kwargs.get("early_stopping"))
    with tempfile.TemporaryDirectory(prefix="scvi-hub-checkpoints-") as checkpoints:
        if keep_best:
            best = SaveCheckpoint(dirpath=checkpoints, monitor=monitor, load_best_on_end=True)
            kwargs = {**kwargs, "callbacks": [*kwargs.get("callbacks", []), best]}
        started = time.perf_counter()
        model.train(**kwargs)
        seconds = round(time.perf_counter() - started, 3)  # rates use the seconds recorded
    stopper = model.trainer.early_stopping_callback
    stopped_early = bool(getattr(stopper, "stopped_epoch", 0))
    # Lightning also stops on a validation ELBO that is not finite (a diverged model)
    diverged = "not finite" in str(getattr(stopper, "early_stopping_reason", "") or "")
    plan = model.trainer.lightning_module
    # a class without a latent space has no KL term, whatever its loss's signature says
    with_kl = has_latent and "kl_weight" in plan.loss_kwargs
    kl_weight = float(plan.kl_weight) if with_kl else None
    return phase_end(
        model.history,
        stopped_early=stopped_early,
        diverged=diverged,
        patience=train.early_stopping_patience,
        kept_best=keep_best,
        kl_weight=kl_weight,
        classification_ratio=(
            plan.loss_kwargs.get("classification_ratio") if monitor == WITH_CLASSIFIER else None
        ),
    ) | phase_speed(model, seconds)


def train_model(
    adata: ad.AnnData,
    settings: ModelSettings,
    cuda_available: bool | None = None,
    keep_latent: bool = False,
    pretrained_dir: str | Path | None = None,
):
    """Set up, build and train the configured model (`settings.model`, `.train`); return
    (model, history table, summary dict). With `keep_latent`, the latent posterior is stored in
    `adata.obsm` (when the trained model's folder is the one published: `published_folder`).

    A class that starts from a pre-trained model (`model.from_scvi: true`) first trains that
    class with the same settings; with `from_scvi: <model>`, it starts from that model, saved in
    `pretrained_dir`, and trains its own phase only. The model's own train/validation/test
    split is written to `adata.obs["split"]`, so it travels with the saved data and the
    criticism can use it.
    """
    scvi = import_scvi()
    import torch

    spec, train = settings.model, settings.train
    kind = spec.kind
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    accelerator = choose_accelerator(train.accelerator, train.allow_cpu_fallback, cuda)
    scvi.settings.seed = train.seed
    setup = spec.setup.setup_anndata_kwargs(kind)
    params = kind.model_kwargs(spec.params)
    started = time.perf_counter()
    histories, phases = [], []

    pretrained_from = None
    if kind.pretrained_from and spec.pretrained_model:
        base = kind_of(kind.pretrained_from)
        if pretrained_dir is None:
            raise ValueError(f"model.from_scvi names {spec.pretrained_model!r}: its model folder")
        # loading onto this model's data checks that the genes are the same, in order
        pretrained = scvi_class(base).load(str(pretrained_dir), adata=adata)
        pretrained_from = {
            "model": spec.pretrained_model,
            "phase": base.name.lower(),
            "model_class": base.name,
            "epochs": len(pretrained.history.get("elbo_train", [])),
        }
        log.info("starting from the %s model %r: %s", base.name, spec.pretrained_model, pretrained)
    elif kind.pretrained_from and spec.from_scvi:
        base = kind_of(kind.pretrained_from)
        base_cls = scvi_class(base)
        base_cls.setup_anndata(adata, **{k: v for k, v in setup.items() if k in base.setup_keys})
        pretrained = base_cls(adata, **base.model_kwargs(spec.params))
        log.info("pre-training %s: %s", base.name, pretrained)
        kwargs = train_kwargs(
            train, accelerator, train.scvi_max_epochs, f"{base.name} pre-training", train.scvi_plan
        )
        end = train_phase(pretrained, kwargs, train)
        phase = base.name.lower()
        histories.append(history_table(pretrained.history, phase))
        phases.append(
            phase_summary(
                phase, base.name, pretrained.history, train.scvi_max_epochs, train.early_stopping
            )
            | end
        )
    if kind.pretrained_from and spec.from_scvi:
        # this class's own setup keys and constructor parameters, on top of the pre-trained model
        own_setup = {k: v for k, v in setup.items() if k not in base.setup_keys}
        if pretrained_from:
            # a model trained without this class's labels: they are set up here
            own_setup |= {k: v for k, v in setup.items() if k in kind.required_setup}
        own_params = {k: v for k, v in params.items() if k not in base.params}
        model = scvi_class(kind).from_scvi_model(pretrained, **own_setup, **own_params)
    else:
        model_cls = scvi_class(kind)
        model_cls.setup_anndata(adata, **setup)
        model = model_cls(adata, **params)

    log.info("training %s on %s: %s", kind.name, accelerator, model)
    kwargs = train_kwargs(train, accelerator, train.max_epochs, kind.name)
    kwargs.update({key: getattr(train, key) for key in kind.train_extras})
    end = train_phase(
        model, kwargs, train, has_latent=kind.has_latent, classifier=kind.has_classifier
    )
    histories.append(history_table(model.history, kind.name.lower()))
    phases.append(
        phase_summary(
            kind.name.lower(), kind.name, model.history, train.max_epochs, train.early_stopping
        )
        | end
    )
    device = str(model.device)
    log.info("trained on device %s", device)

    split = record_split(model, adata)
    if keep_latent and kind.has_latent:
        store_latent(model)

    summary = {
        "model_class": kind.name,
        "from_scvi": spec.from_scvi,
        # with `from_scvi: <model>`: that model and its epochs (not trained in this job)
        **({"pretrained_model": pretrained_from} if pretrained_from else {}),
        "accelerator": accelerator,
        "device": device,
        "cuda_available": bool(cuda),
        "gpu_name": torch.cuda.get_device_name(0) if accelerator == "gpu" else None,
        # epochs of the final model; `phases` lists every phase (SCVI pre-training first)
        "epochs": phases[-1]["epochs"],
        "phases": phases,
        "total_epochs": sum(p["epochs"] for p in phases),
        "seconds": round(time.perf_counter() - started, 3),
        **overall_speed(phases, train),  # cells_per_second and the loader settings
        "n_cells": {s: int((split == s).sum()) for s in SPLIT_LABELS},
        "scvi_version": scvi.__version__,
        # The registry records scvi-tools' version but not anndata's: the card reads it here.
        "anndata_version": ad.__version__,
        "torch_version": torch.__version__,
        "seed": train.seed,
        # the workflow's commit, software, CPU threads and date, for provenance.json
        "environment": training_environment(),
    }
    return model, pd.concat(histories), summary


def record_split(model, adata: ad.AnnData) -> np.ndarray:
    """Write the model's own train/validation/test split to `adata.obs["split"]`."""
    split = np.full(adata.n_obs, "test", dtype=object)
    split[np.asarray(model.train_indices)] = "train"
    split[np.asarray(model.validation_indices)] = "validation"
    adata.obs[SPLIT_COLUMN] = pd.Categorical(split, categories=list(SPLIT_LABELS))
    return split


def store_latent(model) -> tuple[str, str]:
    """Store the latent posterior (qzm, qzv) in the model's AnnData, under the cards' keys."""
    qzm_key, qzv_key = latent_keys(type(model).__name__)
    qzm, qzv = model.get_latent_representation(give_mean=False, return_dist=True)
    model.adata.obsm[qzm_key] = qzm
    model.adata.obsm[qzv_key] = qzv
    return qzm_key, qzv_key


def minify(model) -> tuple[str, str]:
    """Store the latent posterior (qzm, qzv) in the model's AnnData and minify it in place."""
    qzm_key, qzv_key = store_latent(model)
    model.minify_adata(use_latent_qzm_key=qzm_key, use_latent_qzv_key=qzv_key)
    mark_minified(model)
    return qzm_key, qzv_key


def minify_model(model_dir: str | Path, out_dir: str | Path) -> dict:
    """Load a trained model, minify it, and save it with its minified AnnData."""
    scvi = import_scvi()

    from .model_io import load_model
    from .rule_io import atomic_dir

    model = load_model(model_dir)
    keys = minify(model)
    with atomic_dir(out_dir) as tmp:
        model.save(str(tmp), overwrite=True, save_anndata=True)
        if load_model(tmp).minified_data_type is None:
            raise RuntimeError(f"{model_dir}: the saved model does not reload as minified")
    return {"latent_keys": list(keys), "scvi_version": scvi.__version__}
