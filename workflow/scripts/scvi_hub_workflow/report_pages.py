"""HTML pages for the Snakemake report, which shows HTML in the page and offers other files
(Markdown, TSV) only as downloads: the model card and the table of all models as pages."""

from __future__ import annotations

import html

import pandas as pd

STYLE = """
body { font-family: sans-serif; margin: 1em 2em; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
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
