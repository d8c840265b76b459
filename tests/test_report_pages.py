"""The report's HTML pages of the model cards and of the table of all models."""

from __future__ import annotations

import numpy as np
import pandas as pd
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
