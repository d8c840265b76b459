# Before training: the labelled groups the DE benchmark will compare (a criticism.min_cells that
# leaves fewer than two cell types stops here, not after training). Reads the obs table only.
# A checkpoint, so that a model not trained yet waits for it without it becoming an input of
# the model (planned_before_training in common.smk): a criticism change never retrains.
checkpoint de_groups:
    input:
        data="results/{model}/hvg.h5ad",
        # the batches and labels, for what the optional checks can measure
        dataset="results/{model}/dataset.json",
    output:
        "results/{model}/criticism/groups.json",
    log:
        "logs/{model}/de_groups.log",
    localrule: True
    conda:
        "../../envs/scvi.yaml"
    params:
        settings=settings_of("criticism.min_cells", "model.setup"),
    script:
        "../scripts/de_groups.py"


# One job for both checks: the coefficient-of-variation metrics and the DE benchmark are
# computed from the same posterior predictive samples, drawn once, minibatch by minibatch.
rule posterior_predictive_check:
    input:
        model=get_published_model,
        data="results/{model}/hvg.h5ad",
        # not read: a re-planned criticism.min_cells re-runs this check
        groups="results/{model}/criticism/groups.json",
    output:
        cv="results/{model}/criticism/cv.json",
        de_table="results/{model}/criticism/de.tsv",
        de_summary="results/{model}/criticism/de.json",
        # every cell's label or Leiden cluster, so each DE row can be traced to its cells
        cells="results/{model}/criticism/cells.tsv",
        # the per-cell and per-gene CVs behind cv.json, for the report's scatter plots
        cv_cells="results/{model}/criticism/cv_cells.tsv",
        cv_genes="results/{model}/criticism/cv_genes.tsv",
        # a CITE-seq model's per cell over its proteins and per protein (others: empty)
        cv_protein_cells="results/{model}/criticism/cv_protein_cells.tsv",
        cv_proteins="results/{model}/criticism/cv_proteins.tsv",
    log:
        "logs/{model}/posterior_predictive_check.log",
    benchmark:
        benchmark_of("posterior_predictive_check")
    conda:
        "../../envs/scvi.yaml"
    # Minibatches are sampled and counted in parallel threads; cv.json records how many.
    threads: 4
    resources:
        mem_mb=4000,
    params:
        # the class: whether it can sample counts (model_kinds), else the results say why not;
        # only the criticism keys it reads
        settings=settings_of(
            "criticism.n_samples",
            "criticism.batch_size",
            "criticism.alpha",
            "criticism.top_n",
            "criticism.min_cells",
            "criticism.cluster_resolution",
            "model.class",
            "model.setup",
            "train.seed",
        ),
    script:
        "../scripts/posterior_predictive_check.py"


# Before training, for the models the query check applies to (checks.py): from the batches and
# labelled cells in dataset.json, the batch it will hold out, or why it cannot run (a
# criticism.query_batch the data cannot serve stops the run here). A checkpoint, like de_groups.
checkpoint query_plan:
    input:
        dataset="results/{model}/dataset.json",
    output:
        "results/{model}/criticism/query_plan.json",
    log:
        "logs/{model}/query_plan.log",
    localrule: True
    conda:
        "../../envs/scvi.yaml"
    params:
        settings=settings_of(
            "model.class",
            "model.setup",
            "criticism.query_check",
            "criticism.query_batch",
            "criticism.query_check_max_cells",
        ),
    script:
        "../scripts/query_plan.py"


# Models with a batch key whose class maps queries (checks.py). Hold the planned batch out,
# train a reference on the others and map it with scArches; compared with the full model's
# latent.
rule query_check:
    input:
        data="results/{model}/hvg.h5ad",
        # the batch to hold out, or why the check cannot run (decided before training)
        plan="results/{model}/criticism/query_plan.json",
        # the full model's latent posterior means, stored with the published model's data
        full_model=get_published_model,
    output:
        "results/{model}/criticism/query_check.json",
    log:
        "logs/{model}/query_check.log",
    benchmark:
        benchmark_of("query_check")
    # After the posterior predictive checks, which use more threads and are on the card's path.
    priority: -10
    conda:
        "../../envs/scvi.yaml"
    # It trains a model like the train rule, but one thread lets it run beside the other
    # report jobs on a small machine (benchmarks/README.md). Not sized from the input: a thread
    # count from the input size breaks `snakemake --report`.
    threads: 1
    resources:
        gpu=gpu_request,
        mem_mb=training_mem_mb,
        runtime=training_runtime,
    params:
        # the model's own recipe; only the criticism.query_* keys, so that another criticism
        # key does not retrain the reference (whether it runs, and on which batch: the plan)
        settings=settings_of(
            "name",
            "model",
            "train",
            "criticism.query_batch",
            "criticism.query_epochs",
        ),
    script:
        "../scripts/query_check.py"


# Models with a classifier (checks.py): its labels of the validation cells, scored.
rule label_transfer:
    input:
        model=get_published_model,
    output:
        summary="results/{model}/criticism/label_transfer.json",
        per_label="results/{model}/criticism/label_transfer.tsv",
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
        benchmark_of("label_transfer")
    conda:
        "../../envs/scvi.yaml"
    params:
        settings=settings_of("model.setup", "train.seed"),
    script:
        "../scripts/label_transfer.py"


# Models with a batch key: scib-metrics of the latent space beside the PCA baseline (jax and
# scib-metrics in their own env; no other job imports them).
rule integration:
    input:
        unpack(get_integration_inputs),
    output:
        summary="results/{model}/criticism/integration.json",
        table="results/{model}/criticism/integration.tsv",
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
        benchmark_of("integration")
    conda:
        "../../envs/integration.yaml"
    # Mostly jax compiling, one core's work (benchmarks/README.md): one thread lets it run
    # beside the figures instead of holding both cores of a small machine.
    threads: 1
    resources:
        mem_mb=4000,
    params:
        settings=settings_of(
            "model.class", "model.setup", "criticism.integration_max_cells", "train.seed"
        ),
    script:
        "../scripts/integration.py"


# Models that learn one expression profile per cell type (checks.py): the profiles against the
# pseudobulk of held-out cells of each type.
rule profile_check:
    input:
        model=get_published_model,
    output:
        "results/{model}/criticism/profile_check.json",
    log:
        "logs/{model}/profile_check.log",
    benchmark:
        benchmark_of("profile_check")
    conda:
        "../../envs/scvi.yaml"
    resources:
        mem_mb=model_mem_mb,
    params:
        settings=settings_of("model.setup", "train.seed"),
    script:
        "../scripts/profile_check.py"


# Spatial references (checks.py): pseudo-spots of held-out cells with known proportions,
# deconvolved by the spatial model started from the published one.
rule deconvolution:
    input:
        model=get_published_model,
    output:
        "results/{model}/criticism/deconvolution.json",
    log:
        "logs/{model}/deconvolution.log",
    benchmark:
        benchmark_of("deconvolution")
    priority: -10
    conda:
        "../../envs/scvi.yaml"
    threads: 1
    resources:
        mem_mb=model_mem_mb,
    params:
        settings=settings_of(
            "model.class",
            "model.setup",
            "criticism.deconvolution_spots",
            "criticism.deconvolution_epochs",
            "train.seed",
        ),
    script:
        "../scripts/deconvolution.py"
