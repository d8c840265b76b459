"""Rule label_transfer: the classifier's labels of the validation split, scored; two figures."""

from scvi_hub_workflow.rule_io import atomic_path, logged_to, write_json
from scvi_hub_workflow.settings import from_text

with logged_to(snakemake.log[0]) as log:  # noqa: F821
    from scvi_hub_workflow import figures
    from scvi_hub_workflow.label_transfer import evaluate, predict_probabilities, summary_record
    from scvi_hub_workflow.model_io import load_model

    output = snakemake.output  # noqa: F821
    settings = from_text(snakemake.params.settings)  # noqa: F821
    setup = settings.model.setup
    # The published (minified) model: what a user of the hub model gets.
    model = load_model(snakemake.input.model)  # noqa: F821
    result = evaluate(
        model.adata.obs,
        predict_probabilities(model),
        labels_key=setup.labels_key,
        unlabeled_category=setup.unlabeled_category,
        seed=settings.train.seed,
    )
    summary, per_label, calibration, confusion = result["validation"]
    write_json(output.summary, summary_record(result, setup.labels_key))
    with atomic_path(output.per_label) as tmp:
        per_label.to_csv(tmp, sep="\t", index=False)
    with atomic_path(output.calibration) as tmp:
        calibration.to_csv(tmp, sep="\t", index=False)
    with atomic_path(output.confusion) as tmp:
        figures.save_png(figures.confusion_matrix(confusion), tmp)
    with atomic_path(output.calibration_figure) as tmp:
        figures.save_png(figures.calibration_curve(calibration, summary["ece"]), tmp)
    log.info("label transfer on the validation cells: %s", summary)
    if result["not_scored"]:
        log.warning("classes without validation cells, not scored: %s", result["not_scored"])
