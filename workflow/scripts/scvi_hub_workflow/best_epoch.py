"""How a training phase ended and which epoch's weights it kept (`train.keep_best_epoch`).

scvi-tools' early stopping and SaveCheckpoint watch the validation ELBO. That measures all a
model learns but a classifier: in SCANVI's phase the classifier's loss keeps falling long after
the ELBO stops improving, and with the KL warm-up starting again from zero the ELBO even gets
worse as the KL term grows (simulation, SCANVI from SCVI, 10 epochs: the best ELBO at epoch 5,
validation accuracy 0.75 there against 0.99 at epoch 10). Keeping the best-ELBO epoch published
a half-trained classifier (the query check's accuracy fell to 0.25). So a phase that trains a
classifier is judged by what it minimises with the KL at full weight: the validation ELBO plus
`classification_ratio` x the validation classification loss, for early stopping and for the
epoch kept alike.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from lightning.pytorch.callbacks import Callback

from .layout import VALIDATION_ELBO as ELBO

CLASSIFICATION_LOSS = "validation_classification_loss"
# the ELBO plus the classifier's weighted loss, on the validation cells
WITH_CLASSIFIER = "elbo_classification_validation"


def measure_name(has_classifier: bool) -> str:
    """What the card calls the measure."""
    return "validation ELBO + classification loss" if has_classifier else "validation ELBO"


class ClassifierObjective(Callback):
    """Adds `WITH_CLASSIFIER` to the metrics after each validation epoch of a semi-supervised
    phase. Early stopping and the checkpoint read the metrics at the same hook; this runs
    first (Lightning runs checkpoints last; scvi-tools appends its early stopping after the
    callbacks it is given)."""

    def on_validation_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        if ELBO not in metrics:
            return
        ratio = pl_module.loss_kwargs.get("classification_ratio") or 0.0
        loss = metrics.get(CLASSIFICATION_LOSS)
        metrics[WITH_CLASSIFIER] = metrics[ELBO] + (ratio * loss if loss is not None else 0.0)


def monitored(history: dict[str, pd.DataFrame], ratio: float | None) -> np.ndarray | None:
    """Per epoch, the validation measure the phase was judged by (`ratio`: the classifier's
    weight, None for a phase without one)."""
    elbo = history.get(ELBO)
    if elbo is None or not len(elbo):
        return None
    values = elbo.iloc[:, 0].to_numpy(dtype=float)
    loss = history.get(CLASSIFICATION_LOSS)
    if ratio and loss is not None and len(loss) == len(values):
        values = values + ratio * loss.iloc[:, 0].to_numpy(dtype=float)
    return values


def phase_end(
    history: dict[str, pd.DataFrame],
    *,
    stopped_early: bool,
    patience: int,
    diverged: bool = False,
    kept_best: bool,
    kl_weight: float | None,
    classification_ratio: float | None = None,
) -> dict:
    """Why a phase stopped, which epoch's weights it kept (counted from 1) and the KL weight
    it reached, as summary.json and the card record them."""
    measure = measure_name(bool(classification_ratio))
    epochs = len(history.get("elbo_train", []))
    if stopped_early and diverged:
        stopped = f"early stopping: the {measure} was not finite"
    elif stopped_early:
        stopped = f"early stopping: the {measure} did not improve for {patience} epochs"
    else:
        stopped = "max_epochs reached"
    end = {"stopped": stopped, "kept_epoch": epochs, "kept": "last epoch"}
    values = monitored(history, classification_ratio)
    if kept_best and values is not None:
        best = int(np.nanargmin(values))
        end |= {
            "kept_epoch": best + 1,
            "kept": f"best {measure}",
            "kept_value": float(values[best]),
        }
        end["kept_elbo_validation"] = float(history[ELBO].iloc[best, 0])
    if kl_weight is not None:
        end["final_kl_weight"] = round(kl_weight, 4)
    return end
