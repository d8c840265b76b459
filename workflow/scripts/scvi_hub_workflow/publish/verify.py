"""Verification: the pushed revision (downloaded once, by certification) equals the local model."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import PublishError

LATENT_TOLERANCE = 1e-4
# Cells whose latent representation verification compares after pulling.
VERIFY_CELLS = 64


def _obs_names(path: Path) -> list[str]:
    import anndata
    import h5py

    with h5py.File(path, "r") as handle:
        return [str(name) for name in anndata.io.read_elem(handle["obs"]).index]


def check_verifiable(hub_dir: Path, model_dir: str | os.PathLike, n_cells: int) -> None:
    """Before the commit: what ``compare_with_local`` needs, so no commit is left unverifiable.

    Verification matches cells by obs name: the names must be unique in the published and in
    the local data, and the first ``n_cells`` published cells must be local ones.
    """
    published, local = hub_dir / "adata.h5ad", Path(model_dir) / "adata.h5ad"
    if not local.is_file():
        raise PublishError(f"verification needs the trained model's data: {local} is missing")
    names = {}
    for path in (published, local):
        names[path] = _obs_names(path)
        duplicated = sorted({n for n, count in Counter(names[path]).items() if count > 1})
        if duplicated:
            raise PublishError(
                f"{path}: obs names are not unique ({', '.join(map(repr, duplicated[:5]))}); "
                "verification matches cells by name. Nothing was published"
            )
    known = set(names[local])
    missing = [n for n in names[published][:n_cells] if n not in known]
    if missing:
        raise PublishError(
            f"{published}: cells {missing[:3]} are not in the local model's data {local}; "
            "nothing was published"
        )


def _weights(path: Path) -> dict:
    import torch

    # scvi-tools' own format (model.pt), read as scvi-tools reads it; its tensors (the module's
    # state dict, without the pyro parameter store scvi-tools adds for its Pyro models)
    saved = torch.load(path, map_location="cpu", weights_only=False)["model_state_dict"]
    return {k: v for k, v in saved.items() if isinstance(v, torch.Tensor)}


def compare_with_local(
    repo_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    pulled: dict[str, Any],
    commit: str,
) -> dict[str, Any]:
    """Verification, a step of certification: the downloaded revision ``repo_dir`` against the
    local model. Its weights must equal the local model's, and the latent representation of its
    first cells must equal the local model's of the same cells (matched by obs name) to
    LATENT_TOLERANCE. ``pulled``: as the fresh process read them (certify_child.py), the cells'
    ``names``, ``latent`` (empty for a class without one), ``local_latent`` and the names the
    local data lack (``missing``).

    Returns the result (``passed``, with the ``reason`` when not); raises nothing itself.
    """
    import numpy as np

    names, missing = list(pulled["names"]), [str(n) for n in pulled["missing"]]
    local_weights = _weights(Path(model_dir) / "model.pt")
    pulled_weights = _weights(Path(repo_dir) / "model.pt")
    result: dict[str, Any] = {"commit": commit, "cells_compared": len(names)}
    if set(local_weights) != set(pulled_weights):
        return {**result, "passed": False, "reason": "the pulled model has other parameters"}
    if missing:
        reason = f"pulled cells missing from the local data: {missing[:3]}"
        return {**result, "passed": False, "reason": reason}
    weight_diff = max(
        (
            float((local_weights[k].float() - pulled_weights[k].float()).abs().max())
            for k in local_weights
            if local_weights[k].numel()
        ),
        default=0.0,
    )
    # a class without a latent space (RNAStereoscope) is compared by its weights alone
    latent, local_latent = pulled["latent"], pulled["local_latent"]
    latent_diff = float(np.max(np.abs(local_latent - latent))) if latent.size else 0.0
    result.update(
        max_abs_latent_difference=latent_diff,
        max_abs_weight_difference=weight_diff,
        tolerance=LATENT_TOLERANCE,
        passed=max(latent_diff, weight_diff) <= LATENT_TOLERANCE,
    )
    if not result["passed"]:
        result["reason"] = (
            f"the pulled model differs from the local one (latent by up to {latent_diff:.3g}, "
            f"weights by up to {weight_diff:.3g}; tolerance {LATENT_TOLERANCE})"
        )
    return result
