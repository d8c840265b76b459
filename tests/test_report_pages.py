"""The report's HTML pages: the model cards, the table of all models, every TSV/JSON result."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scvi_hub_workflow.card import render_card
from scvi_hub_workflow.report_pages import markdown_page, table_page
from test_card import inputs


def test_a_card_becomes_a_page_with_its_tables_and_front_matter():
    card = render_card(inputs(labels_key="cell_type", tissues=["lung"]))
    page = markdown_page(card, "Model card of m")
    assert page.startswith("<!DOCTYPE html>") and "<title>Model card of m</title>" in page
    assert "<h1>Model Description</h1>" in page
    assert page.count("<table>") >= 4  # CV (cells, genes), DE, registry, statistics
    assert "<pre>library_name: scvi-tools" in page  # the front matter, shown as the Hub does
    assert "---" not in page.split("</pre>", 1)[1].split("<table>")[0]


def test_the_table_of_models_becomes_a_page():
    table = pd.DataFrame({"model": ["a", "b"], "gene_cv_pearson_all": [0.91234, np.nan]})
    page = table_page(table, "Every model of the config")
    assert "<table" in page and "<td>0.912</td>" in page and "<td>n/a</td>" in page


def test_a_json_result_becomes_tables_with_the_json_folded_below():
    from scvi_hub_workflow.report_pages import json_page

    data = {
        "n_cells": 600,
        "pearson": 0.912345,
        "subset": {"tissue": ["lung", "blood"]},
        "per_phase": [{"phase": "scvi", "epochs": 3}, {"phase": "scanvi", "epochs": 2}],
        "missing": None,
    }
    page = json_page(data, "cv.json of m", "results/m/criticism/cv.json")
    assert "<th>n_cells</th><td>600</td>" in page and "<td>0.9123</td>" in page
    assert "<th>tissue</th><td>lung, blood</td>" in page  # nested object, nested table
    assert "<tr><th>phase</th><th>epochs</th></tr><tr><td>scvi</td><td>3</td></tr>" in page
    assert "<th>missing</th><td>n/a</td>" in page
    assert "<details><summary>The JSON</summary><pre>{\n" in page


def test_every_result_file_becomes_a_page_named_after_it(tmp_path):
    from scvi_hub_workflow import report_pages

    (tmp_path / "cv.json").write_text('{"ran": true}')
    genes = pd.DataFrame({"gene": [f"g{i}" for i in range(report_pages.MAX_ROWS + 5)]})
    genes["highly_variable"] = genes.index < 3
    genes.to_csv(tmp_path / "hvg.tsv", sep="\t", index=False)
    out = tmp_path / "pages"
    report_pages.write_result_pages(
        [str(tmp_path / "cv.json"), str(tmp_path / "hvg.tsv")], out, "m"
    )
    assert sorted(p.name for p in out.iterdir()) == ["cv.json.html", "hvg.tsv.html"]
    hvg = (out / "hvg.tsv.html").read_text()
    assert "<title>hvg.tsv of m</title>" in hvg and "<td>g0</td>" in hvg
    assert f"the first {report_pages.MAX_ROWS} of its {report_pages.MAX_ROWS + 5} rows" in hvg
    assert f"<td>g{report_pages.MAX_ROWS}</td>" not in hvg
    with pytest.raises(ValueError, match="share a name"):
        report_pages.write_result_pages([str(tmp_path / "cv.json")] * 2, out, "m")


def test_an_object_of_objects_becomes_one_table_a_row_each():
    from scvi_hub_workflow.report_pages import json_html

    splits = {"train": {"mae": 0.5, "ceiling": {"mae": 0.25}}, "validation": {"mae": 0.75}}
    shown = json_html(splits)
    assert "<tr><th></th><th>mae</th><th>ceiling.mae</th></tr>" in shown
    assert "<tr><th>validation</th><td>0.75</td><td>n/a</td></tr>" in shown
    assert json_html({"ran": True}) == "<table><tr><th>ran</th><td>true</td></tr></table>"


def test_an_empty_result_table_is_a_page_that_says_so(tmp_path):
    from scvi_hub_workflow.report_pages import result_page

    empty = tmp_path / "integration.tsv"
    empty.write_text("")
    assert "empty (nothing to tabulate)" in result_page(empty, "integration.tsv of m")
