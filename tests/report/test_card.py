"""The model card: the dataset config's `card:` block, and what the pipeline's outputs fill in."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gitml.config import dataset_schema
from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.report import Outputs, current_lineage, curve_names, working_tree
from gitml.report.card import read_card, render_model_card
from gitml.report.markdown import interval, number
from tests.conftest import git
from tests.report.conftest import REPO, Reported, adult_card, extract_committed, load_cfg, read_json


def card_for(root: Path, cfg: dict[str, Any]) -> str:
    paths = Paths(root)
    now = Outputs.read(working_tree(root), paths, curve_names(paths))
    card = read_card({"name": cfg["data"]["name"], "card": cfg.get("card")}, "params.yaml")
    min_positives = cfg["evaluate"]["min_group_cases"]
    return render_model_card(
        cfg, dataset_schema(cfg, paths.params), card, now, current_lineage(paths, now), min_positives
    )


def test_the_adult_card_reads_every_entry() -> None:
    card = read_card({"name": "adult", "card": adult_card()}, "params.yaml")
    assert card.present
    assert "CC BY 4.0" in card.text("licence")
    assert card.text("url") == "https://doi.org/10.24432/C5XW20"
    assert "Becker" in card.text("source")
    assert any("1994" in item for item in card.items("limitations"))
    assert card.items("out_of_scope")


def test_the_card_is_composed_into_params_but_no_stage_depends_on_it() -> None:
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # conf/card/<data>.yaml follows the data choice (an optional default of conf/config.yaml).
    card = REPO / "conf" / "card" / f"{params['data']['name']}.yaml"
    assert params.get("card") == (yaml.safe_load(card.read_text()) if card.is_file() else None)
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert not [name for name, stage in stages.items() if "card" in stage.get("params", [])]


@pytest.mark.parametrize(
    ("card", "message"),
    [
        ({"license": "CC BY 4.0"}, r"unknown key 'license' \(did you mean 'licence'\?\)"),
        ({"intended_use": ["a list"]}, r"intended_use must be text"),
        ({"limitations": "one line, not a list"}, r"limitations must be a list of strings"),
        # `- US only: 91% born there` in YAML is a mapping, not the sentence that was meant.
        ({"limitations": [{"US only": "91% born there"}]}, r"limitations has an item that is not a plain value"),
        ("text", r"expected a mapping"),
    ],
)
def test_a_wrong_card_entry_is_named(card: Any, message: str) -> None:
    with pytest.raises(GitmlError, match=rf"params.yaml: card \(conf/card/\): {message}"):
        read_card({"name": "adult", "card": card}, "params.yaml")


def test_a_dataset_without_a_card_gets_one_that_says_what_to_add(tmp_path: Path) -> None:
    extract_committed(tmp_path)
    cfg = load_cfg(tmp_path)
    del cfg["card"]
    card = card_for(tmp_path, cfg)
    name = cfg["data"]["name"]
    missing = (
        f"not described: write conf/card/{name}.yaml (conf/card/adult.yaml shows how) and select it in conf/config.yaml"
    )
    assert f"- **Primary uses**: {missing}" in card
    assert f"- **Licence**: {missing}" in card
    assert f"## Limitations\n\n- {missing}" in card
    # What the pipeline knows is there all the same.
    assert f"{number(read_json(tmp_path / 'reports' / 'train.json')['parameters'])} parameters" in card


def test_a_card_missing_one_entry_names_that_entry(tmp_path: Path) -> None:
    extract_committed(tmp_path)
    cfg = load_cfg(tmp_path)
    del cfg["card"]["users"]
    card = card_for(tmp_path, cfg)
    assert "- **Primary users**: not described: add `users:` to the card config (conf/card/)" in card
    assert "CC BY 4.0" in card


def test_the_card_has_test_metrics_with_their_intervals(reported: Reported) -> None:
    test = read_json(reported.paths.metrics)["test"]
    intervals = read_json(reported.paths.intervals)["test"]
    for key, bounds in intervals.items():
        assert f"| `{key}` | {number(test[key])} | {interval(bounds)} |" in reported.card


def test_the_card_has_every_group_and_its_fairness_gaps(reported: Reported) -> None:
    fairness = read_json(reported.paths.fairness)
    metrics = read_json(reported.paths.metrics)
    intervals = read_json(reported.paths.intervals)["fairness"]
    for attribute, summary in metrics["fairness"].items():
        for group, m in fairness[attribute].items():
            assert f"| {group} | {number(m['size'])} |" in reported.card
        gap = summary["equal_opportunity_difference"]
        bounds = interval(intervals[attribute]["equal_opportunity_difference"])
        assert f"| {attribute} | `equal_opportunity_difference` | {number(gap)} | {bounds} |" in reported.card


def test_groups_with_few_positives_are_named_as_uncertain(tmp_path: Path) -> None:
    extract_committed(tmp_path)
    cfg = load_cfg(tmp_path)
    fairness = read_json(tmp_path / "reports" / "fairness.json")
    positives = {
        f"{attribute}={group}": round(m["size"] * m["base_rate"])
        for attribute, groups in fairness.items()
        if isinstance(groups, dict)
        for group, m in groups.items()
    }
    # A bar between the groups' counts (whatever the committed data): those below it are few.
    cfg["evaluate"]["min_group_cases"] = fairness_bar = sorted(positives.values())[len(positives) // 2]
    fairness["min_group_cases"] = fairness_bar
    (tmp_path / "reports" / "fairness.json").write_text(json.dumps(fairness), encoding="utf-8")
    card = card_for(tmp_path, cfg)
    few = {name: n for name, n in positives.items() if n < fairness_bar}
    assert few
    for name, n in few.items():
        assert f"- {name} has only {n} positives in test" in card
    for name in positives.keys() - few.keys():
        assert f"- {name} has only" not in card


def test_the_card_names_the_commit_the_verdict_and_no_date(reported: Reported) -> None:
    commit = git(reported.paths.root, "rev-parse", "HEAD")
    gate = read_json(reported.paths.gate)
    assert f"built from commit `{commit}`" in reported.card
    assert f"**{gate['verdict'].upper()}**: {gate['reason']}" in reported.card
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", reported.card)
    dropped = [n for n, c in load_cfg(reported.paths.root)["data"]["columns"].items() if c.get("pii") == "drop"]
    line = reported.card.split("**Dropped at ingest**")[1].splitlines()[0]
    for name in dropped:  # the schema's pii: drop columns, whichever dataset conf/ selects
        assert f"`{name}`" in line
    if not dropped:
        assert "none" in line


def test_the_card_says_how_inputs_are_made_from_the_columns(tmp_path: Path) -> None:
    extract_committed(tmp_path)
    cfg = load_cfg(tmp_path)
    cfg["preprocess"] = {"log1p_skew_above": 2.0, "min_category_count": 25}
    card = card_for(tmp_path, cfg)
    line = next(line for line in card.splitlines() if line.startswith("- **Preprocessing**"))
    assert "log1p first where a column's skewness is above 2" in line
    assert "at least 25 times in training" in line
    features = read_json(tmp_path / "reports" / "train.json")["features"]
    assert f"{features['columns']} columns become {features['width']} inputs" in line


def test_the_fewest_positives_are_those_evaluate_used_else_params() -> None:
    from gitml.stages.report import _min_positives

    cfg = load_cfg(REPO)
    params = REPO / "params.yaml"
    assert _min_positives(cfg, {"min_group_cases": 12}, params) == 12  # reports/fairness.json, as evaluate wrote it
    assert _min_positives(cfg, {}, params) == cfg["evaluate"]["min_group_cases"]
    del cfg["evaluate"]["min_group_cases"]
    with pytest.raises(GitmlError, match=r"params.yaml: evaluate: 'min_group_cases' is required"):
        _min_positives(cfg, {}, params)
