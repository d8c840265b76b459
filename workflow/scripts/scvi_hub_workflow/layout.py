"""Names shared between steps: what one step writes and another reads, defined once.

Step modules import these from here, never from each other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

# --- the model's own split (train rule writes it, criticism reads it) ----------------------

SPLIT_COLUMN = "split"  # obs column of the saved training data
SPLIT_LABELS = ("train", "validation", "test")
# Splits the CV metrics report on (test cells, if any, are left out of the per-split figures).
CV_SPLITS = ("train", "validation")
GENE_CV_SPLITS = ("all", *CV_SPLITS)
# history.tsv: the training phase of each row (a SCANVI trained from SCVI: "scvi", "scanvi").
PHASE_COLUMN = "phase"
# scvi-tools' name of the validation ELBO in a model's history: what training watches
VALIDATION_ELBO = "elbo_validation"


def latent_keys(model_class: str) -> tuple[str, str]:
    """obsm keys of the latent posterior (mean, variance), named as on the scvi-hub cards."""
    prefix = model_class.lower()
    return f"{prefix}_latent_qzm", f"{prefix}_latent_qzv"


# --- the scvi-hub layout: what a saved model folder and a published repo hold --------------

MODEL_FILE = "model.pt"
DATA_FILE = "adata.h5ad"
METADATA_FILE = "_scvi_required_metadata.json"
CARD_FILE = "README.md"
PROVENANCE_FILE = "provenance.json"  # how the model was made (provenance.py)
# What `scvi.hub.HubModel` reads from a repository, and the provenance: all that we publish.
HUB_FILES = (MODEL_FILE, DATA_FILE, METADATA_FILE, CARD_FILE, PROVENANCE_FILE)

# --- result tables ------------------------------------------------------------------------

CV_METRICS = ("mae", "pearson", "spearman", "r2")
# Columns of de.tsv (and of the rows in de.json), in order.
DE_COLUMNS = (
    "group",
    "n_cells",
    "gene_f1",
    "lfc_mae",
    "lfc_pearson",
    "lfc_spearman",
    "roc_auc",
    "pr_auc",
    "n_true_up",
    "roc_auc_two_sided",
    "pr_auc_two_sided",
    "n_true_two_sided",
)

# --- inputs: built-in datasets and downloads land in resources/ ---------------------------

# the folders the workflow writes into (relative to its working directory)
OUTPUT_FOLDERS = ("results", "logs", "resources")

BUILTIN_DATASETS = ("synthetic-iid", "simulated-atlas", "simulated-citeseq")
BUILTIN_DATA = "resources/builtin/{name}.h5ad"
DOWNLOADED_DATA = "resources/downloads/{digest}.h5ad"  # named by its checksum
CELLXGENE_DATA = "resources/cellxgene/{cellxgene_id}.h5ad"
CELLXGENE_RECORD = "resources/cellxgene/{cellxgene_id}.json"  # the version it resolved to

# --- per-cell columns one step writes and another reads -----------------------------------

# criticism/cells.tsv: the Leiden cluster of each cell (the DE groups of data without labels;
# the integration metrics' groups then).
CLUSTER_COLUMN = "leiden"
# The built-in simulation keeps each cell's planted type here (datasets.simulated_atlas).
TRUTH_COLUMN = "true_cell_type"

# --- JSON keys one step writes and another reads ------------------------------------------

# An optional check that did not run writes {RAN: false, SKIPPED_REASON: "<why>"}.
RAN = "ran"
SKIPPED_REASON = "skipped_reason"
# cv.json: the cell-wise and gene-wise tables, metric by split.
CELL_WISE = "cell_wise"
GENE_WISE = "gene_wise"
# cv.json's entry of a CITE-seq model's protein CVs (cell-wise and protein-wise, as the RNA's)
PROTEIN_CV = "protein"
# integration.json: scib-metrics' aggregates of the model and of the PCA baseline.
TOTAL = "total"
TOTAL_PCA = "total_pca"

# --- retries of network calls (downloads, Hub commits) ------------------------------------

ATTEMPTS = 4
FIRST_WAIT_S = 2.0

T = TypeVar("T")


def retried(
    action: Callable[[int], T],
    is_transient: Callable[[BaseException], bool],
    *,
    what: str,
    attempts: int = ATTEMPTS,
    wait_s: float = FIRST_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
    log: logging.Logger | None = None,
) -> T:
    """``action(attempt)``, retried with exponential backoff while it fails transiently.

    A non-transient error, or the last attempt's error, propagates unchanged.
    """
    log = log or logging.getLogger(__name__)
    for attempt in range(1, attempts + 1):
        try:
            return action(attempt)
        except Exception as error:
            if not is_transient(error) or attempt == attempts:
                raise
            log.warning(
                "%s: attempt %d of %d failed (%s); retrying", what, attempt, attempts, error
            )
        sleep(wait_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
