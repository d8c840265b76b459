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
        "resources/downloads/{sha256}.h5ad",
    log:
        "logs/downloads/{sha256}.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    params:
        url=url_of,
    script:
        "../scripts/download_dataset.py"


rule dataset:
    input:
        source_file,
    output:
        data=temp("results/{model}/dataset.h5ad"),
        summary="results/{model}/dataset.json",
    log:
        "logs/{model}/dataset.log",
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
    conda:
        "../../envs/scanpy.yaml"
    params:
        settings=settings_of("hvg"),
    script:
        "../scripts/select_hvg.py"
