"""Every scvi-tools 1.4.2 workaround and private API this workflow uses, in one place.

When the scvi-tools pin moves, re-check each entry; the tests named with it fail if it breaks.

Workarounds (scvi-tools 1.4.2):
- `import_scvi`: `import scvi` imports jax at start-up whenever jax is installed
  (scvi/_types.py), 1.5-3 s per job on 2 cores, for JAX models no job here uses. jax is hidden
  while scvi-tools is imported, and only then. Ends when scvi-tools imports jax lazily.
  (tests/test_integration.py: test_other_jobs_do_not_import_jax_or_scib_metrics)
- `mark_minified`: `SCANVI.from_scvi_model` registers its data with `use_minified=False`; a
  minified model saved so reloads as unminified and samples zeros from the emptied counts (the
  published Tabula Sapiens card shows `"use_minified": false`). Ends when scvi-tools sets it in
  `minify_adata`. (tests/test_training.py)
- `minified_label_probabilities`: `SCANVI.predict` fails on minified data (`classify() got an
  unexpected keyword argument 'qzm'`); the classifier needs only the stored posterior mean.
  The model card repeats this recipe for users. (tests/test_label_transfer.py)
- CondSCVI's default `prior` is `mog` here (model_kinds.py), not scvi-tools' `normal`:
  `DestVI.from_rna_model` with its default `vamp_prior_p` fails on a normal-prior model
  (`get_vamp_prior` returns numpy arrays, which DestVI's module registers as torch buffers:
  TypeError), and reads `init_params_["kwargs"]["module_kwargs"]["prior"]`, a KeyError unless
  `prior` was passed. Ends when both accept scvi-tools' default. (tests/test_model_classes.py)
- Publishing does not use `HubModel.push_to_huggingface_hub`: it skips `model.pt` by default,
  makes several commits and edits the scvi-tools organisation's collections (publish/).
- The criticism does not use `scvi.criticism.PosteriorPredictiveCheck`: its CV metrics swap
  truth and prediction and its "Wilcoxon" DE is a t-test (docs/metrics.md).

Private APIs (no public equivalent in 1.4.2):
- `model._make_data_loader` (`data_loader`): minibatches of the model's registered data in
  cell order, for streaming the posterior predictive samples.
- `model.adata_manager._registry` (`mark_minified`): the saved setup arguments.
- `model._label_mapping` (`label_mapping`): the classifier's classes in output order.
- `model.module.classify_helper` (`minified_label_probabilities`): the classifier on a latent.
- `scvi.model._utils.get_max_epochs_heuristic` (`max_epochs_heuristic`): the epochs train()
  picks from the number of cells, which it does not pick when given a datamodule
  (`train.data_on_device`). (tests/test_loaders.py)
"""

from __future__ import annotations

import importlib.abc
import sys

import numpy as np


class _HiddenJax(importlib.abc.MetaPathFinder):
    """An import finder for which jax is not installed (it never reaches sys.modules, so
    libraries that look there, as scipy's array-API helpers do, see no jax either)."""

    def find_spec(self, name, path=None, target=None):
        if name == "jax" or name.startswith("jax."):
            raise ModuleNotFoundError(
                f"No module named {name!r} (hidden from scvi-tools)", name=name
            )
        return None


def import_scvi():
    """`import scvi`, without the jax import it makes at start-up; returns the module.

    jax is hidden only while scvi-tools is first imported: nothing stays in sys.meta_path, and
    a process that imported jax already (the integration job) keeps it.
    """
    if "scvi" in sys.modules or "jax" in sys.modules:
        import scvi

        return scvi
    finder = _HiddenJax()
    sys.meta_path.insert(0, finder)
    try:
        import scvi
    finally:
        sys.meta_path.remove(finder)
    return scvi


def mark_minified(model) -> None:
    """Record in the model's setup arguments that its data are minified (see the module text)."""
    setup_args = model.adata_manager._registry["setup_args"]
    if "use_minified" in setup_args:
        setup_args["use_minified"] = True


def data_loader(model, batch_size: int):
    """The model's registered data in minibatches, cells in order."""
    n_cells = model.adata.n_obs
    return model._make_data_loader(
        adata=model.adata, indices=np.arange(n_cells), batch_size=batch_size, shuffle=False
    )


def label_mapping(model, n_classes: int) -> list:
    """The classifier's classes in the order of its outputs (without the unlabelled one)."""
    return list(model._label_mapping[:n_classes])


def minified_label_probabilities(model, qzm: np.ndarray) -> np.ndarray:
    """The classifier's probabilities from the latent posterior means (cells x classes),
    exactly `predict(soft=True)` of the full model (its default `use_posterior_mean=True`)."""
    import torch

    model.module.eval()
    with torch.inference_mode():
        latent = torch.as_tensor(np.asarray(qzm), dtype=torch.float32)
        scores = model.module.classify_helper(latent.to(model.device))
        if model.module.classifier.logits:
            scores = torch.nn.functional.softmax(scores, dim=-1)
    return scores.cpu().numpy()


def max_epochs_heuristic(n_cells: int) -> int:
    """The number of epochs scvi-tools' train() chooses for `n_cells` when not told."""
    import_scvi()
    from scvi.model._utils import get_max_epochs_heuristic

    return get_max_epochs_heuristic(n_cells)
