"""Verification: pull the commit back as a user would and compare it with the local model."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from .errors import PublishError

LATENT_TOLERANCE = 1e-4


def verify_pull(
    repo_id: str,
    commit: str,
    model_dir: str | os.PathLike,
    token: str,
    n_cells: int = 64,
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
        # What a user gets: for a minified model, the stored latent posterior mean.
        pulled_latent = np.asarray(pulled.get_latent_representation(indices=np.arange(len(names))))

    # The local model is the same class as the published one, saved with its full adata.
    local = type(pulled).load(str(model_dir))
    position = {name: i for i, name in enumerate(local.adata.obs_names)}
    missing = [n for n in names if n not in position]
    if missing:
        raise PublishError(f"verification: pulled cells missing from the local data: {missing[:3]}")
    local_latent = local.get_latent_representation(indices=[position[n] for n in names])
    latent_diff = float(np.max(np.abs(np.asarray(local_latent) - pulled_latent)))
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
