"""HTML pages for the Snakemake report, which shows HTML in the page and offers other files
(Markdown, TSV, JSON) only as downloads: the model card, the table of all models and every
TSV/JSON result of a model as pages."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from .rule_io import atomic_dir

STYLE = """
body { font-family: sans-serif; margin: 1em 2em; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; }
"""


def page(title: str, body: str) -> str:
    """A self-contained HTML page."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def markdown_page(text: str, title: str) -> str:
    """A Markdown document (a model card) as a page: CommonMark with tables; the YAML front
    matter is shown as a code block, as the Hub shows it in the card's metadata."""
    from markdown_it import MarkdownIt

    front = ""
    if text.startswith("---\n") and "\n---\n" in text[4:]:
        header, text = text[4:].split("\n---\n", 1)
        front = f"<pre>{html.escape(header)}</pre>\n"
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)
    return page(title, front + body)


def table_page(table: pd.DataFrame, title: str, caption: str = "") -> str:
    """A table as a page, values as the TSV writes them (n/a for missing)."""
    shown = table.to_html(index=False, na_rep="n/a", float_format=lambda v: f"{v:.3f}")
    intro = f"<p>{html.escape(caption)}</p>\n" if caption else ""
    return page(title, f"<h1>{html.escape(title)}</h1>\n{intro}{shown}")


# A results table longer than this is shown in part (hvg.tsv lists every gene of the data).
MAX_ROWS = 500
# A list longer than this in a JSON result is shown in part.
MAX_ITEMS = 40


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as the JSON writes it
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4g}"
    if value is None:
        return "n/a"
    return html.escape(str(value))


def _flat(value: dict, prefix: str = "") -> dict | None:
    """An object of objects of values as one row: nested keys joined by dots; None when a value
    is a list."""
    row = {}
    for key, item in value.items():
        if isinstance(item, dict):
            inner = _flat(item, f"{prefix}{key}.")
            if inner is None:
                return None
            row.update(inner)
        elif isinstance(item, list):
            return None
        else:
            row[f"{prefix}{key}"] = item
    return row


def _rows_table(rows: dict[str, dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows.values() for k in row))
    head = "<th></th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        f"<tr><th>{html.escape(str(name))}</th>"
        + "".join(f"<td>{_scalar(row.get(k))}</td>" for k in keys)
        + "</tr>"
        for name, row in rows.items()
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def json_html(value) -> str:
    """A JSON value as readable HTML: an object as a two-column table (nested objects nested),
    an object of several objects of values as one table (a row each: train, validation), a
    list of objects as a table, a list of values inline."""
    if isinstance(value, dict):
        if not value:
            return "<em>none</em>"
        if len(value) > 1 and all(isinstance(v, dict) and v for v in value.values()):
            rows = {key: _flat(item) for key, item in value.items()}
            if all(row is not None for row in rows.values()):
                return _rows_table(rows)
        rows = "".join(
            f"<tr><th>{html.escape(str(key))}</th><td>{json_html(item)}</td></tr>"
            for key, item in value.items()
        )
        return f"<table>{rows}</table>"
    if isinstance(value, list):
        shown, more = value[:MAX_ITEMS], len(value) - MAX_ITEMS
        tail = f" … ({more} more)" if more > 0 else ""
        if shown and all(isinstance(v, dict) for v in shown):
            keys = list(dict.fromkeys(k for v in shown for k in v))
            head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
            body = "".join(
                "<tr>" + "".join(f"<td>{json_html(v.get(k))}</td>" for k in keys) + "</tr>"
                for v in shown
            )
            return f"<table><tr>{head}</tr>{body}</table>{tail}"
        if not shown:
            return "<em>none</em>"
        return ", ".join(json_html(v) for v in shown) + tail
    return _scalar(value)


def json_page(data, title: str, caption: str = "") -> str:
    """A JSON result as a page: its content as tables, the JSON itself folded below."""
    intro = f"<p>{html.escape(caption)}</p>\n" if caption else ""
    raw = html.escape(json.dumps(data, indent=2))
    folded = f"<details><summary>The JSON</summary><pre>{raw}</pre></details>"
    return page(title, f"<h1>{html.escape(title)}</h1>\n{intro}{json_html(data)}\n{folded}")


def result_page(path, title: str) -> str:
    """A result file (.json or .tsv) as a page; a long table is shown in part, saying so."""
    path = Path(path)
    if path.suffix == ".json":
        return json_page(json.loads(path.read_text()), title, f"{path}")
    try:
        table = pd.read_csv(path, sep="\t", na_values="n/a", keep_default_na=False)
    except pd.errors.EmptyDataError:  # a check with nothing to tabulate writes an empty file
        table = pd.DataFrame()
    caption = str(path) if len(table.columns) else f"{path}: empty (nothing to tabulate)"
    if len(table) > MAX_ROWS:
        caption += f": the first {MAX_ROWS} of its {len(table)} rows (the file holds them all)"
        table = table.head(MAX_ROWS)
    return table_page(table, title, caption)


def write_result_pages(paths: list[str], out_dir, model: str) -> None:
    """One page per result file of ``model``, named after the file (``de.tsv`` →
    ``de.tsv.html``; the report labels it so), written atomically."""
    names = [Path(p).name for p in paths]
    if len(set(names)) < len(names):
        raise ValueError(f"result files of {model} share a name: {sorted(names)}")
    with atomic_dir(out_dir) as tmp:
        for path, name in zip(paths, names, strict=True):
            (tmp / f"{name}.html").write_text(result_page(path, f"{name} of {model}"))
