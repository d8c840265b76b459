"""provenance.json (how a model was made), its card section, and the Training Code URL."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pandas as pd
import pytest
from helpers import rule_settings
from scvi_hub_workflow import provenance
from scvi_hub_workflow.card import blank_line_after_tables, render_card
from scvi_hub_workflow.card_sections import provenance_section
from scvi_hub_workflow.config import model_settings
from test_card import inputs

CFG = {
    "models": {
        "m": {
            "tissues": ["lung"],
            "dataset": {"source": "builtin:synthetic-iid", "subset": {"tissue": ["lung"]}},
            "model": {"class": "SCVI"},
        }
    }
}
DATASET = {
    "source": "resources/builtin/synthetic-iid.h5ad",
    "sha256": "ab" * 32,
    "n_cells": 400,
    "n_genes": 100,
    "subset": {"tissue": ["lung"]},
    "source_url": None,
}
TRAINING = {
    "accelerator": "cpu",
    "device": "cpu",
    "gpu_name": None,
    "seconds": 10.0,
    "n_cells": {"train": 300, "validation": 50, "test": 50},
    "total_epochs": 5,
    "phases": [
        {
            "phase": "scvi",
            "model_class": "SCVI",
            "epochs": 5,
            "max_epochs": 5,
            "stopped": "max_epochs reached",
        }
    ],
    "environment": {
        "workflow": {"version": "0.1.0", "commit": "c0ffee", "modified": False},
        "software": {"python": "3.11.9", "scvi-tools": "1.4.2"},
        "cpu_threads": 4,
        "finished_at": "2026-01-01T00:00:00+00:00",
    },
}
HVG = pd.DataFrame({"highly_variable": [True, False, True]}, index=["g2", "g9", "g1"])


def record(tmp_path, **changes):
    env = tmp_path / "scvi.yaml"
    env.write_text("name: scvi\n")
    settings = rule_settings(model_settings(CFG, "m"), "provenance")
    return build(settings, env, **changes)


def build(settings, env, **changes):
    training = {**TRAINING, **changes}
    return provenance.build_provenance(settings, DATASET, HVG, training, env, "envs/scvi.yaml")


def test_provenance_records_settings_input_genes_software_and_training(tmp_path):
    found = record(tmp_path)
    settings = model_settings(CFG, "m")
    text = json.dumps(found["settings"], sort_keys=True)
    assert found["settings"]["dataset"]["subset"] == {"tissue": ["lung"]}
    assert found["settings"]["criticism"]["n_samples"] > 0  # every section, not a rule's share
    assert "publish" not in found["settings"]  # where it goes is not how it was made
    assert found["settings_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert found["settings_sha256"] == provenance.settings_record(settings)[1]
    assert found["input"]["source"] == "builtin:synthetic-iid"
    assert found["input"]["sha256"] == "ab" * 32 and found["input"]["n_cells"] == 400
    assert found["genes"] == {
        "n_genes": 2,
        "sha256": hashlib.sha256(b"g1\ng2").hexdigest(),
    }
    assert found["workflow"]["commit"] == "c0ffee"
    assert found["environment_file"] == {
        "path": "envs/scvi.yaml",
        "sha256": hashlib.sha256(b"name: scvi\n").hexdigest(),
    }
    assert found["hardware"]["cpu_threads"] == 4
    assert found["training"]["cells_per_second"] == 150.0  # 300 cells x 5 epochs / 10 s
    assert found["training"]["phases"][0]["stopped"] == "max_epochs reached"
    assert found["trained_at"] == "2026-01-01T00:00:00+00:00"


def test_a_changed_setting_changes_the_settings_hash(tmp_path):
    settings = model_settings(CFG, "m")
    other = settings.replace(train=settings.train.replace(seed=1))
    assert provenance.settings_record(settings)[1] != provenance.settings_record(other)[1]


def test_provenance_rule_declares_every_section():
    settings = rule_settings(model_settings(CFG, "m"), "provenance")
    full = model_settings(CFG, "m")
    assert provenance.settings_record(settings) == provenance.settings_record(full)


def test_workflow_source_is_this_checkout_or_unknown(tmp_path):
    here = provenance.workflow_source()
    head = subprocess.run(
        ["git", "-C", str(provenance.ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode == 0:
        assert here["commit"] == head.stdout.strip()
        assert isinstance(here["modified"], bool)
    # a folder that is not this workflow's checkout (even inside another repository)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "pkg").mkdir()
    elsewhere = provenance.workflow_source(tmp_path / "pkg")
    assert elsewhere["commit"] == "unknown" and elsewhere["modified"] == "unknown"


def test_remote_urls_lose_credentials_and_become_code_links():
    assert (
        provenance.without_credentials("https://user:tok@github.com/o/r.git")
        == "https://github.com/o/r.git"
    )
    source = {"version": "0.1.0", "commit": "abc", "modified": False}
    assert provenance.code_reference(source) == "scvi-hub-workflow 0.1.0, commit abc"
    remote = {**source, "remote": "git@github.com:o/r.git"}
    assert provenance.code_reference(remote) == "https://github.com/o/r/tree/abc"
    modified = {**source, "modified": True}
    assert provenance.code_reference(modified).endswith("(with local modifications)")


def test_card_has_a_provenance_section_and_fills_the_code_url(tmp_path):
    found = record(tmp_path)
    lines = provenance_section(found)
    assert lines[0] == "# Provenance"
    table = lines[-1]
    assert "| Settings (sha256) | `" + found["settings_sha256"] + "` |" in table
    assert "| Subset | tissue in lung |" in table
    assert "SCVI 5 of 5 (max_epochs reached)" in table
    base = inputs()
    card_settings = base.settings.replace(card=base.settings.card.replace(training_code_url=None))
    card = render_card(
        type(base)(**{**base.__dict__, "settings": card_settings, "provenance": found})
    )
    assert "**Training Code URL**: scvi-hub-workflow 0.1.0, commit c0ffee" in card
    assert "# Provenance" in card and card.index("# Provenance") < card.index("# References")
    assert "**Training Code URL**: Not provided by uploader" in render_card(
        type(base)(**{**base.__dict__, "settings": card_settings})
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\n| x |\n|---|\n| 1 |\nnext\n", "a\n| x |\n|---|\n| 1 |\n\nnext\n"),
        ("| x |\n|---|\n\nnext\n", "| x |\n|---|\n\nnext\n"),
        ("| x |\n|---|\n", "| x |\n|---|\n"),
    ],
)
def test_a_blank_line_follows_every_table(text, expected):
    assert blank_line_after_tables(text) == expected


def test_no_card_table_runs_into_the_next_line():
    lines = render_card(inputs(labels_key="cell_type")).split("\n")
    for line, following in zip(lines, lines[1:], strict=False):
        if line.startswith("|"):
            assert following.startswith("|") or not following.strip(), (line, following)
