"""models.tsv agrees with the config it is built with."""

from __future__ import annotations

from scvi_hub_workflow.model_summary import models_in_table, stale_table_warning


def test_a_table_of_other_models_is_named_stale(tmp_path):
    table = tmp_path / "models.tsv"
    assert stale_table_warning(table, ["a"]) is None  # no table yet
    table.write_text("model\tclass\nb\tSCVI\na\tSCVI\n")
    assert models_in_table(table) == ["a", "b"]
    assert stale_table_warning(table, ["b", "a"]) is None
    warning = stale_table_warning(table, ["a"])
    assert "lists the models ['a', 'b'], not this config's ['a']" in warning
    assert "--report" in warning


def test_the_summary_rule_reruns_for_another_list_of_models(workflow_rules):
    rule = next(r for r in workflow_rules if r.name == "model_summary")
    assert "models" in list(rule.params.keys())
