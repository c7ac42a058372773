"""The real pipeline on the dataset conf/ selects, run by DVC in a scratch copy of the repository;
and the bundled example's own promises (its row counts, the default model's targets on it), run
on it whatever conf/ selects (the `bundled` fixture)."""

from __future__ import annotations

import fnmatch
import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitml.scratch import scratch_env
from tests.e2e.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]


def raw_rows(pipeline: Path, name: str) -> int:
    """Data rows of one raw file as its entry in params.yaml describes it (skipped lines, header)."""
    data = yaml.safe_load((pipeline / "params.yaml").read_text())["data"]
    raw = data["raw"]
    entry = next(f for f in raw["files"] if fnmatch.fnmatchcase(name, f["path"]))  # a path or a glob
    opener: Any = gzip.open if name.endswith(".gz") else open
    with opener(pipeline / name, "rt", encoding="utf-8", newline="") as fh:
        lines = [line for line in fh.read().splitlines() if line.strip()]
    header = entry.get("header", raw.get("header", False))
    return len(lines) - int(entry.get("skip_rows", 0)) - (1 if header else 0)


def test_ingest_accounts_for_every_row(pipeline: Path) -> None:
    report = json.loads((pipeline / "reports" / "ingest.json").read_text())
    assert report["files"]
    for name, entry in report["files"].items():
        assert entry["rows"] == raw_rows(pipeline, name), name
    assert report["rows_read"] == sum(entry["rows"] for entry in report["files"].values())
    assert report["rows_clean"] + report["rows_quarantined"] == report["rows_read"]
    quarantined = (pipeline / "data" / "interim" / "quarantine.csv").read_text().splitlines()
    assert len(quarantined) - 1 == report["rows_quarantined"]
    split = json.loads((pipeline / "reports" / "split.json").read_text())
    assert sum(split[n]["rows"] for n in ("train", "val", "test")) == report["rows_clean"]


def test_the_bundled_example_is_read_whole(bundled: Path) -> None:
    """UCI Adult as published: 32,561 + 16,281 records, every quarantined one an exact repeat."""
    report = json.loads((bundled / "reports" / "ingest.json").read_text())
    assert report["rows_read"] == 48_842
    assert report["files"]["data/raw/adult.data.gz"]["rows"] == 32_561
    assert report["files"]["data/raw/adult.test.gz"]["rows"] == 16_281
    assert report["quarantined_by_reason"] == {"duplicate_row": report["rows_quarantined"]}


def test_second_repro_does_nothing_and_status_is_clean(pipeline: Path) -> None:
    assert "Data and pipelines are up to date" in run(pipeline, "dvc", "repro")
    assert "Data and pipelines are up to date" in run(pipeline, "dvc", "status")


# Stages whose outputs are bytes of data, equal on any machine.
DATA_STAGES = ("ingest", "split")


def test_committed_lock_and_metrics_match_the_reproduction(repo: Path, pipeline: Path) -> None:
    """dvc.lock and the reports in git are what this code makes from this data and these params."""
    committed = yaml.safe_load((repo / "dvc.lock").read_text())
    reproduced = yaml.safe_load((pipeline / "dvc.lock").read_text())
    for stage in DATA_STAGES:
        assert reproduced["stages"][stage] == committed["stages"][stage], f"{stage}: run `make run`, commit dvc.lock"
    for metrics in ("reports/ingest.json", "reports/split.json"):
        assert (pipeline / metrics).read_bytes() == (repo / metrics).read_bytes(), metrics
    # Training outputs are floating point: another CPU, or another number of threads, may round
    # differently in the last bits. So here the inputs (code, data, params) must be the committed
    # ones, leaving out what a training stage wrote, and the metrics close to them.
    training = ("train", "baselines", "export", "evaluate")
    floating = {out["path"] for stage in training for out in committed["stages"][stage].get("outs", [])}

    def inputs(entry: dict[str, Any]) -> dict[str, Any]:
        return {**entry, "deps": [dep for dep in entry["deps"] if dep["path"] not in floating]}

    for stage in training:
        for key in ("cmd", "deps", "params"):
            assert inputs(reproduced["stages"][stage])[key] == inputs(committed["stages"][stage])[key], (
                f"{stage}: dvc.lock is stale ({key} changed): run `make run` and commit dvc.lock and reports/"
            )
    ours = json.loads((pipeline / "reports" / "metrics.json").read_text())["test"]
    theirs = json.loads((repo / "reports" / "metrics.json").read_text())["test"]
    for name in ("auroc", "accuracy", "f1", "ece"):
        assert ours[name] == pytest.approx(theirs[name], abs=0.01), name


