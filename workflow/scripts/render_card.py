"""Rule card: render README.md and _scvi_required_metadata.json for the published model."""

import json
from pathlib import Path

from scvi_hub_workflow.card import (
    CardInputs,
    SavedModel,
    card_versions,
    metadata,
    render_card,
    with_source_url,
)
from scvi_hub_workflow.config import from_text
from scvi_hub_workflow.rule_io import atomic_path, logged_to

with logged_to(snakemake.log[0]):  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    dataset = json.loads(Path(inputs.dataset).read_text())
    settings = with_source_url(from_text(snakemake.params.settings), dataset)  # noqa: F821
    saved = SavedModel.from_dir(inputs.model)
    training = json.loads(Path(inputs.training).read_text())
    found = card_versions(saved, training)
    card = render_card(
        CardInputs(
            settings=settings,
            saved=saved,
            cv=json.loads(Path(inputs.cv).read_text()),
            de=json.loads(Path(inputs.de).read_text()),
            training=training,
            versions=found,
            label_transfer=(
                json.loads(Path(inputs.label_transfer).read_text())
                if inputs.label_transfer
                else None
            ),
            integration=(
                json.loads(Path(inputs.integration).read_text()) if inputs.integration else None
            ),
            query_check=(
                json.loads(Path(inputs.query_check).read_text()) if inputs.query_check else None
            ),
        )
    )
    meta = metadata(saved.model_class, found, settings.card.training_data_url)
    with atomic_path(snakemake.output.card) as tmp:  # noqa: F821
        tmp.write_text(card)
    with atomic_path(snakemake.output.metadata) as tmp:  # noqa: F821
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
