"""Many models from one config entry: a template and a list of tissues.

"SCANVI on these 24 tissues of one atlas" is one template: a model entry in which `{tissue}`
(the item as written, e.g. `salivary gland`, what a `dataset.subset` must match) and
`{tissue_id}` (`salivary_gland`, fit for names and repo ids, as the scvi-hub collection spells
its tissues: `scvi-tools/tabula-sapiens-bone_marrow-scvi`) are replaced in every string.
Each item becomes an ordinary model entry under `models`, checked like a hand-written one.
All expanded models name the same `dataset.source`, so the file is downloaded once.
"""

from __future__ import annotations

import copy
import re
from typing import Any


class TemplateError(ValueError):
    """A template that cannot be expanded (e.g. two models with one name)."""


def tissue_id(tissue: str) -> str:
    """`Salivary Gland` -> `salivary_gland`: lower case, other characters as single `_`."""
    return re.sub(r"[^a-z0-9]+", "_", tissue.lower()).strip("_") or "tissue"


def _substitute(value: Any, tissue: str) -> Any:
    if isinstance(value, str):
        # str.replace, not str.format: descriptions may hold other braces.
        return value.replace("{tissue_id}", tissue_id(tissue)).replace("{tissue}", tissue)
    if isinstance(value, dict):
        return {_substitute(k, tissue): _substitute(v, tissue) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, tissue) for v in value]
    return copy.deepcopy(value)


def expand_templates(config: dict) -> tuple[dict, dict[str, str]]:
    """Return (config with every template expanded into `models`, {model name: template}).

    An expanded model's `tissues` defaults to `[<tissue>]`, so its card is tagged
    `tissue:<tissue>`. A name clash (with a hand-written model or another template) is an error.
    """
    templates = config.get("templates") or {}
    if not templates:
        return config, {}
    models = dict(config.get("models") or {})
    origin: dict[str, str] = {}
    for template_name, template in templates.items():
        pattern = template.get("name") or f"{template_name}-{{tissue_id}}"
        for tissue in template["tissues"]:
            name = _substitute(pattern, tissue)
            if name in models:
                where = f"templates.{origin[name]}" if name in origin else "models"
                raise TemplateError(
                    f"templates.{template_name}: the model name {name!r} (for tissue "
                    f"{tissue!r}) is already declared in {where}"
                )
            entry = _substitute(template["model"], tissue)
            if isinstance(entry, dict):
                entry.setdefault("tissues", [tissue])
            models[name] = entry
            origin[name] = template_name
    expanded = {k: v for k, v in config.items() if k != "templates"}
    expanded["models"] = models
    return expanded, origin


def annotate(message: str, origin: dict[str, str]) -> str:
    """Say which template an expanded model came from, after each `models.<name>` key."""
    if not origin:
        return message
    names = "|".join(sorted(map(re.escape, origin), key=len, reverse=True))

    def note(match: re.Match) -> str:
        return f"{match.group(0)} (expanded from templates.{origin[match.group(1)]})"

    return re.sub(rf"models\.({names})(?=[.:\s]|$)[^\s:]*", note, message)
