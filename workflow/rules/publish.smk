rule publish:
    input:
        hub=get_hub_files,
        model="results/{model}/model",
    output:
        "results/{model}/publish.json",
    log:
        log="logs/{model}/publish.log",
        # the certification of the push, passed or why not: a log, so that a failed job keeps it
        certification="logs/{model}/certification.json",
    localrule: True
    conda:
        "../../envs/publish.yaml"
    params:
        # Settings only; the token is read from the environment inside the job.
        settings=settings_of("publish"),
    script:
        "../scripts/publish.py"
