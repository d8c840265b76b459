"""What dataset.json records beyond the cells read: the labelled cells per label and batch,
and whether a CELLxGENE dataset id's downloaded version is still its newest."""

from __future__ import annotations

import logging

import pandas as pd

from .downloads import DownloadError
from .settings import Setup

log = logging.getLogger(__name__)


def composition(obs: pd.DataFrame, setup: Setup) -> dict:
    """The labelled cells (dataset.json): how many, per label and per batch (beside
    `batches`, the cells per batch). What integration can measure depends on them: a
    labelled reference beside an unlabelled query batch has its labelled cells in one batch."""
    if not setup.labels_key:
        return {}
    labels = obs[setup.labels_key].astype(str)
    labelled = (labels != str(setup.unlabeled_category)).to_numpy()
    out = {
        "n_cells_labelled": int(labelled.sum()),
        "labels": {str(k): int(v) for k, v in labels[labelled].value_counts().sort_index().items()},
    }
    if setup.batch_key:
        batches = obs[setup.batch_key].astype(str).to_numpy()
        out["labelled_per_batch"] = {
            str(b): int((labelled & (batches == b)).sum()) for b in sorted(set(batches))
        }
    return out


def newer_version(record: dict | None, resolve, warn=log.warning) -> dict | None:
    """For data from a bare CELLxGENE dataset id: is the version downloaded first still the
    dataset's newest? None for any other source.

    The download is kept (resources/cellxgene/<id>.h5ad) and read by every later run, so a
    newer version would otherwise go unseen. ``resolve(dataset_id)`` asks the API
    (cellxgene.newest_version); a failed check is recorded and said with ``warn`` (the
    logging call), and stops nothing.
    """
    if not record or not record.get("newest_of_dataset"):
        return None
    requested, downloaded = record["requested_id"], record["dataset_version_id"]
    note = {"dataset_id": record["dataset_id"], "downloaded_version_id": downloaded}
    try:
        newest = resolve(record["dataset_id"]).dataset_version_id
    except (DownloadError, OSError, ValueError) as error:
        warn("cellxgene:%s: could not check for a newer version (%s)", requested, error)
        return note | {"checked": False, "reason": str(error)}
    note |= {"checked": True, "newest_version_id": newest, "is_newest": newest == downloaded}
    if newest != downloaded:
        note["how_to_move"] = (
            f"this run keeps version {downloaded}, downloaded first for cellxgene:{requested}; "
            f"to use {newest}, delete resources/cellxgene/{requested}.h5ad and "
            f"resources/cellxgene/{requested}.json and run again (every model reading it "
            f"re-runs), or pin it: dataset.source: cellxgene:{newest}"
        )
        warn(
            "cellxgene:%s: CELLxGENE now lists a newer version %s; %s",
            requested,
            newest,
            note["how_to_move"],
        )
    return note


def say_newer_versions(record_paths, resolve, warn) -> list[dict]:
    """On every run, for the CELLxGENE downloads already made (their records,
    resources/cellxgene/<id>.json): say when a bare dataset id has a newer version than the one
    kept, without running the dataset step again. Records not there yet are skipped (their
    download, in this run, gets the newest). Returns the notes."""
    import json
    from pathlib import Path

    notes = []
    for path in sorted(set(record_paths)):
        try:
            record = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            continue
        if (note := newer_version(record, resolve, warn)) is not None:
            notes.append(note)
    return notes
