"""Run by certify.py in a fresh `python -I` process: load a downloaded repo as a user would.

Standalone on purpose: it imports scvi-tools and anndata only, and refuses to import
scvi_hub_workflow, so a pass shows the repo works without this workflow. Prints one JSON line.

    python -I certify_child.py REPO_DIR QUERY_H5AD_OR_- EPOCHS
"""

import importlib.abc
import json
import sys


class _NoWorkflowPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "scvi_hub_workflow":
            raise ImportError("the certification process must not import scvi_hub_workflow")
        return None


def main(repo_dir: str, query_path: str, epochs: int) -> dict:
    import numpy as np
    import scvi.hub

    hub_model = scvi.hub.HubModel(repo_dir)
    model = hub_model.model
    result = {
        "model_class": type(model).__name__,
        "scvi_version": scvi.__version__,
        "cells_in_repo": int(model.adata.n_obs),
    }
    latent = np.asarray(
        model.get_latent_representation(indices=np.arange(min(64, model.adata.n_obs)))
    )
    if not np.isfinite(latent).all():
        raise ValueError("the pulled model's latent representation is not finite")
    if query_path == "-":
        result["ran"] = "loaded the model and read the latent representation of its cells"
        return result
    import anndata

    query = anndata.read_h5ad(query_path)
    cls = type(model)
    cls.prepare_query_anndata(query, model)
    mapped = cls.load_query_data(query, model)
    mapped.train(
        max_epochs=epochs,
        plan_kwargs={"weight_decay": 0.0},
        accelerator="cpu",
        enable_progress_bar=False,
    )
    query_latent = np.asarray(mapped.get_latent_representation())
    if query_latent.shape != (query.n_obs, latent.shape[1]) or not np.isfinite(query_latent).all():
        raise ValueError(
            f"the mapped query's latent representation is invalid: {query_latent.shape}"
        )
    result["ran"] = (
        f"scArches query mapping: load_query_data of {query.n_obs} held-out cells, "
        f"{epochs} epochs, latent representation"
    )
    result["query_cells"] = int(query.n_obs)
    if hasattr(mapped, "predict"):
        predicted = mapped.predict()
        result["query_labels_predicted"] = int(len(predicted))
        result["ran"] += ", label prediction"
    return result


if __name__ == "__main__":
    sys.meta_path.insert(0, _NoWorkflowPackage())
    try:
        outcome = {"passed": True, **main(sys.argv[1], sys.argv[2], int(sys.argv[3]))}
    except Exception as error:  # reported to the parent, which fails the job with it
        outcome = {"passed": False, "reason": f"{type(error).__name__}: {error}"}
    print("CERTIFICATION " + json.dumps(outcome), flush=True)
