rule train:
    input:
        "results/{model}/hvg.h5ad",
        # Checked before training; ancient: a new criticism.min_cells re-plans, never retrains.
        de_groups=ancient("results/{model}/criticism/groups.json"),
    output:
        model=directory("results/{model}/model"),
        history=report(
            "results/{model}/training/history.tsv",
            caption="../report/history.rst",
            category="Training",
            labels={"model": "{model}"},
        ),
        summary="results/{model}/training/summary.json",
    log:
        "logs/{model}/train.log",
    benchmark:
        "results/{model}/resource_usage/train.tsv"
    # Every model's training first: it needs all cores, and the report jobs of a model that is
    # already trained (query check included) would otherwise hold one and make it wait.
    priority: 10
    conda:
        "../../envs/scvi.yaml"
    threads: 4
    resources:
        gpu=gpu_request,
        mem_mb=lambda wc, input, attempt: (4000 + 6 * input.size_mb) * attempt,
        runtime=lambda wc, input, attempt: (60 + input.size_mb // 10) * attempt,
    params:
        settings=settings_of("train"),
    script:
        "../scripts/train_model.py"


rule minify:
    input:
        "results/{model}/model",
    output:
        directory("results/{model}/minified"),
    log:
        "logs/{model}/minify.log",
    benchmark:
        "results/{model}/benchmarks/minify.tsv"
    conda:
        "../../envs/scvi.yaml"
    resources:
        mem_mb=lambda wc, input, attempt: (2000 + 3 * input.size_mb) * attempt,
    script:
        "../scripts/minify_model.py"
