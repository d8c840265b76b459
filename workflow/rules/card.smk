rule card:
    input:
        model=published_model_dir,
        cv="results/{model}/criticism/cv.json",
        de="results/{model}/criticism/de.json",
        training="results/{model}/training/summary.json",
    output:
        directory("results/{model}/card"),
    params:
        settings=card_settings,
    log:
        "logs/{model}/card.log",
    conda:
        "../../envs/scvi.yaml"
    script:
        "../scripts/render_card.py"


rule hub:
    input:
        model=published_model_dir,
        card="results/{model}/card",
    output:
        directory("results/{model}/hub"),
    log:
        "logs/{model}/hub.log",
    conda:
        "../../envs/scanpy.yaml"
    localrule: True
    script:
        "../scripts/assemble_hub.py"
