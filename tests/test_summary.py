"""The summary `make run` prints, and the README's first screen that quotes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitml.paths import Paths
from gitml.summary import pipeline_summary


def test_readme_shows_what_make_run_prints(repo: Path, tmp_path: Path) -> None:
    """The README quotes the summary of the committed reports, so it cannot drift from them.

    The stage times come last, from the run log of the run that printed them (not committed):
    the README shows one such line after the summary."""
    import re
    import shutil

    import yaml

    # The README quotes the bundled example's run: it holds for the committed reports when they
    # are the bundled example's (as shipped); a fork that commits its own data rewrites its README.
    committed = yaml.safe_load((repo / "params.yaml").read_text())["data"]["name"]
    if committed != "adult":
        pytest.skip(f"the README quotes the bundled example's summary; the committed reports are of {committed}")
    shutil.copytree(repo / "reports", tmp_path / "reports")
    summary = pipeline_summary(Paths(tmp_path))
    assert "48,842 rows read" in summary
    first_screen = (repo / "README.md").read_text().split("---", 1)[0]
    assert summary in first_screen, "update the README's `make run` output block"
    after = first_screen.split(summary, 1)[1].splitlines()[1]
    assert re.fullmatch(r"  took        ingest [\d.]+ s( \| \w+ [\d.]+ s)+ \(logs/stages\.jsonl\)", after), after
    assert "make run" in first_screen
    assert "make test" in first_screen


def test_summary_says_n_a_where_a_gap_is_undefined(repo: Path, tmp_path: Path) -> None:
    """A fairness gap is undefined when, say, no compared group has positives: the summary still prints."""
    import json
    import shutil

    shutil.copytree(repo / "reports", tmp_path / "reports")
    import re

    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    attributes = sorted(metrics["fairness"])
    assert len(attributes) >= 2, "the committed model has fewer than two protected attributes"
    some, none = attributes[:2]
    metrics["fairness"][some]["equal_opportunity_difference"] = None
    metrics["fairness"][some]["equalized_odds_difference"] = None
    metrics["fairness"][none] = dict.fromkeys(metrics["fairness"][none])
    (tmp_path / "reports" / "metrics.json").write_text(json.dumps(metrics))
    summary = pipeline_summary(Paths(tmp_path))
    ratio = metrics["fairness"][some]["demographic_parity_ratio"]
    line = rf"{some}\s+selection-rate ratio {ratio:.2f} \| TPR gap n/a \| equalized-odds gap n/a"
    assert re.search(line, summary), summary
    assert re.search(rf"{none}\s+fewer than two groups large enough to compare", summary), summary


def test_summary_compares_the_network_with_the_best_baseline(repo: Path, tmp_path: Path) -> None:
    import json
    import shutil

    shutil.copytree(repo / "reports", tmp_path / "reports")
    paths = Paths(tmp_path)
    baselines = json.loads(paths.baselines.read_text())
    ours = json.loads(paths.metrics.read_text())["test"]["auroc"]
    theirs = {name: m["test"]["auroc"] for name, m in baselines["models"].items()}
    line = next(line for line in pipeline_summary(paths).splitlines() if line.startswith("  baselines"))
    assert line == (
        f"  baselines   AUROC logistic regression {theirs['logistic_regression']:.3f} | gradient boosting "
        f"{theirs['gradient_boosting']:.3f}; network vs best {ours - theirs[baselines['best']]:+.3f} "
        "(reports/baselines.json)"
    )
    paths.baselines.write_text(json.dumps({"enabled": False, "config": {}, "models": {}, "best": None}))
    assert "  baselines   off (baselines.enabled: false)" in pipeline_summary(paths).splitlines()
    paths.baselines.unlink()  # a run from before the stage existed: no line
    assert "baselines" not in pipeline_summary(paths)
