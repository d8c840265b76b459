# The report: figures of every model, label transfer of SCANVI models, integration metrics of
# models with a batch key, and one table of all models. `snakemake --report report.html` shows them, per model.


rule figures:
    input:
        history="results/{model}/training/history.tsv",
        # only obs and the latent posterior are read; the minified data hold no counts
        model="results/{model}/minified",
        cv_cells="results/{model}/criticism/cv_cells.tsv",
        cv_genes="results/{model}/criticism/cv_genes.tsv",
        de="results/{model}/criticism/de.tsv",
    output:
        training=report(
            "results/{model}/report/training.png",
            caption="../report/training.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "training curves"},
        ),
        latent=report(
            "results/{model}/report/latent.png",
            caption="../report/latent.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "latent UMAP"},
        ),
        ppc=report(
            "results/{model}/report/ppc.png",
            caption="../report/ppc.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "posterior predictive check"},
        ),
        de=report(
            "results/{model}/report/de.png",
            caption="../report/de_figure.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "DE benchmark"},
        ),
    log:
        "logs/{model}/figures.log",
    benchmark:
        "results/{model}/resource_usage/figures.tsv"
    conda:
        "../../envs/scanpy.yaml"
    params:
        settings=settings_of("report"),
    script:
        "../scripts/render_figures.py"


rule label_transfer:
    input:
        model="results/{model}/minified",
    output:
        summary="results/{model}/criticism/label_transfer.json",
        per_label=report(
            "results/{model}/criticism/label_transfer.tsv",
            caption="../report/label_transfer.rst",
            category="Label transfer",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "per-label table"},
        ),
        calibration="results/{model}/criticism/calibration.tsv",
        confusion=report(
            "results/{model}/report/confusion.png",
            caption="../report/confusion.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "label confusion matrix"},
        ),
        calibration_figure=report(
            "results/{model}/report/calibration.png",
            caption="../report/calibration.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "label calibration"},
        ),
    log:
        "logs/{model}/label_transfer.log",
    benchmark:
        "results/{model}/resource_usage/label_transfer.tsv"
    conda:
        "../../envs/scvi.yaml"
    params:
        settings=settings_of("report"),
    script:
        "../scripts/label_transfer.py"


# Models with a batch key: scib-metrics of the latent space beside the PCA baseline (jax and
# scib-metrics in their own env; no other job imports them).
rule integration:
    input:
        unpack(integration_inputs),
    output:
        summary="results/{model}/criticism/integration.json",
        table=report(
            "results/{model}/criticism/integration.tsv",
            caption="../report/integration.rst",
            category="Integration",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "metric table"},
        ),
        figure=report(
            "results/{model}/report/integration.png",
            caption="../report/integration_figure.rst",
            category="Figures",
            subcategory="{model}",
            labels={"model": "{model}", "figure": "integration metrics"},
        ),
    log:
        "logs/{model}/integration.log",
    benchmark:
        "results/{model}/resource_usage/integration.tsv"
    conda:
        "../../envs/integration.yaml"
    # Mostly jax compiling, one core's work (14.7 s CPU in 31.5 s wall on the default model):
    # one thread lets it run beside the figures instead of holding both cores of a small machine.
    threads: 1
    resources:
        mem_mb=4000,
    params:
        settings=settings_of("integration"),
    script:
        "../scripts/integration_metrics.py"


rule model_summary:
    input:
        # sorted: the table (and whether it re-runs) does not depend on the config's key order
        training=expand("results/{model}/training/summary.json", model=sorted(MODELS)),
        cv=expand("results/{model}/criticism/cv.json", model=sorted(MODELS)),
        de=expand("results/{model}/criticism/de.json", model=sorted(MODELS)),
        label_transfer=expand(
            "results/{model}/criticism/label_transfer.json", model=sorted(SCANVI_MODELS)
        ),
        integration=expand("results/{model}/criticism/integration.json", model=sorted(BATCH_MODELS)),
        query_check=expand(
            "results/{model}/criticism/query_check.json", model=sorted(QUERY_CHECK_MODELS)
        ),
    output:
        report(
            "results/models.tsv",
            caption="../report/models.rst",
            category="Summary",
            labels={"table": "all models"},
        ),
    log:
        "logs/model_summary.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    script:
        "../scripts/summarise_models.py"
