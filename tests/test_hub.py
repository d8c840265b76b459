"""The hub folder: exactly the scvi-hub files, the model's linked (or copied), strays removed."""

from __future__ import annotations

import os

import pytest
from scvi_hub_workflow.hub import assemble_hub_folder, hub_sources
from scvi_hub_workflow.layout import (
    CARD_FILE,
    DATA_FILE,
    HUB_FILES,
    METADATA_FILE,
    MODEL_FILE,
    PROVENANCE_FILE,
)


def sources(tmp_path):
    model_dir = tmp_path / "minified"
    model_dir.mkdir()
    (model_dir / MODEL_FILE).write_bytes(b"weights")
    (model_dir / DATA_FILE).write_bytes(b"cells")
    (tmp_path / "card.md").write_text("# card\n")
    (tmp_path / "meta.json").write_text("{}\n")
    (tmp_path / "provenance.json").write_text("{}\n")
    return hub_sources(
        model_dir, tmp_path / "card.md", tmp_path / "meta.json", tmp_path / "provenance.json"
    )


def test_sources_name_every_hub_file(tmp_path):
    found = sources(tmp_path)
    assert sorted(found) == sorted(HUB_FILES)
    assert found[CARD_FILE] == tmp_path / "card.md"
    assert found[METADATA_FILE] == tmp_path / "meta.json"
    assert found[PROVENANCE_FILE] == tmp_path / "provenance.json"
    assert found[MODEL_FILE] == tmp_path / "minified" / MODEL_FILE


def test_folder_holds_exactly_the_hub_files_and_drops_strays(tmp_path):
    found = sources(tmp_path)
    out = tmp_path / "hub"
    out.mkdir()
    (out / "old-notes.txt").write_text("stale")
    (out / MODEL_FILE).write_bytes(b"an older model")
    assert assemble_hub_folder(found, out) == sorted(HUB_FILES)
    for name, source in found.items():
        assert (out / name).read_bytes() == source.read_bytes()
    # A hard link where the file system allows it: no second copy of a multi-GB AnnData.
    assert os.stat(out / DATA_FILE).st_ino == os.stat(found[DATA_FILE]).st_ino
    assert not list(out.glob(".*")), "a temporary file was left behind"


def test_missing_source_is_named_and_nothing_is_written(tmp_path):
    found = sources(tmp_path)
    found[DATA_FILE].unlink()
    out = tmp_path / "hub"
    with pytest.raises(FileNotFoundError, match=DATA_FILE):
        assemble_hub_folder(found, out)
    assert not out.exists()


def test_copies_when_hard_links_fail(tmp_path, monkeypatch):
    found = sources(tmp_path)

    def no_link(*_):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    out = tmp_path / "hub"
    assert assemble_hub_folder(found, out) == sorted(HUB_FILES)
    assert (out / MODEL_FILE).read_bytes() == b"weights"
    assert os.stat(out / MODEL_FILE).st_ino != os.stat(found[MODEL_FILE]).st_ino


def test_touching_the_hub_files_leaves_the_card_inputs_untouched(tmp_path):
    """Snakemake touches a job's outputs, then refuses any output older than the newest input.
    A hub file hard-linked to the card would make the card (an input) newer than the hub files
    touched before it: the card and metadata are copies."""
    found = sources(tmp_path)
    out = tmp_path / "hub"
    assemble_hub_folder(found, out)
    before = {name: os.stat(found[name]).st_mtime_ns for name in (CARD_FILE, METADATA_FILE)}
    for i, name in enumerate(HUB_FILES):
        stamp = 2_000_000_000 + i  # one second apart: as if the touches straddled clock ticks
        os.utime(out / name, (stamp, stamp))
    after = {name: os.stat(found[name]).st_mtime_ns for name in (CARD_FILE, METADATA_FILE)}
    assert after == before
    newest_input = max(os.stat(p).st_mtime for p in [found[CARD_FILE], found[METADATA_FILE]])
    assert min(os.stat(out / name).st_mtime for name in HUB_FILES) >= newest_input
