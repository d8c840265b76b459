rule provenance:
    input:
        dataset="results/{model}/dataset.json",
        hvg="results/{model}/hvg.tsv",
        training="results/{model}/training/summary.json",
        # the software environment the train rule runs in (this checkout's copy)
        env=Path(workflow.basedir) / TRAIN_ENV,
    output:
        "results/{model}/provenance.json",
    log:
        "logs/{model}/provenance.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    params:
        settings=settings_of(*RECORDED_SETTINGS),
        env=TRAIN_ENV,
    script:
        "../scripts/provenance.py"


rule card:
    input:
        unpack(get_check_results),
        model=get_published_model,
        cv="results/{model}/criticism/cv.json",
        de="results/{model}/criticism/de.json",
        training="results/{model}/training/summary.json",
        dataset="results/{model}/dataset.json",
        provenance=rules.provenance.output[0],
    output:
        card="results/{model}/card/README.md",
        # the card as the report shows it in the page (Markdown would only be a download)
        page=report(
            "results/{model}/card/README.html",
            caption="../report/card.rst",
            category="Model card",
            labels={"model": "{model}"},
        ),
        metadata="results/{model}/card/_scvi_required_metadata.json",
    log:
        "logs/{model}/card.log",
    benchmark:
        benchmark_of("card")
    conda:
        "../../envs/scvi.yaml"
    params:
        settings=settings_of(
            "name",
            "description",
            "tissues",
            "card",
            "dataset",
            "hvg",
            "model.class",
            "model.setup",
            "publish.repo_id",
        ),
    script:
        "../scripts/card.py"


# Explicit files, not directory(): Snakemake would add a .snakemake_timestamp to the folder.
rule hub:
    input:
        model=get_published_model,
        card=rules.card.output.card,
        metadata=rules.card.output.metadata,
        provenance=rules.provenance.output[0],
    output:
        expand("results/{{model}}/hub/{file}", file=HUB_FILES),
    log:
        "logs/{model}/hub.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    script:
        "../scripts/hub.py"
