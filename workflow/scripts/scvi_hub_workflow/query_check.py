"""The query mapping check: does the model map a new batch as a scArches reference should?

One batch is held out; a reference is trained on the others with the model's own recipe
(training.train_model), the held-out batch is mapped onto it with scvi-tools'
``prepare_query_anndata`` / ``load_query_data`` and a short fine-tune, and its latent is
compared with the full model's (trained with those cells). Definitions in docs/metrics.md
("Query mapping check"). The metrics are pure numpy/scikit-learn functions; ``run_query_check``
needs scvi-tools and torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .label_transfer import label_metrics
from .layout import DATA_FILE, RAN, SKIPPED_REASON, TRUTH_COLUMN, latent_keys
from .settings import ModelSettings

log = logging.getLogger(__name__)

# "Enough cells" for the held-out batch: the accuracy moves in steps of at most 2% and every
# query cell has many more query cells than the N_NEIGHBOURS it is compared by.
MIN_QUERY_CELLS = 50
# Neighbours per cell of the kNN overlap and of the kNN label transfer (scanpy's default 15).
N_NEIGHBOURS = 15


class QueryCheckError(ValueError):
    """The config asks for a query check the data cannot give (names the config key)."""


def should_run(mode: str | bool, n_cells: int, max_cells: int) -> tuple[bool, str | None]:
    """Whether the check runs for a dataset of ``n_cells`` (criticism.query_check), and if not,
    why (for the JSON and the card)."""
    if mode is False:
        return False, "criticism.query_check is false"
    if mode == "auto" and n_cells > max_cells:
        return False, (
            f"the dataset has {n_cells} cells, more than criticism.query_check_max_cells "
            f"({max_cells}) with criticism.query_check: auto; set it to true to run it"
        )
    return True, None


class NothingToHoldOut(QueryCheckError):
    """The data leave no batch the check could hold out by default (the check is skipped)."""


def choose_query_batch(
    counts: Mapping[str, int],
    requested: str | None,
    batch_key: str,
    labelled_per_batch: Mapping[str, int] | None = None,
) -> str:
    """The batch to hold out, from the cells per batch (dataset.json's `batches`):
    ``requested`` (criticism.query_batch), or by default the smallest batch with at least
    MIN_QUERY_CELLS cells (ties: the first by name). At least one other batch must remain to
    train the reference on.

    ``labelled_per_batch`` (models whose reference trains on labels): the reference must keep
    labelled cells, so a batch holding every labelled cell is never held out (a labelled
    reference beside an unlabelled query: the query is held out).
    """
    counts = {str(b): int(n) for b, n in counts.items()}
    listing = ", ".join(f"{b} ({n} cells)" for b, n in sorted(counts.items()))
    if len(counts) < 2:
        raise QueryCheckError(
            f"criticism.query_check: the batch column {batch_key!r} (model.setup.batch_key) has "
            f"{len(counts)} batch; holding one out needs two or more ({listing})"
        )
    keeps_labels = dict.fromkeys(counts, True)
    if labelled_per_batch is not None:
        per_batch = {b: int(labelled_per_batch.get(b, 0)) for b in counts}
        total = sum(per_batch.values())
        keeps_labels = {b: total - per_batch[b] > 0 for b in counts}
        listing = ", ".join(
            f"{b} ({n} cells, {per_batch[b]} labelled)" for b, n in sorted(counts.items())
        )
    if requested is not None:
        if requested not in counts:
            raise QueryCheckError(
                f"criticism.query_batch: no batch {requested!r} in obs column {batch_key!r} "
                f"(model.setup.batch_key); the batches are: {listing}"
            )
        if counts[requested] < MIN_QUERY_CELLS:
            raise QueryCheckError(
                f"criticism.query_batch: batch {requested!r} has {counts[requested]} cells, "
                f"fewer than the {MIN_QUERY_CELLS} the check needs; the batches are: {listing}"
            )
        if not keeps_labels[requested]:
            raise QueryCheckError(
                f"criticism.query_batch: batch {requested!r} holds every labelled cell; a "
                f"reference trained without it has no labels to learn; hold out another batch "
                f"({listing})"
            )
        return requested
    enough = {b: n for b, n in counts.items() if n >= MIN_QUERY_CELLS}
    if not enough:
        raise QueryCheckError(
            f"criticism.query_check: no batch of {batch_key!r} has {MIN_QUERY_CELLS} cells or "
            f"more to hold out ({listing}); set criticism.query_check: false"
        )
    usable = sorted((n, b) for b, n in enough.items() if keeps_labels[b])
    if not usable:
        raise NothingToHoldOut(
            f"every batch of {batch_key!r} with {MIN_QUERY_CELLS} cells or more holds every "
            f"labelled cell, so a reference trained without it would have no labels ({listing})"
        )
    return usable[0][1]


def plan_query(dataset: dict, settings: ModelSettings) -> dict:
    """query_plan.json, decided before training from dataset.json (the cells, batches and
    labelled cells per batch the model trains on): ``{RAN: True, "query_batch": ...}``, or the
    check skipped and why. A criticism.query_batch the data cannot serve (or no batch to hold
    out) raises QueryCheckError naming the key: the run stops before training."""
    from .checks import skip_reason

    reason = skip_reason("query_check", dataset, settings)
    if reason:
        return skipped(reason)
    c, setup = settings.criticism, settings.model.setup
    run, reason = should_run(c.query_check, dataset["n_cells"], c.query_check_max_cells)
    if not run:
        return skipped(reason)
    if dataset.get("batches") is None:
        raise QueryCheckError(
            "dataset.json records no cells per batch (written by an older version of the "
            "workflow); delete it to run the dataset step again"
        )
    labelled = (
        dataset.get("labelled_per_batch") if settings.model.kind.has_unlabelled_cells else None
    )
    try:
        batch = choose_query_batch(dataset["batches"], c.query_batch, setup.batch_key, labelled)
    except NothingToHoldOut as reason:
        return skipped(str(reason))
    return {RAN: True, "query_batch": batch, "n_query_cells": dataset["batches"][batch]}


def neighbours(latent: np.ndarray, k: int) -> np.ndarray:
    """Indices (cells x k) of each cell's k nearest other cells (Euclidean, exact)."""
    from sklearn.neighbors import NearestNeighbors

    latent = np.asarray(latent, dtype=np.float64)
    if len(latent) <= k:
        raise ValueError(f"{len(latent)} cells: too few for {k} neighbours each")
    index = NearestNeighbors(n_neighbors=k + 1).fit(latent)
    found = index.kneighbors(latent, return_distance=False)
    # drop each cell itself (the first hit, unless tied with a duplicate)
    rows = [row[row != i][:k] for i, row in enumerate(found)]
    return np.vstack(rows)


def knn_overlap(latent_a: np.ndarray, latent_b: np.ndarray, k: int = N_NEIGHBOURS) -> float:
    """Mean over cells of the fraction of a cell's k nearest neighbours in ``latent_a`` that are
    also among its k nearest in ``latent_b`` (same cells, same order): 1 when the two latents
    have the same neighbourhoods, about ``knn_overlap_chance`` when unrelated."""
    if len(latent_a) != len(latent_b):
        raise ValueError("the two latents must hold the same cells")
    a, b = neighbours(latent_a, k), neighbours(latent_b, k)
    shared = [len(np.intersect1d(x, y, assume_unique=True)) for x, y in zip(a, b, strict=True)]
    return float(np.mean(shared) / k)


def knn_overlap_chance(n_cells: int, k: int = N_NEIGHBOURS) -> float:
    """The expected overlap of two random k-neighbourhoods among the other n_cells - 1 cells."""
    return k / (n_cells - 1)


def knn_label_probabilities(
    reference_latent: np.ndarray,
    reference_labels: np.ndarray,
    query_latent: np.ndarray,
    k: int = N_NEIGHBOURS,
) -> pd.DataFrame:
    """Per query cell, the share of its k nearest reference cells carrying each label."""
    from sklearn.neighbors import KNeighborsClassifier

    classifier = KNeighborsClassifier(n_neighbors=k).fit(
        np.asarray(reference_latent), np.asarray(reference_labels, dtype=str)
    )
    shares = classifier.predict_proba(np.asarray(query_latent))
    return pd.DataFrame(shares, columns=classifier.classes_)


def full_model_latent(minified_dir: str, model_class: str) -> pd.DataFrame:
    """The full model's latent posterior means (cells x latent), as minify stored them; the
    minified data hold no counts, so this reads obs and obsm only."""
    import anndata as ad

    adata = ad.read_h5ad(f"{minified_dir}/{DATA_FILE}")
    qzm_key, _ = latent_keys(model_class)
    return pd.DataFrame(np.asarray(adata.obsm[qzm_key]), index=adata.obs_names)


def _drop_unused_categories(adata, columns: list[str]) -> None:
    # scvi-tools keeps every category of a categorical column: a reference whose batch column
    # still lists the held-out batch would get an encoder input for it, and the query would
    # not be a new batch.
    for column in columns:
        if isinstance(adata.obs[column].dtype, pd.CategoricalDtype):
            adata.obs[column] = adata.obs[column].cat.remove_unused_categories()


def _hide_labels(obs: pd.DataFrame, labels_key: str, unlabeled_category: str) -> None:
    """Every cell unlabelled, as real query data arrive."""
    labels = obs[labels_key].astype("category")
    if unlabeled_category not in labels.cat.categories:
        labels = labels.cat.add_categories([unlabeled_category])
    labels[:] = unlabeled_category
    obs[labels_key] = labels


def _labelled(labels: np.ndarray, unlabeled_category: str | None) -> np.ndarray:
    if unlabeled_category is None:
        return np.ones(len(labels), dtype=bool)
    return labels != unlabeled_category


def reference_settings(settings: ModelSettings) -> ModelSettings:
    """The reference's recipe: the model's, except that a model started from a published one
    (`from_scvi: <model>`) pre-trains its own on the reference cells (`from_scvi: true`): the
    published model saw the held-out batch."""
    if not settings.model.pretrained_model:
        return settings
    return settings.replace(model=settings.model.replace(from_scvi=True))


def run_query_check(
    data_path: str,
    full_latent: pd.DataFrame,
    settings: ModelSettings,
    cuda_available: bool | None = None,
    query_batch: str | None = None,
) -> dict:
    """Hold out ``query_batch`` of the training data (``data_path``: hvg.h5ad), train a
    reference without it, map it, and compare with ``full_latent`` (the full model's latent
    posterior means, indexed by cell). Returns query_check.json's content. The rule's job holds
    out the batch query_plan.json names; without one (benchmarks, tests) it is chosen from the
    data here, the same way."""
    import anndata as ad

    from .dataset_record import composition
    from .datasets import cells_per_batch
    from .training import train_kwargs, train_model

    started = time.perf_counter()
    spec, train, criticism = settings.model, settings.train, settings.criticism
    kind, setup = spec.kind, spec.setup
    batch_key, labels_key = setup.batch_key, setup.labels_key
    # backed: only the two slices are ever in memory, together as large as the training data
    backed = ad.read_h5ad(data_path, backed="r")
    obs = backed.obs
    batch = query_batch
    if batch is None:
        # its reference learns the labels (has_unlabelled_cells): it must keep some
        labelled = composition(obs, setup).get("labelled_per_batch")
        labelled = labelled if kind.has_unlabelled_cells else None
        counts = cells_per_batch(obs, batch_key)
        batch = choose_query_batch(counts, criticism.query_batch, batch_key, labelled)
    is_query = (obs[batch_key].astype(str) == batch).to_numpy()
    reference = backed[~is_query].to_memory()
    query = backed[is_query].to_memory()
    backed.file.close()
    categorical = setup.categorical_columns()
    _drop_unused_categories(reference, categorical)
    log.info("holding out %s=%s: %d query cells, %d reference cells",
             batch_key, batch, query.n_obs, reference.n_obs)  # fmt: skip

    reference_model, _, reference_summary = train_model(
        reference, reference_settings(settings), cuda_available
    )
    accelerator = reference_summary["accelerator"]
    model_cls = type(reference_model)

    truth = query.obs[labels_key].astype(str).to_numpy() if labels_key else None
    planted = query.obs[TRUTH_COLUMN].astype(str).to_numpy() if TRUTH_COLUMN in query.obs else None
    if kind.has_unlabelled_cells:
        _hide_labels(query.obs, labels_key, setup.unlabeled_category)
    model_cls.prepare_query_anndata(query, reference_model)
    query_model = model_cls.load_query_data(query, reference_model, accelerator=accelerator)
    kwargs = train_kwargs(train, accelerator, criticism.query_epochs, "query mapping")
    # scArches: no weight decay, so the frozen reference weights stay exactly as trained
    kwargs["plan_kwargs"] = {**kwargs["plan_kwargs"], "weight_decay": 0.0}
    kwargs = kind.train_arguments(kwargs)
    mapping_started = time.perf_counter()
    query_model.train(**kwargs)
    mapping_seconds = time.perf_counter() - mapping_started
    query_epochs = len(query_model.history.get("elbo_train", []))

    mapped = query_model.get_latent_representation()
    full = full_latent.loc[query.obs_names].to_numpy()
    result = {
        RAN: True,
        "batch_key": batch_key,
        "query_batch": batch,
        "n_query_cells": int(query.n_obs),
        "n_reference_cells": int(reference.n_obs),
        "reference_phases": reference_summary["phases"],
        "query_epochs": query_epochs,
        "seed": train.seed,
        "accelerator": accelerator,
        "n_neighbours": N_NEIGHBOURS,
        "knn_overlap": knn_overlap(mapped, full),
        "knn_overlap_chance": knn_overlap_chance(query.n_obs),
        "label_agreement": None,
        "classifier": None,
        "classifier_vs_truth": None,
        # the label metrics the data could not give, and why
        "skipped": {},
    }
    if labels_key:
        reference_labels = reference.obs[labels_key].astype(str).to_numpy()
        known_ref = _labelled(reference_labels, setup.unlabeled_category)
        known = _labelled(truth, setup.unlabeled_category)
        unscored = label_metrics_unscored(int(known.sum()), int(known_ref.sum()), batch)
        predicted = query_model.predict(soft=True) if kind.has_classifier else None
        if unscored:
            result["skipped"]["label_agreement"] = unscored
        else:
            probabilities = knn_label_probabilities(
                reference_model.get_latent_representation()[known_ref],
                reference_labels[known_ref],
                mapped[known],
            )
            result["label_agreement"] = _headline(label_metrics(truth[known], probabilities)[0])
        if predicted is not None and not known.any():
            result["skipped"]["classifier"] = label_metrics_unscored(int(known.sum()), 1, batch)
        elif predicted is not None:
            result["classifier"] = _headline(label_metrics(truth[known], predicted[known])[0])
        if predicted is not None and planted is not None:
            result["classifier_vs_truth"] = _headline(label_metrics(planted, predicted)[0])
    result["seconds"] = {
        "reference_training": reference_summary["seconds"],
        "query_mapping": round(mapping_seconds, 3),
        "total": round(time.perf_counter() - started, 3),
    }
    return result


def label_metrics_unscored(n_query_labelled: int, n_reference_labelled: int, batch) -> str | None:
    """Why the query's labels cannot be compared (None: they can): a query without labelled
    cells (the unlabelled batch of a reference/query design), or a reference without any."""
    if n_query_labelled == 0:
        return f"the held-out batch {batch!r} has no labelled cells to compare labels with"
    if n_reference_labelled == 0:
        return "the reference has no labelled cells to transfer labels from"
    return None


def _headline(summary: dict) -> dict:
    return {k: summary[k] for k in ("n_cells", "accuracy", "macro_f1", "ece")}


def skipped(reason: str) -> dict:
    """query_check.json of a check that did not run, and why."""
    return {RAN: False, SKIPPED_REASON: reason}


def check_query_mapping(
    data_path: str, plan: dict, full_model_dir: str, settings: ModelSettings
) -> dict:
    """What the rule does: query_check.json for the model, from the plan made before training
    (query_plan.json): the check skipped with its reason at once, or run on the planned batch."""
    if not plan[RAN]:
        return skipped(plan[SKIPPED_REASON])
    full = full_model_latent(full_model_dir, settings.model.model_class)
    return run_query_check(data_path, full, settings, query_batch=plan["query_batch"])
