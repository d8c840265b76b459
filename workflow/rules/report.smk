# The report: figures of every model, its TSV/JSON results as pages and one table of all models
# (the optional checks' figures come with their rules, in criticism.smk). `snakemake --report
# report.html` shows them, per model.


rule figures:
    input:
        history="results/{model}/training/history.tsv",
        # only obs and the latent posterior are read
        model=get_published_model,
        cv="results/{model}/criticism/cv.json",
        cv_cells="results/{model}/criticism/cv_cells.tsv",
        cv_genes="results/{model}/criticism/cv_genes.tsv",
        cv_protein_cells="results/{model}/criticism/cv_protein_cells.tsv",
        cv_proteins="results/{model}/criticism/cv_proteins.tsv",
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
        benchmark_of("figures")
    conda:
        "../../envs/scanpy.yaml"
    params:
        settings=settings_of("model.class", "model.setup", "train.seed"),
    script:
        "../scripts/figures.py"


rule model_summary:
    input:
        unpack(get_summary_inputs),
    output:
        table="results/models.tsv",
        # the table as the report shows it in the page (a TSV would only be a download)
        page=report(
            "results/models.html",
            caption="../report/models.rst",
            category="Summary",
            labels={"table": "all models"},
        ),
    log:
        "logs/model_summary.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    params:
        # the config's models: another config (other models) makes the table again
        models=sorted(MODELS),
    script:
        "../scripts/model_summary.py"


# The report shows HTML in the page and offers a TSV or JSON only as a download: every result
# file of the model (get_result_files) as a page, labelled with the file's name.
rule result_pages:
    input:
        get_result_files,
    output:
        report(
            directory("results/{model}/report/results"),
            patterns=["{result}.html"],
            caption="../report/results.rst",
            category="Results",
            subcategory="{model}",
            labels={"model": "{model}", "result": "{result}"},
        ),
    log:
        "logs/{model}/result_pages.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    script:
        "../scripts/result_pages.py"
