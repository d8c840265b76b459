"""Run by certify.py in a fresh `python -I` process: load a downloaded repo as a user would.

Standalone on purpose: it imports scvi-tools and anndata only, and refuses to import
scvi_hub_workflow, so a pass shows the repo works without this workflow. Prints one JSON line.
For verification (the parent compares), it writes to LATENT_NPZ the names and latent
representation of the repo's first cells and, read from the local model LOCAL_MODEL_DIR (the same
class), the same cells' latent representation: scvi-tools is imported once, here.

    python -I certify_child.py REPO_DIR QUERY_H5AD_OR_- EPOCHS LATENT_NPZ N_CELLS LOCAL_MODEL_DIR
"""

import importlib.abc
import json
import sys


class _NoWorkflowPackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "scvi_hub_workflow":
            raise ImportError("the certification process must not import scvi_hub_workflow")
        return None


def local_latent(cls, local_dir: str, names) -> tuple:
    """The local model's latent representation of the cells ``names`` (matched by obs name),
    and the names it lacks."""
    import numpy as np

    local = cls.load(local_dir)
    position = {name: i for i, name in enumerate(local.adata.obs_names)}
    missing = [str(n) for n in names if n not in position]
    if missing:
        return np.empty(0), missing
    return np.asarray(local.get_latent_representation(indices=[position[n] for n in names])), []


def main(repo_dir: str, query_path: str, epochs: int, out: str, n_cells: int, local_dir: str):
    import numpy as np
    import scvi.hub

    hub_model = scvi.hub.HubModel(repo_dir)
    model = hub_model.model
    result = {
        "model_class": type(model).__name__,
        "scvi_version": scvi.__version__,
        "cells_in_repo": int(model.adata.n_obs),
    }
    names = np.asarray(model.adata.obs_names[: min(n_cells, model.adata.n_obs)], dtype=str)
    # what a user gets: for a minified model, the stored latent posterior mean
    latent = None
    if hasattr(model, "get_latent_representation"):  # RNAStereoscope has no latent space
        latent = np.asarray(model.get_latent_representation(indices=np.arange(len(names))))
        if not np.isfinite(latent).all():
            raise ValueError("the pulled model's latent representation is not finite")
    local, missing = local_latent(type(model), local_dir, names) if latent is not None else ((), [])
    np.savez(
        out,
        names=names,
        latent=latent if latent is not None else np.empty(0),
        local_latent=np.asarray(local),
        missing=np.asarray(missing, dtype=str),
    )
    result["has_latent"] = latent is not None
    if query_path == "-":
        result["ran"] = "loaded the model" + (
            " and read the latent representation of its cells" if latent is not None else ""
        )
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
    repo, query, epochs, out, cells, local_dir = sys.argv[1:7]
    try:
        outcome = {"passed": True, **main(repo, query, int(epochs), out, int(cells), local_dir)}
    except Exception as error:  # reported to the parent, which fails the job with it
        outcome = {"passed": False, "reason": f"{type(error).__name__}: {error}"}
    print("CERTIFICATION " + json.dumps(outcome), flush=True)
