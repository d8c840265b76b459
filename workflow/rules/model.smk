# The train rule's software environment (provenance.json records its checksum).
TRAIN_ENV = "envs/scvi.yaml"


rule train:
    input:
        unpack(get_train_inputs),
        # what the criticism can measure on the data, decided before the first training
        de_groups=planned_before_training("de_groups"),
        query_plan=planned_before_training("query_plan", check_applies("query_check")),
    output:
        model=directory("results/{model}/model"),
        history="results/{model}/training/history.tsv",
        summary="results/{model}/training/summary.json",
    log:
        "logs/{model}/train.log",
    benchmark:
        benchmark_of("train")
    # Every model's training first: it needs all cores, and the report jobs of a model that is
    # already trained (query check included) would otherwise hold one and make it wait.
    priority: 10
    conda:
        f"../../{TRAIN_ENV}"
    threads: 4
    resources:
        gpu=gpu_request,
        mem_mb=training_mem_mb,
        runtime=training_runtime,
    params:
        settings=settings_of("name", "model", "train"),
    script:
        "../scripts/train.py"


# Only for models whose published folder is the minified one (get_published_model).
rule minify:
    input:
        "results/{model}/model",
    output:
        directory("results/{model}/minified"),
    log:
        "logs/{model}/minify.log",
    benchmark:
        benchmark_of("minify")
    conda:
        "../../envs/scvi.yaml"
    resources:
        mem_mb=model_mem_mb,
    script:
        "../scripts/minify.py"
