"""The network against the classical baselines in the report and the model card: one line on the
first screen, a side-by-side table further down, a card section in numbers; and what they say when
the baselines are off or were never run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gitml.evaluate.classical import NAMES, in_order
from gitml.evaluate.measures import label
from gitml.gates.fairness import gated_limits
from gitml.report.markdown import number
from tests.report.conftest import Reported, copy_repo, load_cfg, read_json, report_on, write_json


def aurocs(reported: Reported) -> tuple[float, str, float]:
    """The network's test AUROC, the best baseline and its test AUROC, from the files."""
    baselines = read_json(reported.paths.baselines)
    best = baselines["best"]
    return (
        read_json(reported.paths.metrics)["test"]["auroc"],
        best,
        baselines["models"][best]["test"]["auroc"],
    )


def test_the_first_screen_says_how_far_the_network_is_from_the_best_baseline(reported: Reported) -> None:
    ours, best, theirs = aurocs(reported)
    line = (
        f"**Network vs best baseline** ({NAMES[best]}): {ours - theirs:+.3f} test AUROC ({ours:.3f} vs {theirs:.3f})."
    )
    lines = reported.report.splitlines()
    assert line in lines
    # Before any table: right under the verdict and what it was compared with.
    assert lines.index(line) < 8
    assert lines.index(line) < min(i for i, text in enumerate(lines) if text.startswith("|"))


def gated(reported: Reported) -> list[tuple[str, str]]:
    cfg = load_cfg(reported.paths.root)
    attributes = list(read_json(reported.paths.metrics)["fairness"])
    limits = gated_limits(cfg["gates"]["fairness"], "params.yaml", attributes)
    return [(attribute, metric) for attribute, metrics in limits.items() for metric in metrics]


def side_by_side(text: str) -> dict[str, list[str]]:
    """The network-and-baselines table: first cell -> the other cells."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| Test |") or (rows and line.startswith("| ")):
            rows[cells[0]] = cells[1:]
        elif rows:
            break
    return rows


def test_the_table_puts_the_network_beside_each_baseline(reported: Reported) -> None:
    section = reported.report.split("#### Network and baselines (test)\n", 1)[1].split("\n#### ", 1)[0]
    baselines = read_json(reported.paths.baselines)
    metrics = read_json(reported.paths.metrics)
    names = in_order(baselines["models"])
    rows = side_by_side(section)
    best = baselines["best"]
    assert rows["Test"] == ["network", *(NAMES[n] + (" (best)" if n == best else "") for n in names)]
    columns = [metrics, *(baselines["models"][n] for n in names)]
    for metric in ("auroc", "accuracy", "ece", "brier"):
        assert rows[label(metric)] == [number(c["test"][metric]) for c in columns], metric
    pairs = gated(reported)
    assert pairs  # the example gate holds some gaps
    for attribute, metric in pairs:
        assert rows[f"{attribute} {label(metric)}"] == [number(c["fairness"][attribute][metric]) for c in columns]
    assert rows["threshold (on val)"] == [number(c["threshold"]["value"]) for c in columns]


def test_the_card_states_the_comparison_in_numbers(reported: Reported) -> None:
    ours, best, theirs = aurocs(reported)
    card = reported.card.split("## Compared with classical baselines\n", 1)[1].split("\n## ", 1)[0]
    assert f"The network's test AUROC is {ours:.3f}: " in card
    side = "above" if ours > theirs else "below"
    assert f"{abs(ours - theirs):.3f} {side} {NAMES[best]} ({theirs:.3f}, the best baseline)" in card
    rows = side_by_side(card)
    assert rows[label("auroc")][0] == number(ours)
    assert "fit seconds" not in rows  # the card is the same for the same commit: no timings


@pytest.mark.parametrize(
    ("baselines", "report_line", "card_line"),
    [
        (
            {"enabled": False, "config": {}, "models": {}, "best": None},
            "**Baselines off** (`baselines.enabled: false`): the network is not compared with classical models.",
            "Not compared: the classical baselines are off for this dataset (`baselines.enabled: false`).",
        ),
        (
            None,
            "**Baselines:** none, reports/baselines.json not found (the baselines stage writes it: run `dvc repro`).",
            "Not compared: reports/baselines.json is absent (the baselines stage writes it).",
        ),
    ],
    ids=["off", "absent"],
)
def test_without_baselines_both_say_why(
    origin: Path, tmp_path: Path, baselines: dict[str, Any] | None, report_line: str, card_line: str
) -> None:
    root = copy_repo(origin, tmp_path / "repo")
    if baselines is None:
        (root / "reports" / "baselines.json").unlink()
    else:
        write_json(root / "reports" / "baselines.json", baselines)
    reported = report_on(root)
    lines = reported.report.splitlines()
    assert lines.index(report_line) < 8
    assert lines.count(report_line) == 2  # on the first screen, and again where the table would be
    assert card_line in reported.card.splitlines()
