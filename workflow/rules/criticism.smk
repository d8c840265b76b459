# Before training: the labelled groups the DE benchmark will compare (a criticism.min_cells that
# leaves fewer than two cell types stops here, not after training). Reads the obs table only.
rule de_groups:
    input:
        "results/{model}/hvg.h5ad",
    output:
        "results/{model}/criticism/groups.json",
    log:
        "logs/{model}/de_groups.log",
    localrule: True
    conda:
        "../../envs/scvi.yaml"
    params:
        settings=settings_of("criticism"),
    script:
        "../scripts/plan_de_groups.py"


# One job for both checks: the coefficient-of-variation metrics and the DE benchmark are
# computed from the same posterior predictive samples, drawn once, minibatch by minibatch.
rule posterior_predictive_check:
    input:
        model="results/{model}/minified",
        data="results/{model}/hvg.h5ad",
    output:
        cv=report(
            "results/{model}/criticism/cv.json",
            caption="../report/cv.rst",
            category="Posterior predictive check",
            labels={"model": "{model}", "metric": "coefficient of variation"},
        ),
        de_table=report(
            "results/{model}/criticism/de.tsv",
            caption="../report/de.rst",
            category="Posterior predictive check",
            labels={"model": "{model}", "metric": "differential expression"},
        ),
        de_summary="results/{model}/criticism/de.json",
        # every cell's label or Leiden cluster, so each DE row can be traced to its cells
        cells="results/{model}/criticism/cells.tsv",
        # the per-cell and per-gene CVs behind cv.json, for the report's scatter plots
        cv_cells="results/{model}/criticism/cv_cells.tsv",
        cv_genes="results/{model}/criticism/cv_genes.tsv",
    log:
        "logs/{model}/posterior_predictive_check.log",
    benchmark:
        "results/{model}/resource_usage/posterior_predictive_check.tsv"
    conda:
        "../../envs/scvi.yaml"
    # Minibatches are sampled and counted in parallel threads (criticism.py); cv.json records
    # how many this job had.
    threads: 4
    resources:
        mem_mb=4000,
    params:
        settings=settings_of("criticism"),
    script:
        "../scripts/posterior_predictive_check.py"


# Models with a batch key only (query_check_models in common.smk). Hold one batch out, train a
# reference on the others and map it with scArches; compared with the full model's latent.
rule query_check:
    input:
        data="results/{model}/hvg.h5ad",
        dataset="results/{model}/dataset.json",
        # the full model's latent posterior means, stored in the minified data (no counts)
        full_model="results/{model}/minified",
    output:
        report(
            "results/{model}/criticism/query_check.json",
            caption="../report/query_check.rst",
            category="Query mapping",
            labels={"model": "{model}", "metric": "query mapping check"},
        ),
    log:
        "logs/{model}/query_check.log",
    benchmark:
        "results/{model}/resource_usage/query_check.tsv"
    # After the posterior predictive checks: started first, its one thread kept their two
    # waiting (the default run on 2 cores idled a core for 27 s).
    priority: -10
    conda:
        "../../envs/scvi.yaml"
    # It trains a model, like the train rule, but its card waits for it: one thread lets it run
    # beside the other report jobs (the default run on 2 cores: 3 min 11 s with 2 threads, when
    # it held both cores). A thread count from the input size breaks `snakemake --report`.
    threads: 1
    resources:
        gpu=gpu_request,
        mem_mb=lambda wc, input, attempt: (4000 + 6 * input.size_mb) * attempt,
        runtime=lambda wc, input, attempt: (60 + input.size_mb // 10) * attempt,
    params:
        settings=settings_of("query_check"),
    script:
        "../scripts/query_check.py"
