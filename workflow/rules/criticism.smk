rule posterior_predictive_check:
    input:
        model="results/{model}/minified",
        data="results/{model}/hvg.h5ad",
    output:
        report(
            "results/{model}/criticism/cv.json",
            caption="../report/cv.rst",
            category="Posterior predictive check",
            labels={"model": "{model}"},
        ),
    log:
        "logs/{model}/posterior_predictive_check.log",
    benchmark:
        "results/{model}/benchmarks/posterior_predictive_check.tsv"
    conda:
        "../../envs/scvi.yaml"
    params:
        settings=ppc_settings,
    script:
        "../scripts/posterior_predictive_check.py"


rule de_benchmark:
    input:
        model="results/{model}/minified",
        data="results/{model}/hvg.h5ad",
    output:
        table=report(
            "results/{model}/criticism/de.tsv",
            caption="../report/de.rst",
            category="Differential expression benchmark",
            labels={"model": "{model}"},
        ),
        summary="results/{model}/criticism/de.json",
    log:
        "logs/{model}/de_benchmark.log",
    benchmark:
        "results/{model}/benchmarks/de_benchmark.tsv"
    conda:
        "../../envs/scvi.yaml"
    params:
        settings=de_settings,
    script:
        "../scripts/de_benchmark.py"
