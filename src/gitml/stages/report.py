"""report: reports/report.md for the pull request, its PNG figures, and reports/model_card.md.

Runs after `dvc repro` and `gitml gate`, outside DVC: it compares the working tree's outputs
with main's committed ones (`git show`, so a shallow CI checkout works once main is fetched).
Without main (a new fork's first pull request, or no git) it still writes everything and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gitml.baseline import branch_baseline, incomparable
from gitml.checked_config import ConfigReader
from gitml.config import dataset_schema, section
from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.report import Outputs, committed_lineage, current_lineage, curve_names, relative, working_tree
from gitml.report.card import read_card, render_model_card
from gitml.report.figures import write_figures
from gitml.report.markdown import render_report


def _min_positives(cfg: Mapping[str, Any], fairness: Mapping[str, Any], source: Path) -> int:
    """The fewest positives a group needs for its TPR to be compared: as evaluate used it
    (reports/fairness.json records it), else params.yaml's evaluate.min_group_cases."""
    recorded = fairness.get("min_group_cases")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1:
        return recorded
    evaluate = section(cfg, "evaluate", source)
    return ConfigReader(source.name, "evaluate", evaluate, set(evaluate)).integer("min_group_cases", minimum=1)


def run(cfg: Mapping[str, Any], paths: Paths) -> dict[str, Any]:
    """Write the report, its figures and the model card; returns what was written and compared."""
    schema = dataset_schema(cfg, paths.params)
    dataset = section(cfg, "data", paths.params).get("name")
    card = read_card({"name": dataset, "card": cfg.get("card")}, paths.params.name)
    curves = curve_names(paths)
    now = Outputs.read(working_tree(paths.root), paths, curves)
    for path, found in ((paths.metrics, now.metrics), (paths.fairness, now.fairness)):
        if found is None:
            raise GitmlError(f"{path}: not found or not JSON; the evaluate stage has not run. Run `dvc repro` first.")

    baseline = branch_baseline(paths.root)
    # main's model of another dataset is no comparison: this model is shown alone.
    other_problem = incomparable(cfg, baseline)
    main = Outputs.read(baseline.read_text, paths, curves) if baseline.exists and other_problem is None else None
    lineage = current_lineage(paths, now)
    main_lineage = committed_lineage(main, baseline.commit) if main is not None else None
    figures = write_figures(paths.figures, now, main, f"main ({baseline.short})")

    report = render_report(paths, cfg, now, main, baseline, lineage, main_lineage, figures, other_problem)
    paths.report.parent.mkdir(parents=True, exist_ok=True)
    paths.report.write_text(report, encoding="utf-8")
    model_card = render_model_card(
        cfg, schema, card, now, lineage, _min_positives(cfg, now.fairness or {}, paths.params)
    )
    paths.model_card.write_text(model_card, encoding="utf-8")
    if other_problem is not None:
        compared = "no comparable model on main"
    else:
        compared = f"vs {baseline.description}" if baseline.exists else "no main to compare with"
    verdict = now.gate["verdict"] if now.gate else None
    message = (
        f"report: {relative(paths, paths.report)} (gate {verdict or 'not run'}, {compared}, {len(figures)} figures in "
        f"{relative(paths, paths.figures)}/) and {relative(paths, paths.model_card)}"
    )
    return {
        "message": message,
        "report": relative(paths, paths.report),
        "model_card": relative(paths, paths.model_card),
        "figures": [relative(paths, f.path) for f in figures],
        "verdict": verdict,
        "compared_with": baseline.description if main is not None else None,
        "incomparable": other_problem,
        "commit": lineage.commit,
    }


def message(result: dict[str, Any], paths: Paths) -> str:
    return str(result["message"])
