rule builtin_dataset:
    output:
        "resources/builtin/{name}.h5ad",
    log:
        "logs/builtin/{name}.log",
    conda:
        "../../envs/scvi.yaml"
    script:
        "../scripts/builtin_dataset.py"


rule download:
    output:
        "resources/downloads/{digest}.h5ad",
    log:
        "logs/downloads/{digest}.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    params:
        url=lambda wc: download_source(wc).location,
        sha256=lambda wc: download_source(wc).sha256,
        checksum=lambda wc: download_source(wc).checksum,
    script:
        "../scripts/download_dataset.py"


# One job per CELLxGENE id, whatever the number of models (tissues) that read it.
rule cellxgene_download:
    output:
        data="resources/cellxgene/{cellxgene_id}.h5ad",
        record="resources/cellxgene/{cellxgene_id}.json",
    log:
        "logs/cellxgene/{cellxgene_id}.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    params:
        sha256=lambda wc: cellxgene_source(wc).sha256,
        checksum=lambda wc: cellxgene_source(wc).checksum,
    script:
        "../scripts/cellxgene_download.py"


rule dataset:
    input:
        unpack(dataset_inputs),
    output:
        data=temp("results/{model}/dataset.h5ad"),
        summary="results/{model}/dataset.json",
    log:
        "logs/{model}/dataset.log",
    benchmark:
        "results/{model}/benchmarks/dataset.tsv"
    conda:
        "../../envs/scanpy.yaml"
    params:
        settings=settings_of("dataset"),
    script:
        "../scripts/prepare_dataset.py"


rule hvg:
    input:
        "results/{model}/dataset.h5ad",
    output:
        data="results/{model}/hvg.h5ad",
        table=report(
            "results/{model}/hvg.tsv",
            caption="../report/hvg.rst",
            category="Highly variable genes",
            labels={"model": "{model}"},
        ),
    log:
        "logs/{model}/hvg.log",
    benchmark:
        "results/{model}/benchmarks/hvg.tsv"
    conda:
        "../../envs/scanpy.yaml"
    params:
        settings=settings_of("hvg"),
    script:
        "../scripts/select_hvg.py"
