"""scvi-tools' model classes: the class of a registry entry, and reading a saved model
without knowing its class in advance."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .compat import import_scvi
from .layout import SPLIT_COLUMN
from .model_kinds import ModelKind, kind_of


def scvi_class(kind: ModelKind) -> type:
    """The scvi-tools class of a model-kind entry."""
    import_scvi()
    return getattr(importlib.import_module(kind.parent_module), kind.name)


def spatial_class(kind: ModelKind) -> type:
    """The scvi-tools spatial model that starts from a model of `kind` (`from_rna_model`)."""
    import_scvi()
    module, name = kind.deconvolved_by
    return getattr(importlib.import_module(module), name)


def saved_registry(model_dir: str | Path) -> dict:
    """The registry saved with a model (class name, scvi-tools version, setup args, fields)."""
    import_scvi()
    from scvi.model.base import BaseModelClass

    return BaseModelClass.load_registry(str(model_dir))


def saved_model_class(model_dir: str | Path) -> str:
    """The class name recorded in a saved model."""
    return saved_registry(model_dir)["model_name"]


def load_model(model_dir: str | Path, adata=None):
    """Load a model saved with `save_anndata=True` (or with `adata` given)."""
    model_cls = scvi_class(kind_of(saved_model_class(model_dir)))
    return model_cls.load(str(model_dir), adata=adata)


@dataclass(frozen=True)
class ValidationCells:
    """A saved model's validation cells (never trained on) with their labels as the model's
    output columns number them: what the checks of the label-conditioned classes score."""

    labels: list[str]  # the model's labels, in the order of its output columns
    codes: np.ndarray  # each validation cell's label, as an index into `labels`
    counts: object  # their counts (cells x genes), from `layer` or X

    @property
    def n_cells(self) -> int:
        return len(self.codes)


def validation_cells(model, labels_key: str, layer: str | None) -> ValidationCells:
    """The validation cells of a loaded model whose AnnData carries the training split."""
    import_scvi()
    from scvi import REGISTRY_KEYS

    adata = model.adata
    registry = model.adata_manager.get_state_registry(REGISTRY_KEYS.LABELS_KEY)
    labels = [str(name) for name in registry.categorical_mapping]
    held_out = adata.obs[SPLIT_COLUMN].astype(str).to_numpy() == "validation"
    index = {name: i for i, name in enumerate(labels)}
    codes = adata.obs[labels_key].astype(str).map(index).to_numpy()[held_out].astype(int)
    counts = (adata.layers[layer] if layer else adata.X)[held_out]
    return ValidationCells(labels, codes, counts)
