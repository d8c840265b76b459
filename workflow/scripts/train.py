"""Rule train: train the configured model; save it with its data, history and summary."""

import anndata as ad
import torch
from scvi_hub_workflow.rule_io import atomic_dir, atomic_path, logged_to, write_json
from scvi_hub_workflow.settings import from_text
from scvi_hub_workflow.training import train_model

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    model, history, summary = train_model(
        ad.read_h5ad(snakemake.input.data),  # noqa: F821
        from_text(snakemake.params.settings),  # noqa: F821
        # model/ may be the published folder (minify: false, or a class that cannot be
        # minified), whose data hold the latent posterior the criticism and report read
        keep_latent=True,
        # with model.from_scvi: <model>, that model's folder
        pretrained_dir=getattr(snakemake.input, "pretrained", None),  # noqa: F821
    )
    with atomic_dir(snakemake.output.model) as tmp:  # noqa: F821
        model.save(str(tmp), overwrite=True, save_anndata=True)
    with atomic_path(snakemake.output.history) as tmp:  # noqa: F821
        history.to_csv(tmp, sep="\t")
    write_json(snakemake.output.summary, summary)  # noqa: F821
    log.info("training summary: %s", summary)
