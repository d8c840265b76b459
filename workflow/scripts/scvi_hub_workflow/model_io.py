"""scvi-tools' model classes: the class of a registry entry, and reading a saved model
without knowing its class in advance."""

from __future__ import annotations

import importlib
from pathlib import Path

from .compat import import_scvi
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