def test_the_default_model_reaches_its_targets_on_the_bundled_example(bundled: Path) -> None:
    """Trained on all of Adult: test AUROC >= 0.90 and accuracy >= 0.84 (the template's promise)."""
    metrics = json.loads((bundled / "reports" / "metrics.json").read_text())
    assert metrics["test"]["auroc"] >= 0.90
    assert metrics["test"]["accuracy"] >= 0.84
    assert metrics["test"]["rows"] == 7_318
    export = json.loads((bundled / "reports" / "export.json").read_text())
    assert export["passed"]
    assert export["rows"] == 7_318


def test_plots_and_metrics_are_what_dvc_shows(pipeline: Path) -> None:
    shown = json.loads(run(pipeline, "dvc", "plots", "show", "--json"))["data"]
    assert set(shown) == {
        "ROC curve (test)", "Precision-recall (test)", "Calibration (test)", "Confusion matrix (test)",
        "Selection rate by group (test)", "True positive rate by group (test)", "Training curves",
    }  # fmt: skip
    for title, renders in shown.items():
        values = renders[0]["content"]["data"]["values"]
        assert values, title
    metrics = json.loads(run(pipeline, "dvc", "metrics", "show", "--json"))
    workspace = next(iter(metrics.values()))["data"]
    written = json.loads((pipeline / "reports" / "metrics.json").read_text())
    assert workspace["reports/metrics.json"]["data"]["test"]["auroc"] == written["test"]["auroc"]
    assert "val" in workspace["dvclive/metrics.json"]["data"]


def gitml(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitml.cli", *args], cwd=cwd, capture_output=True, text=True, check=False,
        env=scratch_env(),
    )  # fmt: skip


