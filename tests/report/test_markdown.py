"""The pieces of report.md: numbers, changes, the verdict, the gate table, the params diff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gitml.paths import Paths
from gitml.report import Outputs, working_tree
from gitml.report.markdown import (
    cell,
    change,
    flatten,
    gate_sections,
    metric_table,
    number,
    ordered_checks,
    params_section,
    verdict_line,
)
from tests.report.conftest import extract_committed


def check(name: str, passed: bool, warning: bool = False) -> dict[str, Any]:
    return {
        "name": name, "kind": "fairness", "value": 0.12, "threshold": 0.1, "passed": passed, "warning": warning,
        "interval": [0.05, 0.2], "reason": f"{name} reason",
    }  # fmt: skip


GATE = {
    "verdict": "fail",
    "reason": "1 of 3 checks failed: fairness/race/equal_opportunity_difference",
    "champion": {"source": "none", "ref": None, "commit": None, "version": None, "description": "nothing"},
    "checks": [check("ok", True), check("warned", True, warning=True), check("broken", False)],
    "counts": {"checks": 3, "failed": 1, "warnings": 1},
}


@pytest.mark.parametrize(
    ("value", "text"),
    [(7318, "7,318"), (0.850506, "0.8505"), (1.79e-07, "1.79e-07"), (0, "0"), (0.0, "0.0000"), (None, "n/a"),
     (12345.678, "12,345.7"), ("text", "text")],
)  # fmt: skip
def test_numbers_read_as_counts_or_rates(value: Any, text: str) -> None:
    assert number(value) == text


def test_a_change_is_signed_and_bold_where_it_moved() -> None:
    assert change(0.86, 0.85) == f"**+{number(0.86 - 0.85)}**"
    assert change(0.84, 0.85) == f"**{number(0.84 - 0.85)}**"
    assert change(13, 10) == "**+3**"
    assert change(0.85, 0.85) == "0"
    assert change(0.85, None) == "new"
    assert change(None, 0.85) == "removed"


def test_the_verdict_line_says_pass_fail_or_not_run() -> None:
    assert verdict_line(GATE, "reports/gate.json") == f"### ❌ Gate failed: {GATE['reason']}"
    assert verdict_line({**GATE, "verdict": "pass", "reason": "all passed"}, "x") == "### ✅ Gate passed: all passed"
    assert verdict_line(None, "reports/gate.json").startswith("### ⚪ Gate not run: reports/gate.json not found.")


def test_failed_checks_come_first_and_stay_open() -> None:
    assert [c["name"] for c in ordered_checks(GATE)] == ["broken", "warned", "ok"]
    failed, every = gate_sections(GATE)
    assert failed[0] == "#### Failed checks"
    assert sum("`broken`" in line for line in failed) == 1
    assert not any("`ok`" in line for line in failed)
    # A check that passed with a warning is shown open too, under its own heading, after the failed.
    assert failed.index("#### Passed with a warning") > failed.index("#### Failed checks")
    assert sum("`warned`" in line for line in failed) == 1
    assert every[0] == "<details>"
    assert every[1] == "<summary>All 3 gate checks: 1 failed, 1 warning</summary>"
    rows = [line for line in every if line.startswith("| ") and "`" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| ❌", "| ⚠️", "| ✅"]
    assert "0.1200 [0.0500, 0.2000]" in rows[0]


def test_a_passing_gate_has_no_failed_section() -> None:
    failed, every = gate_sections({**GATE, "checks": [check("ok", True)]})
    assert failed == []
    assert "0 failed, 0 warnings" in every[1]


def test_flatten_gives_dotted_keys_and_keeps_lists_and_empty_sections() -> None:
    params = {"model": {"hidden": [128, 64], "optimizer": {"lr": 0.003}}, "gates": {"deepchecks": {}}}
    assert flatten(params) == {"model.hidden": [128, 64], "model.optimizer.lr": 0.003, "gates.deepchecks": {}}


def test_metric_rows_cover_keys_on_either_side() -> None:
    lines, rows, changed = metric_table([("m.json", {"a": 1.0, "b": 2}, {"a": 1.0, "c": 3})], compare=True)
    assert rows == 3
    assert changed == 2
    assert "| m.json | b | — | 2 | new |" in lines
    assert "| m.json | c | 3 | — | removed |" in lines


def test_params_diff_is_one_line_without_changes_and_shows_added_keys(tmp_path: Path) -> None:
    extract_committed(tmp_path)
    main = Outputs.read(working_tree(tmp_path), Paths(tmp_path), ())
    assert main.params is not None
    assert params_section(main.params, main) == ["No parameter changed.", ""]
    added = params_section({**main.params, "extra": {"key": 1}}, main)
    assert added[1] == "<summary>1 parameter changed</summary>"
    assert "| `extra.key` | — | `1` |" in added
    assert params_section(main.params, None) == ["No main to compare parameters with.", ""]


def test_a_cell_stays_one_line_with_pipes_escaped() -> None:
    assert cell("a | b\nc") == "a \\| b c"
