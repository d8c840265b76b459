"""The key tables of config/README.md, made from the schema (its one source of keys, defaults
and descriptions): `python -m scvi_hub_workflow.config_docs config/README.md` rewrites them in
place; tests/test_config.py fails when the file is out of date.

Each table sits between `<!-- table: <section> -->` and `<!-- end of table -->` markers.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .config import load_schema
from .model_kinds import KINDS

TABLE = re.compile(r"(<!-- table: (\w+) -->\n)(.*?)(<!-- end of table -->)", re.DOTALL)
SECTIONS = ("model entry", "dataset", "model", "hvg", "train", "criticism", "card", "publish")


def _resolve(node: dict, schema: dict) -> dict:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return {**schema["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _default(node: dict, required: bool) -> str:
    if required:
        return "required"
    if "default" not in node:
        return "scvi-tools'"
    return f"`{json.dumps(node['default'])}`".replace('"', "") if node["default"] != "" else '`""`'


def _description(node: dict) -> str:
    return " ".join(str(node.get("description", "")).split())


def rows(section: str) -> list[tuple[str, str, str]]:
    """(key, default, meaning) of every key of one section of a model entry."""
    schema = load_schema()
    defs = schema["$defs"]
    if section == "model entry":
        entry = defs["model_entry"]
        found = []
        for key, node in entry["properties"].items():
            node = _resolve(node, schema)
            if key in ("dataset", "model"):
                found.append((key, "required", "As below."))
            elif node.get("type") == "object":
                found.append((key, "from `defaults`", "As below."))
            else:
                found.append((key, _default(node, False), _description(node)))
        return found
    node = defs[section]
    required = set(node.get("required", ()))
    found = []
    for key, sub in node["properties"].items():
        sub = _resolve(sub, schema)
        if "properties" in sub and section == "model":
            for inner, leaf in sub["properties"].items():
                leaf = _resolve(leaf, schema)
                found.append((f"{key}.{inner}", _default(leaf, False), _description(leaf)))
            continue
        meaning = _description(sub)
        if section == "model" and key == "class":
            meaning += " One of " + ", ".join(f"`{name}`" for name in KINDS) + "."
        found.append((key, _default(sub, key in required), meaning))
    return found


def table(section: str) -> str:
    lines = ["| key | default | meaning |", "|---|---|---|"]
    lines += [f"| `{key}` | {default} | {meaning} |" for key, default, meaning in rows(section)]
    return "\n".join(lines) + "\n"


def with_tables(text: str) -> str:
    """`text` with every marked table made anew from the schema."""

    def made(match: re.Match) -> str:
        section = match.group(2).replace("_", " ")
        if section not in SECTIONS:
            raise ValueError(f"no table for section {section!r}; known: {', '.join(SECTIONS)}")
        return match.group(1) + table(section) + match.group(4)

    return TABLE.sub(made, text)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "config/README.md")
    path.write_text(with_tables(path.read_text()))
