"""The scvi-hub layout: exactly which files make up a published model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .layout import CARD_FILE, DATA_FILE, HUB_FILES, METADATA_FILE, MODEL_FILE, PROVENANCE_FILE
from .rule_io import atomic_path

# Hard-linked, so multi-GB AnnData take no space twice; they live in the model folder, an input
# whose mtime (the folder's own) Snakemake's post-job touch of the links does not change. The
# card and metadata are copied: touching a link to them would make the input card newer than
# the hub files touched before it, which Snakemake refuses as clock skew ("Output ... has older
# modification time than input"; seen when the touches straddled a clock tick).
LINKED_FILES = (MODEL_FILE, DATA_FILE)


def _place(source: Path, target: Path, link: bool) -> None:
    """Place `source` at `target` atomically (under a temporary name first): a hard link when
    `link` and the file system allows it, else a copy."""
    with atomic_path(target) as tmp:
        tmp.unlink()
        if link:
            try:
                os.link(source, tmp)
                return
            except OSError:
                pass  # another device: copy
        shutil.copy2(source, tmp)


def hub_sources(
    model_dir: str | Path,
    card_path: str | Path,
    metadata_path: str | Path,
    provenance_path: str | Path,
) -> dict:
    """Where each published file comes from."""
    return {
        MODEL_FILE: Path(model_dir) / MODEL_FILE,
        DATA_FILE: Path(model_dir) / DATA_FILE,
        METADATA_FILE: Path(metadata_path),
        CARD_FILE: Path(card_path),
        PROVENANCE_FILE: Path(provenance_path),
    }


def assemble_hub_folder(sources: dict[str, Path], out_dir: str | Path) -> list[str]:
    """Fill `out_dir` with exactly HUB_FILES; anything else already there is removed."""
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"cannot assemble the hub folder, missing: {', '.join(missing)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stray in out_dir.iterdir():
        if stray.name not in HUB_FILES and stray.is_file():
            stray.unlink()
    for name in HUB_FILES:
        _place(sources[name], out_dir / name, link=name in LINKED_FILES)
    return sorted(p.name for p in out_dir.iterdir())
