"""Loading a saved scvi-tools model without knowing its class in advance."""

from __future__ import annotations

from pathlib import Path

import torch

from .layout import MODEL_FILE


def saved_model_class(model_dir: str | Path) -> str:
    """The class name recorded in a saved model's `model.pt` (e.g. "SCVI", "SCANVI")."""
    saved = torch.load(Path(model_dir) / MODEL_FILE, map_location="cpu", weights_only=False)
    return saved["attr_dict"]["registry_"]["model_name"]


def load_model(model_dir: str | Path, adata=None):
    """Load a model saved with `save_anndata=True` (or with `adata` given)."""
    import scvi

    model_cls = getattr(scvi.model, saved_model_class(model_dir))
    return model_cls.load(str(model_dir), adata=adata)
