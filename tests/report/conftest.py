"""Git repositories for the report: main holds the pipeline's committed outputs, a branch changes them.

The outputs are this repository's own, as committed at HEAD (`git archive`), so no training runs.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitml.paths import Paths
from gitml.stages import report
from tests.conftest import git

REPO = Path(__file__).resolve().parents[2]
COMMITTED = ("reports", "dvclive", "params.yaml", "dvc.lock", ".gitignore", "models/manifest.json")
BRANCH = "change"
ACCURACY_STEP = 0.0123  # the branch's test accuracy is main's plus this
DROPOUT = 0.25  # the branch's model.dropout
LIMIT = 0.10  # the example gate's limit on every TPR gap


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def adult_card() -> dict[str, Any]:
    card: dict[str, Any] = yaml.safe_load((REPO / "conf" / "card" / "adult.yaml").read_text())
    return card


def load_cfg(root: Path) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load((root / "params.yaml").read_text())
    return cfg


def write_params(root: Path, params: dict[str, Any]) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def extract_committed(target: Path) -> None:
    """This repository's committed pipeline outputs (HEAD), with the card config in params.yaml."""
    tar = subprocess.run(
        ["git", "archive", "--format=tar", "HEAD", *COMMITTED], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(target, filter="data")
    params = load_cfg(target)
    params["card"] = adult_card()
    write_params(target, params)


def example_intervals(metrics: dict[str, Any]) -> dict[str, Any]:
    """A reports/intervals.json around the committed point estimates."""

    def around(value: Any, spread: float) -> list[float] | None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        return [round(value - spread, 6), round(value + spread, 6)]

    test = {k: around(v, 0.01) for k, v in metrics["test"].items() if k not in ("rows", "positive_rate")}
    fairness = {
        attribute: {k: around(v, 0.05) for k, v in summary.items() if not isinstance(v, list)}
        for attribute, summary in metrics["fairness"].items()
    }
    return {"confidence": 0.95, "resamples": 1000, "seed": 42, "test": test, "fairness": fairness}


def example_gate(metrics: dict[str, Any], intervals: dict[str, Any], main_commit: str | None) -> dict[str, Any]:
    """A reports/gate.json holding every TPR gap to LIMIT, deciding on the interval."""
    checks = []
    for attribute, summary in sorted(metrics["fairness"].items()):
        value = summary["equal_opportunity_difference"]
        bounds = intervals["fairness"][attribute]["equal_opportunity_difference"]
        passed = bounds[0] <= LIMIT
        checks.append(
            {
                "name": f"fairness/{attribute}/equal_opportunity_difference",
                "kind": "fairness",
                "value": value,
                "threshold": LIMIT,
                "passed": passed,
                "warning": passed and value > LIMIT,
                "interval": bounds,
                "reason": f"TPR gap {value:.3f} against the limit {LIMIT}",
            }
        )
    failed = sum(not c["passed"] for c in checks)
    warnings = sum(bool(c["warning"]) for c in checks)
    return {
        "verdict": "fail" if failed else "pass",
        "reason": f"{failed} of {len(checks)} checks failed" if failed else f"all {len(checks)} checks passed",
        "champion": {
            "source": "branch",
            "ref": "main",
            "commit": main_commit,
            "version": None,
            "description": f"main (commit {(main_commit or '-')[:7]})",
        },
        "checks": checks,
        "counts": {"checks": len(checks), "failed": failed, "warnings": warnings},
    }


def change_outputs(root: Path) -> None:
    """What the branch changes: test accuracy up, dropout, and a ROC curve a little higher."""
    metrics = read_json(root / "reports" / "metrics.json")
    metrics["test"]["accuracy"] = round(metrics["test"]["accuracy"] + ACCURACY_STEP, 6)
    write_json(root / "reports" / "metrics.json", metrics)
    roc = read_json(root / "reports" / "plots" / "roc.json")
    write_json(root / "reports" / "plots" / "roc.json", [{**p, "tpr": min(1.0, p["tpr"] + 0.02)} for p in roc])
    params = load_cfg(root)
    params["model"]["dropout"] = DROPOUT
    write_params(root, params)


def write_gate_and_intervals(root: Path, main_commit: str | None) -> None:
    metrics = read_json(root / "reports" / "metrics.json")
    intervals = example_intervals(metrics)
    write_json(root / "reports" / "intervals.json", intervals)
    write_json(root / "reports" / "gate.json", example_gate(metrics, intervals, main_commit))


@pytest.fixture(scope="session")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository whose main has the committed outputs, checked out on a branch that changes them."""
    root = tmp_path_factory.mktemp("origin")
    extract_committed(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "pipeline outputs")
    git(root, "checkout", "-qb", BRANCH)
    change_outputs(root)
    git(root, "commit", "-qam", "a better model")
    write_gate_and_intervals(root, git(root, "rev-parse", "main"))
    return root


def copy_repo(origin: Path, target: Path) -> Path:
    """An independent copy, .git included."""
    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("report.md", "model_card.md", "figures"))
    return target


@dataclass(frozen=True)
class Reported:
    paths: Paths
    result: dict[str, Any]
    report: str
    card: str


def report_on(root: Path, cfg: dict[str, Any] | None = None) -> Reported:
    paths = Paths(root)
    result = report.run(cfg if cfg is not None else load_cfg(root), paths)
    return Reported(
        paths, result, paths.report.read_text(encoding="utf-8"), paths.model_card.read_text(encoding="utf-8")
    )


@pytest.fixture(scope="session")
def reported(origin: Path, tmp_path_factory: pytest.TempPathFactory) -> Reported:
    """`gitml report` once on the branch."""
    return report_on(copy_repo(origin, tmp_path_factory.mktemp("reported") / "repo"))
