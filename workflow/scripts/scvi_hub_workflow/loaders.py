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
  there; no per-batch host work at all. Models trained with the unsupervised DataSplitter
  (SCVI) only: SCANVI's splitter samples labelled cells, and has no device-backed variant.
- `load_sparse_tensor`: minibatches travel as sparse CSR tensors and are densified on the
  device (scvi-tools marks it experimental).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


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
        if self.persistent_workers and self.num_workers == 0:
            raise ValueError("persistent_workers needs num_workers > 0 (no workers to keep)")
        if self.data_on_device and (self.num_workers or self.load_sparse_tensor):
            raise ValueError(
                "data_on_device draws minibatches on the device: num_workers and "
                "load_sparse_tensor do not apply to it"
            )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def supports_data_on_device(model) -> bool:
    """Whether the model trains through scvi-tools' plain DataSplitter, which
    DeviceBackedDataSplitter replaces (SCVI does; SCANVI's semi-supervised splitter does not)."""
    from scvi.dataloaders import DataSplitter

    return getattr(type(model), "_data_splitter_cls", None) is DataSplitter


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
    arguments. With `data_on_device` (on a model that supports it) that is a `datamodule`, which
    replaces train()'s own train_size/batch_size handling, so both are passed into it here."""
    if loader.data_on_device and supports_data_on_device(model):
        from scvi.dataloaders import DeviceBackedDataSplitter
        from scvi.model._utils import get_max_epochs_heuristic

        datamodule = DeviceBackedDataSplitter(
            model.adata_manager,
            train_size=train_size,
            batch_size=batch_size,
            shuffle=True,  # reshuffle the training cells every epoch, as the default loader does
            accelerator=accelerator,
            pin_memory=loader.pin_memory,
        )
        # train() derives the epoch heuristic from adata only when it builds the splitter itself.
        epochs = (
            max_epochs if max_epochs is not None else get_max_epochs_heuristic(model.adata.n_obs)
        )
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
    if loader.load_sparse_tensor:
        kwargs["load_sparse_tensor"] = True
    return kwargs


def used_data_on_device(model) -> bool:
    """Whether the model's last training drew its minibatches on the device."""
    from scvi.dataloaders import DeviceBackedDataSplitter

    runner = getattr(model, "trainer", None)
    datamodule = getattr(runner, "datamodule", None) if runner is not None else None
    return isinstance(datamodule, DeviceBackedDataSplitter)