def test_the_gate_passes_the_default_model_and_the_report_shows_it(pipeline: Path) -> None:
    """What `make run` does after `dvc repro`: gate, report, then the verdict."""
    for step in (["gate"], ["report"], ["gate", "--check"]):
        done = gitml(pipeline, *step)
        assert done.returncode == 0, f"gitml {' '.join(step)}:\n{done.stdout}\n{done.stderr}"
    gate = json.loads((pipeline / "reports" / "gate.json").read_text())
    assert gate["verdict"] == "pass", gate["reason"]
    assert {c["kind"] for c in gate["checks"]} == {"bundle", "deepchecks", "fairness", "champion"}
    # This scratch repository's main holds the code but no metrics yet: a new fork's first pull request.
    assert gate["champion"]["source"] == "branch"
    assert next(c["reason"] for c in gate["checks"] if c["kind"] == "champion").startswith("no champion")
    assert "report: reports/report.md" in done.stdout
    for html in (pipeline / "reports" / "deepchecks").glob("*.html"):
        assert html.stat().st_size < 15 * 2**20, html.name
    report = (pipeline / "reports" / "report.md").read_text()
    assert "pass" in report.splitlines()[0].lower()
    figures = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", report)
    assert len(figures) >= 5
    for figure in figures:
        assert (pipeline / "reports" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
    card = (pipeline / "reports" / "model_card.md").read_text()
    words = yaml.safe_load((pipeline / "params.yaml").read_text()).get("card") or {}
    if words.get("licence"):  # the card's words of the selected dataset (conf/card/) are in it
        assert words["licence"] in card


def test_a_failed_gate_fails_the_run_after_the_report_is_written(pipeline: Path) -> None:
    params = (pipeline / "params.yaml").read_bytes()
    columns = yaml.safe_load(params)["data"]["columns"]
    attribute = next(n for n, c in columns.items() if c["role"] == "protected")
    check = f"fairness/{attribute}/equalized_odds_difference"
    limits = "{decide_on: estimate, equalized_odds_difference: {max: 0.01}}"  # merged over its own, if any
    try:
        run(
            pipeline,
            sys.executable,
            "-m",
            "gitml.cli",
            "params",
            f"++gates.fairness.attributes.{attribute}={limits}",
        )
        assert gitml(pipeline, "gate").returncode == 0  # the gate records its verdict; it does not fail
        assert gitml(pipeline, "report").returncode == 0
        report = (pipeline / "reports" / "report.md").read_text()
        assert "fail" in report.splitlines()[0].lower()
        assert check in report
        done = gitml(pipeline, "gate", "--check")
        assert done.returncode == 1
        assert "gate: FAIL" in done.stderr
        assert check in done.stderr
    finally:
        (pipeline / "params.yaml").write_bytes(params)
        gitml(pipeline, "gate")


def test_push_and_pull_round_trip(pipeline: Path) -> None:
    run(pipeline, "dvc", "push")
    stages = yaml.safe_load((pipeline / "dvc.yaml").read_text())["stages"]
    # Cached outputs go to the remote; metrics, plots and curves (cache: false) live in git.
    expected = [out for stage in stages.values() for out in stage.get("outs", []) if isinstance(out, str)]
    files = [
        f for out in expected for f in ([pipeline / out] if (pipeline / out).is_file() else (pipeline / out).rglob("*"))
    ]
    assert len(files) > len(expected)  # reports/deepchecks/ is a directory of HTML reports
    originals = {path: path.read_bytes() for path in files}
    shutil.rmtree(pipeline / ".dvc" / "cache")
    for path in expected:
        if (pipeline / path).is_dir():
            shutil.rmtree(pipeline / path)
        else:
            (pipeline / path).unlink()
    run(pipeline, "dvc", "pull")
    for file, data in originals.items():
        assert file.read_bytes() == data, file
    assert "Data and pipelines are up to date" in run(pipeline, "dvc", "status")


TRAINING_STAGES = ["train", "export", "evaluate", "deepchecks"]


def ran_stages(out: str) -> list[str]:
    return [s for s in ("ingest", "split", "baselines", *TRAINING_STAGES) if f"Running stage '{s}'" in out]


def test_a_model_param_reruns_training_stages_only_and_training_again_gives_identical_outputs(pipeline: Path) -> None:
    """A model.* change re-runs the training stages and nothing before them, nor the baselines (the
    preprocessing they read is unchanged, and they never read the network). Going back is git and
    `dvc checkout`; training again gives the same checkpoint, and the Deepchecks reports the same
    bytes in another process, byte for byte: same seed, same machine. (ingest and split are held to
    the committed dvc.lock, another machine's run; export and evaluate to the stage tests.)"""
    before = yaml.safe_load((pipeline / "dvc.lock").read_text())
    run(pipeline, "git", "add", "-A")
    run(pipeline, "git", "commit", "-qm", "the reproduced pipeline")
    run(pipeline, sys.executable, "-m", "gitml.cli", "params", "model.hidden=[32]", "trainer.max_epochs=2")
    status = run(pipeline, "dvc", "status")
    assert "train:" in status
    assert "ingest:" not in status
    assert "split:" not in status
    assert ran_stages(run(pipeline, "dvc", "repro")) == TRAINING_STAGES
    assert json.loads((pipeline / "reports" / "train.json").read_text())["parameters"] < 19_000
    # Going back: git for params.yaml and dvc.lock, the cache for the rest.
    run(pipeline, "git", "checkout", "--", ".")
    run(pipeline, "dvc", "checkout")
    assert "Data and pipelines are up to date" in run(pipeline, "dvc", "repro")
    # --no-run-cache: DVC would otherwise restore the outputs from its run cache, training nothing.
    out = run(pipeline, "dvc", "repro", "--force", "--no-run-cache", "--single-item", "train", "deepchecks")
    assert ran_stages(out) == ["train", "deepchecks"]
    # Timings live in the run log (logs/stages.jsonl), never in an output: dvc.lock is unchanged.
    assert yaml.safe_load((pipeline / "dvc.lock").read_text()) == before
    assert "Data and pipelines are up to date" in run(pipeline, "dvc", "status")


def test_a_split_param_reruns_only_what_it_changes(pipeline: Path) -> None:
    """`dvc exp run -S` composes conf/ with the override (DVC's Hydra integration). A bigger drift
    reference changes no training row: the model is not retrained, and its manifest is rewritten."""
    before = yaml.safe_load((pipeline / "params.yaml").read_text())["split"]["reference_rows"]
    smaller = before // 2 + 1
    out = run(pipeline, "dvc", "exp", "run", "-S", f"split.reference_rows={smaller}")
    ran = [
        s for s in ("ingest", "split", "train", "baselines", "export", "evaluate", "deepchecks")
        if f"Running stage '{s}'" in out
    ]  # fmt: skip
    assert ran == ["split", "evaluate"]  # evaluate: the manifest records a hash of every section that shapes it
    params = yaml.safe_load((pipeline / "params.yaml").read_text())
    assert params["split"]["reference_rows"] == smaller
    shown = json.loads(run(pipeline, "dvc", "exp", "show", "--json"))
    baseline = next(row for row in shown if row["rev"] != "workspace")
    rows = [
        rev["data"]["params"]["params.yaml"]["data"]["split"]["reference_rows"]
        for exp in baseline["experiments"]
        for rev in exp["revs"]
    ]
    assert baseline["data"]["params"]["params.yaml"]["data"]["split"]["reference_rows"] == before
    assert rows == [smaller]
