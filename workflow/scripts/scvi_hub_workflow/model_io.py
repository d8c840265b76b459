"""Reading a saved scvi-tools model without knowing its class in advance."""

from __future__ import annotations

from pathlib import Path


def saved_registry(model_dir: str | Path) -> dict:
    """The registry saved with a model (class name, scvi-tools version, setup args, fields)."""
    from scvi.model.base import BaseModelClass

    return BaseModelClass.load_registry(str(model_dir))


def saved_model_class(model_dir: str | Path) -> str:
    """The class name recorded in a saved model (e.g. "SCVI", "SCANVI")."""
    return saved_registry(model_dir)["model_name"]


def load_model(model_dir: str | Path, adata=None):
    """Load a model saved with `save_anndata=True` (or with `adata` given)."""
    import scvi

    model_cls = getattr(scvi.model, saved_model_class(model_dir))
    return model_cls.load(str(model_dir), adata=adata)
