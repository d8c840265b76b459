"""The model card's coefficient-of-variation tables: metric by split, each value beside its
ceiling; a CITE-seq model's protein tables beside the RNA's."""

from __future__ import annotations

from .card_sections import fmt
from .layout import CELL_WISE, GENE_WISE

CV_ROWS = [("mae", "Mean Absolute Error"), ("pearson", "Pearson Correlation"),
           ("spearman", "Spearman Correlation"), ("r2", "R² (R-Squared)")]  # fmt: skip


def cv_table(cv: dict, splits: list[tuple[str, str]], count: tuple[str, str]) -> str:
    """A metric x split table, each value with its ceiling (what a model that is exactly
    right reaches on the same cells); `count` names the row of cells (or genes) covered."""
    header = "| Metric | " + " | ".join(label for _, label in splits) + " |"
    rule = "|-------------------------|" + "|".join("----------------" for _ in splits) + "|"

    def cell(split: str, key: str) -> str:
        values = cv.get(split) or {}
        ceiling = (values.get("ceiling") or {}).get(key)
        return fmt(values.get(key)) + (
            "" if ceiling is None else f" (perfect model {fmt(ceiling)})"
        )

    lines = [
        f"| {name} | " + " | ".join(cell(split, key) for split, _ in splits) + " |"
        for key, name in CV_ROWS
    ]
    key, name = count
    lines.append(
        f"| {name} | " + " | ".join(fmt((cv.get(s) or {}).get(key)) for s, _ in splits) + " |"
    )
    return "\n".join([header, rule, *lines])


def protein_cv_section(protein: dict | None) -> list[str]:
    """A CITE-seq model's protein CVs, beside the RNA's above, with their ceilings."""
    if not protein:
        return []
    return [
        "The same coefficients of variation for the protein (antibody) counts, from posterior "
        f"predictive samples of the model's protein likelihood ({protein.get('n_proteins')} "
        "proteins; the tables above are the RNA's). Cell-wise: each cell's variation across "
        "proteins; protein-wise: each protein's variation across cells.",
        "**Cell-wise Coefficient of Variation (proteins)**:",
        cv_table(
            protein[CELL_WISE],
            [("train", "Training Value"), ("validation", "Validation Value")],
            ("n_cells", "Cells"),
        ),
        "**Protein-wise Coefficient of Variation**:",
        cv_table(
            protein[GENE_WISE],
            [("train", "Training Value"), ("validation", "Validation Value"), ("all", "All Cells")],
            ("n_genes", "Proteins"),
        ),
    ]
