# scvi-hub-workflow: from a single-cell dataset to a trained, criticised and published
# scvi-hub model, for every entry under `models:` in the config.
#
# results/{model}/
#   dataset.json            what was read and validated
#   hvg.h5ad, hvg.tsv       the highly variable genes and their ranking
#   model/                  the trained model with its training data (model.pt, adata.h5ad)
#   training/               history.tsv (loss per epoch), summary.json (device, epochs, time)
#   minified/               the model with a minified AnnData (latent posterior only)
#   criticism/              cv.json (posterior predictive check), de.tsv / de.json (DE benchmark)
#                           query_check.json (a held-out batch mapped with scArches)
#                           cells.tsv (every cell's DE group), groups.json (checked before training)
#   card/                   README.md (model card), _scvi_required_metadata.json
#   hub/                    exactly the files published to the Hugging Face Hub
#   publish.json            the manifest (publishing disabled) or the receipt of the commit
#   report/                 the report's figures (PNG); results/models.tsv: all models' metrics
from snakemake.utils import min_version

min_version("9.4.0")


# The config (config/config.yaml, or the files given with --configfile instead) is read and
# checked in workflow/rules/common.smk, before any job runs.


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/criticism.smk"
include: "workflow/rules/card.smk"
include: "workflow/rules/publish.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        expand("results/{model}/publish.json", model=MODELS),
        get_report_files,
