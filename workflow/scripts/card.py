"""Rule card: render README.md and _scvi_required_metadata.json for the published model."""

import json
from pathlib import Path

from scvi_hub_workflow.card import (
    CardInputs,
    SavedModel,
    card_versions,
    metadata,
    render_card,
    training_data_url_warning,
)
from scvi_hub_workflow.checks import CHECKS
from scvi_hub_workflow.report_pages import markdown_page
from scvi_hub_workflow.rule_io import atomic_path, logged_to
from scvi_hub_workflow.settings import from_text


def read(path):
    return json.loads(Path(path).read_text())


with logged_to(snakemake.log[0]) as log:  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    settings = from_text(snakemake.params.settings)  # noqa: F821
    dataset = read(inputs.dataset)
    if warning := training_data_url_warning(settings.card.training_data_url, dataset):
        log.warning(warning)
    saved = SavedModel.from_dir(inputs.model)
    training = read(inputs.training)
    found = card_versions(saved, training)
    card = render_card(
        CardInputs(
            settings=settings,
            saved=saved,
            cv=read(inputs.cv),
            de=read(inputs.de),
            training=training,
            versions=found,
            dataset=dataset,
            # the optional checks that apply to this model are inputs named after them
            provenance=read(inputs.provenance),
            checks={
                c.name: read(getattr(inputs, c.name)) for c in CHECKS if hasattr(inputs, c.name)
            },
        )
    )
    meta = metadata(saved.model_class, found, settings.card.training_data_url)
    with atomic_path(snakemake.output.card) as tmp:  # noqa: F821
        tmp.write_text(card)
    with atomic_path(snakemake.output.page) as tmp:  # noqa: F821
        tmp.write_text(markdown_page(card, f"Model card of {settings.name}"))
    with atomic_path(snakemake.output.metadata) as tmp:  # noqa: F821
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
