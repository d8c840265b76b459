rule builtin_dataset:
    output:
        BUILTIN_DATA,
    log:
        "logs/builtin/{name}.log",
    conda:
        "../../envs/scvi.yaml"
    script:
        "../scripts/builtin_dataset.py"


rule download:
    output:
        DOWNLOADED_DATA,
    log:
        "logs/downloads/{digest}.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    params:
        url=lambda wc: get_download_source(wc).location,
        sha256=lambda wc: get_download_source(wc).sha256,
        checksum=lambda wc: get_download_source(wc).checksum,
    script:
        "../scripts/download.py"


# One job per CELLxGENE id, whatever the number of models (tissues) that read it.
rule cellxgene_download:
    output:
        data=CELLXGENE_DATA,
        record=CELLXGENE_RECORD,
    log:
        "logs/cellxgene/{cellxgene_id}.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    params:
        sha256=lambda wc: get_cellxgene_source(wc).sha256,
        checksum=lambda wc: get_cellxgene_source(wc).checksum,
    script:
        "../scripts/cellxgene_download.py"


rule dataset:
    input:
        unpack(get_dataset_inputs),
    output:
        data=temp("results/{model}/dataset.h5ad"),
        summary="results/{model}/dataset.json",
    log:
        "logs/{model}/dataset.log",
    benchmark:
        benchmark_of("dataset")
    conda:
        "../../envs/scanpy.yaml"
    params:
        # the model's class and labels: what its labels column must hold; the split, minibatch
        # and HVG flavor: how few cells and genes can train (trainable.py); the HVG batches:
        # a column it checks
        settings=settings_of(
            "name",
            "dataset",
            "model.setup",
            "model.class",
            "model.every_cell_labelled",
            "model.params",
            "train.seed",
            "train.train_size",
            "train.early_stopping",
            "train.batch_size",
            "hvg.flavor",
            "hvg.batch_aware",
            "hvg.batch_key",
        ),
    script:
        "../scripts/dataset.py"


rule hvg:
    input:
        "results/{model}/dataset.h5ad",
    output:
        data="results/{model}/hvg.h5ad",
        table="results/{model}/hvg.tsv",
    log:
        "logs/{model}/hvg.log",
    benchmark:
        benchmark_of("hvg")
    conda:
        "../../envs/scanpy.yaml"
    params:
        settings=settings_of("hvg", "model.setup"),
    script:
        "../scripts/hvg.py"
