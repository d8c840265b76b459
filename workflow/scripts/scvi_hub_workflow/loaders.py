"""How training feeds cells to the model: scvi-tools' data-loader levers as `model.train()`
arguments.

scvi-tools' training on a GPU is bound by the data loader (indexing the AnnData, densifying each
sparse minibatch, copying it to the GPU) and by the number of steps, more than by arithmetic.
The levers, all off by default (scvi-tools' own defaults):

- `pin_memory`: minibatches in page-locked host memory, so the copy to the GPU is asynchronous.
- `num_workers` / `persistent_workers`: minibatches prepared by worker processes, kept alive
  between epochs instead of being forked anew each epoch.
- `data_on_device`: scvi-tools' DeviceBackedDataSplitter copies the whole training and
  validation matrix to the device once (dense: cells x genes x 4 bytes) and draws minibatches
  there; no per-batch host work at all.
- `load_sparse_tensor`: minibatches travel as sparse CSR tensors and are densified on the
  device (scvi-tools marks it experimental).

The last two exist for models trained through scvi-tools' plain DataSplitter (SCVI) only:
SCANVI's semi-supervised splitter has no device-backed variant and does not densify.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from .compat import import_scvi, max_epochs_heuristic
from .config import loader_problems
from .model_kinds import kind_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoaderSettings:
    pin_memory: bool = False
    num_workers: int = 0
    persistent_workers: bool = False
    data_on_device: bool = False
    load_sparse_tensor: bool = False

    def __post_init__(self):
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        problems = loader_problems(dataclasses.asdict(self))
        if problems:
            raise ValueError("; ".join(f"{key}: {why}" for key, why in problems))

    @classmethod
    def of(cls, train) -> LoaderSettings:
        """The loader keys of a model's `train:` settings."""
        return cls(**{f.name: getattr(train, f.name) for f in dataclasses.fields(cls)})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def supports_device_loaders(model) -> bool:
    """Whether `data_on_device` and `load_sparse_tensor` apply to the model's class: it trains
    through scvi-tools' plain DataSplitter (the model-kind registry says)."""
    return kind_of(type(model).__name__).device_loaders


def loader_train_kwargs(
    loader: LoaderSettings,
    model,
    *,
    accelerator: str,
    batch_size: int,
    train_size: float | None,
    max_epochs: int | None,
) -> dict:
    """The `model.train()` arguments that select the loader, to merge over the other training
    arguments. With `data_on_device` that is a `datamodule`, which replaces train()'s own
    train_size/batch_size handling, so both are passed into it here. `data_on_device` and
    `load_sparse_tensor` are left out for a class they do not apply to (SCANVI; its SCVI
    pre-training gets them)."""
    device_loaders = supports_device_loaders(model)
    if loader.data_on_device and device_loaders:
        import_scvi()
        from scvi.dataloaders import DeviceBackedDataSplitter

        datamodule = DeviceBackedDataSplitter(
            model.adata_manager,
            train_size=train_size,
            batch_size=batch_size,
            shuffle=True,  # reshuffle the training cells every epoch, as the default loader does
            accelerator=accelerator,
            pin_memory=loader.pin_memory,
        )
        # train() derives the epoch heuristic from adata only when it builds the splitter itself.
        epochs = max_epochs if max_epochs is not None else max_epochs_heuristic(model.adata.n_obs)
        return {"datamodule": datamodule, "max_epochs": epochs}
    kwargs: dict = {}
    splitter = {}
    if loader.pin_memory:
        splitter["pin_memory"] = True
    if loader.num_workers:
        splitter["num_workers"] = loader.num_workers
        splitter["persistent_workers"] = loader.persistent_workers
    if splitter:
        kwargs["datasplitter_kwargs"] = splitter
    if loader.load_sparse_tensor and device_loaders:
        kwargs["load_sparse_tensor"] = True
    return kwargs


def used_data_on_device(model) -> bool:
    """Whether the model's last training drew its minibatches on the device."""
    import_scvi()
    from scvi.dataloaders import DeviceBackedDataSplitter

    runner = getattr(model, "trainer", None)
    datamodule = getattr(runner, "datamodule", None) if runner is not None else None
    return isinstance(datamodule, DeviceBackedDataSplitter)


def with_loader(kwargs: dict, model, train) -> dict:
    """One phase's `model.train()` arguments with those of the `train:` data-loader keys."""
    if (train.data_on_device or train.load_sparse_tensor) and not supports_device_loaders(model):
        log.info("%s: data_on_device/load_sparse_tensor do not apply", type(model).__name__)
    return kwargs | loader_train_kwargs(
        LoaderSettings.of(train),
        model,
        accelerator=kwargs["accelerator"],
        batch_size=train.batch_size,
        train_size=train.train_size,
        max_epochs=kwargs["max_epochs"],
    )


def throughput(cells: int, epochs: int, seconds: float) -> float | None:
    """Cells per second per epoch: training cells x epochs / seconds (None for no time)."""
    return round(cells * epochs / seconds, 1) if seconds > 0 else None


def phase_speed(model, seconds: float) -> dict:
    """How fast a trained phase went (the seconds of its train()) and whether its minibatches
    came from the device, as summary.json records it."""
    epochs, cells = len(model.history.get("elbo_train", [])), len(model.train_indices)
    return {
        "seconds": seconds,
        "training_cells": cells,
        "cells_per_second": throughput(cells, epochs, seconds),
        "data_on_device": used_data_on_device(model),
    }


def overall_speed(phases: list[dict], train) -> dict:
    """Throughput over every phase (training cells x epochs / seconds in train(), setup not
    counted) and the loader settings, for summary.json."""
    cell_epochs = sum(p["training_cells"] * p["epochs"] for p in phases)
    return {
        "cells_per_second": throughput(cell_epochs, 1, sum(p["seconds"] for p in phases)),
        "loader": {"batch_size": train.batch_size, **LoaderSettings.of(train).as_dict()},
    }
