"""Data too small to train, refused in the dataset step with the numbers and the minimum.

Each minimum is what scvi-tools 1.4.2 and scanpy's seurat_v3 need, found by probing them on
Poisson and negative-binomial counts (2026-12-03); below it the run failed later, in HVG or in
training, with an error that named neither the config key nor the numbers:

* training: scvi-tools puts ceil(train.train_size x cells) cells in training and the rest in
  validation. A training set of one cell (or a last minibatch of one cell, with batch
  normalisation) stops with "Expected more than 1 value per channel"; train.early_stopping
  with no validation cell stops with "Can't run Early Stopping ... with no validation set".
* SCANVI splits its annotated cells on their own: with train.early_stopping and no annotated
  cell left for validation it stops with "zip() argument 2 is shorter than argument 1" (2-9
  annotated cells at train_size 0.9 failed, 10 trained). One annotated cell per type trains.
* seurat_v3 (hvg.flavor): 4 cells or fewer failed in every probe; on 3 genes or fewer the
  process died (SIGSEGV), 4-10 genes always failed ("svddc failed in l2fit", "near
  singularities"), 15 genes in 2 of 5 probes, from 20 genes rarely. Sparser data can need
  more cells; the hvg step says so when its loess fails.
* Cells per batch set no minimum: SCVI and SCANVI train with a one-cell batch, and the hvg step
  ranks genes over all cells when a batch is too small for seurat_v3.
"""

from __future__ import annotations

from math import ceil

from .settings import ModelSettings

MIN_CELLS_SEURAT_V3 = 5
MIN_GENES_SEURAT_V3 = 20
LIMIT = 1_000_000  # no train.train_size the schema allows needs more cells than this


def split_sizes(n_cells: int, train_size: float) -> tuple[int, int]:
    """Training and validation cells, as scvi-tools' validate_data_split counts them."""
    n_train = ceil(train_size * n_cells)
    return n_train, n_cells - n_train


def splits(n_cells: int, train_size: float, early_stopping: bool) -> bool:
    """Whether `n_cells` give a training set of 2 or more and, with early stopping, a
    validation set of 1 or more."""
    n_train, n_val = split_sizes(n_cells, train_size)
    return n_train >= 2 and (n_val >= 1 or not early_stopping)


def min_cells_to_split(train_size: float, early_stopping: bool) -> int:
    return next((n for n in range(2, LIMIT) if splits(n, train_size, early_stopping)), LIMIT)


def _batch_norm(settings: ModelSettings) -> bool:
    # SCVI's and SCANVI's default is "both"; "none" has no batch-norm layer to break.
    return settings.model.params.get("use_batch_norm", "both") != "none"


def too_small(
    n_cells: int, n_genes: int, n_annotated: int | None, settings: ModelSettings
) -> list[str]:
    """What makes the data too small to train with these settings (empty: it can train).

    `n_annotated`: cells with a cell type (SCANVI), None for a model without labels.
    """
    train, flavor = settings.train, settings.hvg.flavor
    problems = []
    minimum = min_cells_to_split(train.train_size, train.early_stopping)
    reasons = [
        f"train.train_size {train.train_size} must leave 2 or more training cells"
        + (" and 1 or more validation cells (train.early_stopping)" if train.early_stopping else "")
    ]
    if flavor == "seurat_v3":
        minimum = max(minimum, MIN_CELLS_SEURAT_V3)
        reasons.append(f"hvg.flavor seurat_v3 needs at least {MIN_CELLS_SEURAT_V3}")
    if n_cells < minimum:
        problems.append(
            f"{n_cells} cells to train on (after dataset.subset and dataset.subsample_cells), "
            f"but at least {minimum} are needed: {'; '.join(reasons)}"
        )
    else:
        n_train, _ = split_sizes(n_cells, train.train_size)
        if _batch_norm(settings) and n_train % train.batch_size == 1:
            problems.append(
                f"{n_cells} cells put {n_train} in training (train.train_size "
                f"{train.train_size}), which leaves a last minibatch of 1 cell at "
                f"train.batch_size {train.batch_size}: batch normalisation cannot train on it; "
                f"set train.batch_size to {train.batch_size - 1} or {train.batch_size + 1}"
            )
    if flavor == "seurat_v3" and n_genes < MIN_GENES_SEURAT_V3:
        problems.append(
            f"{n_genes} genes, but hvg.flavor seurat_v3 needs at least {MIN_GENES_SEURAT_V3} "
            "(its loess fails below that, and crashes the process on 3 or fewer); use "
            "hvg.flavor: pearson_residuals"
        )
    if n_annotated is not None and train.early_stopping:
        needed = min_cells_to_split(train.train_size, True)
        if n_annotated < needed:
            column = settings.model.setup.labels_key
            problems.append(
                f"{n_annotated} annotated cells in obs column {column!r} "
                f"(model.setup.labels_key), but {settings.model.model_class} with "
                f"train.early_stopping needs at least {needed}: it splits annotated cells on "
                f"their own, and train.train_size {train.train_size} leaves none for validation "
                "below that; annotate more cells or set train.early_stopping: false"
            )
    return problems
