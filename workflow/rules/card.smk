rule card:
    input:
        model=published_model_dir,
        cv="results/{model}/criticism/cv.json",
        de="results/{model}/criticism/de.json",
        training="results/{model}/training/summary.json",
        dataset="results/{model}/dataset.json",
        label_transfer=only_for(SCANVI_MODELS, "results/{model}/criticism/label_transfer.json"),
        integration=only_for(BATCH_MODELS, "results/{model}/criticism/integration.json"),
        query_check=only_for(QUERY_CHECK_MODELS, "results/{model}/criticism/query_check.json"),
    output:
        card=report(
            "results/{model}/card/README.md",
            caption="../report/card.rst",
            category="Model card",
            labels={"model": "{model}"},
        ),
        metadata="results/{model}/card/_scvi_required_metadata.json",
    log:
        "logs/{model}/card.log",
    benchmark:
        "results/{model}/benchmarks/card.tsv"
    conda:
        "../../envs/scvi.yaml"
    params:
        settings=settings_of("card"),
    script:
        "../scripts/render_card.py"


# Explicit files, not directory(): Snakemake would add a .snakemake_timestamp to the folder.
rule hub:
    input:
        model=published_model_dir,
        card=rules.card.output.card,
        metadata=rules.card.output.metadata,
    output:
        expand("results/{{model}}/hub/{file}", file=HUB_FILES),
    log:
        "logs/{model}/hub.log",
    localrule: True
    conda:
        "../../envs/scanpy.yaml"
    script:
        "../scripts/assemble_hub.py"
