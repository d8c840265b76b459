"""Verification: pull the commit back as a user would and compare it with the local model."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ..model_kinds import kind_of
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
    """Before the commit: what ``verify_pull`` will need, so a commit is never left unverifiable.

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


def verify_pull(
    repo_id: str,
    commit: str,
    model_dir: str | os.PathLike,
    token: str,
    n_cells: int = VERIFY_CELLS,
) -> dict[str, Any]:
    """Pull ``commit`` as a user would (fresh cache), load it, compare it with the local model.

    Two checks: the pulled weights equal the local model's, and the latent representation of
    the first cells (matched by obs name) equals the local model's.
    """
    import numpy as np
    import scvi.hub

    with tempfile.TemporaryDirectory(prefix="scvi-hub-verify-") as cache:
        hub_model = scvi.hub.HubModel.pull_from_huggingface_hub(
            repo_id, cache_dir=cache, revision=commit, token=token
        )
        pulled = hub_model.model
        names = list(pulled.adata.obs_names[:n_cells])
        # a class without a latent space (RNAStereoscope) is compared by its weights alone
        has_latent = kind_of(type(pulled).__name__).has_latent
        # What a user gets: for a minified model, the stored latent posterior mean.
        if has_latent:
            pulled_latent = pulled.get_latent_representation(indices=np.arange(len(names)))

    # The local model is the same class as the published one, saved with its full adata.
    local = type(pulled).load(str(model_dir))
    position = {name: i for i, name in enumerate(local.adata.obs_names)}
    missing = [n for n in names if n not in position]
    if missing:
        raise PublishError(f"verification: pulled cells missing from the local data: {missing[:3]}")
    latent_diff = 0.0
    if has_latent:
        local_latent = local.get_latent_representation(indices=[position[n] for n in names])
        latent_diff = float(np.max(np.abs(np.asarray(local_latent) - np.asarray(pulled_latent))))
    local_weights, pulled_weights = local.module.state_dict(), pulled.module.state_dict()
    if set(local_weights) != set(pulled_weights):
        raise PublishError("verification: the pulled model has different parameters")
    weight_diff = max(
        float((local_weights[k].float() - pulled_weights[k].float()).abs().max())
        for k in local_weights
        if local_weights[k].numel()
    )
    result = {
        "commit": commit,
        "model_class": type(pulled).__name__,
        "cells_compared": len(names),
        "max_abs_latent_difference": latent_diff,
        "max_abs_weight_difference": weight_diff,
        "tolerance": LATENT_TOLERANCE,
        "passed": max(latent_diff, weight_diff) <= LATENT_TOLERANCE,
    }
    if not result["passed"]:
        raise PublishError(
            f"verification failed: the model pulled from {repo_id}@{commit} differs from the "
            f"local one (latent by up to {latent_diff:.3g}, weights by up to {weight_diff:.3g}; "
            f"tolerance {LATENT_TOLERANCE})"
        )
    return result
