"""Rule builtin_dataset: generate a built-in dataset into resources/builtin/."""

from scvi_hub_workflow.builtin_datasets import write_builtin
from scvi_hub_workflow.rule_io import logged_to

with logged_to(snakemake.log[0]):  # noqa: F821
    write_builtin(snakemake.wildcards.name, snakemake.output[0])  # noqa: F821
