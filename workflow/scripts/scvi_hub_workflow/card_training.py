"""The card's training data: named (source, version, subset, genes) rather than given as a
training_data_url, which scvi-tools downloads on every load of the model."""

from __future__ import annotations

from .settings import ModelSettings

# scvi-tools 1.4.2's HubMetadata checks a training_data_url with a full GET (hub/_url.py):
# every HubModel(...) of the folder downloads it, an atlas of gigabytes for one tissue's model.
URL_COST = (
    "scvi-tools 1.4.2 checks this URL with a full download (`requests.get`) whenever the "
    "model is loaded with `HubModel(...)`: every load of this model downloads the whole file "
    "at this URL{size}."
)


def _url_cost(url: str | None) -> list[str]:
    return [URL_COST.format(size="")] if url else []


def training_data_url_warning(url: str | None, dataset_summary: dict) -> str | None:
    """What a configured card.training_data_url costs every user of the model (for the log),
    or None when it is not set."""
    if not url:
        return None
    size = (dataset_summary.get("resolved") or {}).get("size")
    size_text = f" ({size / 2**20:,.1f} MiB for the file this model was read from)" if size else ""
    return "card.training_data_url is set: " + URL_COST.format(size=size_text)


def training_data_section(settings: ModelSettings, dataset: dict) -> list[str]:
    """Where the training data came from: the source as configured and as resolved (its
    version), the subset of cells, and the genes kept (HVG settings). Named here rather than
    as a training_data_url, which scvi-tools downloads on every load."""
    d, hvg = settings.dataset, settings.hvg
    lines = [f"- **Source**: `{d.source}`"]
    resolved = dataset.get("resolved") or {}
    if resolved.get("dataset_version_id"):
        newest = (
            " (the dataset's newest version when first downloaded)"
            if resolved.get("newest_of_dataset")
            else ""
        )
        lines.append(
            f"- **Version**: CELLxGENE dataset {resolved.get('dataset_id')}, version "
            f"{resolved['dataset_version_id']}{newest}; file {resolved.get('url')}, "
            f"sha256 {resolved.get('sha256')}"
        )
    elif dataset.get("source_url"):
        lines.append(f"- **File**: {dataset['source_url']}")
    if dataset.get("verified"):
        checked = ", ".join(f"{k} {v}" for k, v in sorted(dataset["verified"].items()))
        lines.append(f"- **Verified against**: {checked}")
    subset = (
        ", ".join(f"{k}: {v}" for k, v in sorted(d.subset.items())) if d.subset else "all cells"
    )
    if d.subsample_cells:
        subset += f"; a random {d.subsample_cells} of them (seed train.seed)"
    joined = "".join(
        f"; `{name}` is {' and '.join(f'`{c}`' for c in columns)} joined with `_`"
        for name, columns in sorted((d.join_columns or {}).items())
    )
    lines.append(
        f"- **Cells**: {subset} ({dataset.get('n_cells', 'n/a')} of the file's "
        f"{dataset.get('n_cells_in_file', 'n/a')}); counts from `{d.counts}`{joined}"
    )
    n_top = "every gene" if hvg.n_top_genes is None else f"the top {hvg.n_top_genes}"
    batches = hvg.batch_column(settings.model.setup.batch_key)
    per_batch = f"per batch of `{batches}`" if batches else "over all cells"
    span = f", span {hvg.span}" if hvg.flavor == "seurat_v3" else ""
    lines.append(
        f"- **Genes**: {n_top} of {dataset.get('n_genes', 'n/a')} by highly variable gene "
        f"selection (flavor {hvg.flavor}{span}, ranked {per_batch})"
    )
    if d.mudata:
        lines[-1] += f" of the MuData modality `{d.mudata['rna']}`"
    if proteins := dataset.get("proteins"):
        read = f" (from the MuData modality `{d.mudata['protein']}`)" if d.mudata else ""
        lines.append(
            f"- **Proteins**: all {proteins['n_proteins']}, in "
            f'`obsm["{proteins["obsm_key"]}"]`{read}'
        )
    return ["**Training data**:", "\n".join(lines)]
