"""The scvi-hub layout: exactly which files make up a published model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .rule_io import atomic_dir

MODEL_FILE = "model.pt"
DATA_FILE = "adata.h5ad"
METADATA_FILE = "_scvi_required_metadata.json"
CARD_FILE = "README.md"

# What `scvi.hub.HubModel` reads from a repository, and all that we publish.
HUB_FILES = (MODEL_FILE, DATA_FILE, METADATA_FILE, CARD_FILE)


def _link_or_copy(source: Path, target: Path) -> None:
    # A hard link costs no space for multi-GB AnnData; fall back to a copy across devices.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def assemble_hub_folder(model_dir: str | Path, card_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Write `out_dir` with exactly HUB_FILES: the model and its AnnData, metadata and card."""
    sources = {
        MODEL_FILE: Path(model_dir) / MODEL_FILE,
        DATA_FILE: Path(model_dir) / DATA_FILE,
        METADATA_FILE: Path(card_dir) / METADATA_FILE,
        CARD_FILE: Path(card_dir) / CARD_FILE,
    }
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot assemble the hub folder, missing: {', '.join(missing)}")
    with atomic_dir(out_dir) as tmp:
        for name, source in sources.items():
            _link_or_copy(source, tmp / name)
    return list(HUB_FILES)
