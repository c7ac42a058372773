"""`gitml report` on real git repositories: a branch against main, no main, a shallow CI checkout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.report.markdown import number
from gitml.stages import report
from tests.conftest import REPO, git
from tests.report.conftest import (
    ACCURACY_STEP,
    BRANCH,
    DROPOUT,
    Reported,
    copy_repo,
    extract_committed,
    load_cfg,
    read_json,
    report_on,
    write_gate_and_intervals,
)

IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def cells(report: str, first: str, second: str) -> list[str]:
    """The cells of the table row whose first two cells are these."""
    for line in report.splitlines():
        parts = [c.strip() for c in line.strip().strip("|").split("|")]
        if parts[:2] == [first, second]:
            return parts
    raise AssertionError(f"no row {first} | {second}")


def section(report: str, heading: str) -> str:
    return report.split(f"#### {heading}\n", 1)[1].split("\n#### ", 1)[0]


def test_the_verdict_comes_first(reported: Reported) -> None:
    gate = read_json(reported.paths.gate)
    mark = {"pass": "✅ Gate passed", "fail": "❌ Gate failed"}[gate["verdict"]]
    assert reported.report.splitlines()[0] == f"### {mark}: {gate['reason']}"
    assert reported.result["verdict"] == gate["verdict"]


def test_the_report_names_main_and_its_commit(reported: Reported, origin: Path) -> None:
    main = git(origin, "rev-parse", "--short=7", "main")
    assert f"Compared with main (commit {main})" in reported.report
    assert reported.result["compared_with"] == f"main (commit {main})"
    assert reported.result["message"].startswith("report: reports/report.md (gate ")


def committed_json(root: Path, ref: str, path: str) -> Any:
    return json.loads(git(root, "show", f"{ref}:{path}"))


def test_a_changed_metric_shows_main_this_branch_and_the_difference(reported: Reported, origin: Path) -> None:
    before = committed_json(origin, "main", "reports/metrics.json")["test"]["accuracy"]
    after = read_json(reported.paths.metrics)["test"]["accuracy"]
    assert after - before == pytest.approx(ACCURACY_STEP)
    row = cells(reported.report, "reports/metrics.json", "test.accuracy")
    assert row[2:] == [number(before), number(after), f"**+{number(after - before)}**"]
    unchanged = cells(reported.report, "reports/metrics.json", "test.auroc")
    assert unchanged[2] == unchanged[3]
    assert unchanged[4] == "0"


def test_the_params_diff_lists_exactly_the_changed_key(reported: Reported) -> None:
    params = section(reported.report, "Parameters")
    keys = re.findall(r"^\| `([^`]+)` \|", params, flags=re.MULTILINE)
    assert keys == ["model.dropout"]
    on_main = load_cfg(REPO)["model"]["dropout"]  # the committed params are main's
    assert cells(params, "`model.dropout`", f"`{on_main}`")[2] == f"`{DROPOUT}`"


def test_the_gate_table_puts_failed_checks_first(reported: Reported) -> None:
    gate = read_json(reported.paths.gate)
    rows = re.findall(r"^\| (❌|⚠️|✅) \| `([^`]+)`", section(reported.report, "Gate"), flags=re.MULTILINE)
    assert len(rows) == len(gate["checks"])
    marks = [mark for mark, _ in rows]
    assert marks == sorted(marks, key=["❌", "⚠️", "✅"].index)
    failed = [c["name"] for c in gate["checks"] if not c["passed"]]
    if failed:
        assert reported.report.index("#### Failed checks") < reported.report.index("<details>")


def test_figures_are_pngs_the_report_links_by_relative_path(reported: Reported) -> None:
    links = IMAGE.findall(reported.report)
    assert sorted(links) == sorted(f"figures/{name}.png" for name in ("roc", "pr", "calibration", "groups", "training"))
    for link in links:
        figure = reported.paths.report.parent / link
        assert figure.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
        assert figure.stat().st_size < 200_000
        with Image.open(figure) as image:
            assert image.format == "PNG"
            assert image.width >= 400
            assert "Software" not in image.info
    assert sorted(reported.result["figures"]) == sorted(f"reports/{link}" for link in links)


def test_the_same_outputs_give_the_same_bytes(reported: Reported, tmp_path: Path, origin: Path) -> None:
    again = report_on(copy_repo(origin, tmp_path / "again"))
    for figure in reported.result["figures"]:
        assert (again.paths.root / figure).read_bytes() == (reported.paths.root / figure).read_bytes(), figure
    # A copy has the same commits, so its report and card are the same, byte for byte.
    assert again.report == reported.report
    assert again.card == reported.card


def test_without_the_model_files_the_lineage_says_the_bundle_is_incomplete(reported: Reported) -> None:
    """The committed manifest says what the model is; its files live in DVC, not in this checkout."""
    lineage = section(reported.report, "Lineage")
    manifest = json.loads((reported.paths.manifest).read_text())
    assert f"`models/model.onnx` | sha256 `{manifest['files']['model.onnx'][:12]}`" in lineage
    assert "| Bundle | ❌ models/model.onnx: not found; the export stage writes it." in lineage
    assert f"`data/processed/train.parquet` (sha256) | `{manifest['data']['train'][:12]}`" in lineage


def test_a_model_file_the_manifest_does_not_vouch_for_is_named(origin: Path, tmp_path: Path) -> None:
    root = copy_repo(origin, tmp_path / "repo")
    manifest = json.loads((root / "models" / "manifest.json").read_text())
    model = root / "models" / "model.onnx"
    model.write_bytes(b"an ONNX model's bytes")
    done = report_on(root)
    lineage = section(done.report, "Lineage")
    size, recorded = len(model.read_bytes()), manifest["files"]["model.onnx"]
    assert f"`models/model.onnx` | {size} bytes, sha256 `{recorded[:12]}`" in lineage  # what the manifest records
    assert "| Bundle | ❌ models/model.onnx: its sha256" in lineage
    assert f"sha256 `{recorded}`" in done.card


def test_no_git_no_main_and_everything_still_written(tmp_path: Path) -> None:
    extract_committed(tmp_path)
    done = report_on(tmp_path)
    assert "No main to compare with: this is not a git repository." in done.report
    assert done.report.startswith("### ⚪ Gate not run: reports/gate.json not found.")
    assert "| Path | Metric | Value |" in done.report
    assert "| main |" not in done.report
    assert "No main to compare parameters with." in done.report
    assert done.result["compared_with"] is None
    assert done.result["verdict"] is None
    for link in IMAGE.findall(done.report):
        assert (done.paths.report.parent / link).is_file()
    assert len(done.result["figures"]) == 5
    assert "The gate has not run" in done.card


def test_a_repository_without_main_says_how_to_fetch_it(tmp_path: Path) -> None:
    extract_committed(tmp_path)
    git(tmp_path, "init", "-q", "-b", "trunk")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "outputs")
    done = report_on(tmp_path)
    assert "\nNo main to compare with: no branch main here or at origin" in done.report
    assert "| Path | Metric | Value |" in done.report


@pytest.mark.parametrize(
    "checkout",
    [
        # actions/checkout: a remote with the default refspec, one commit fetched; then main.
        ["init -q", "remote add origin {url}", f"fetch -q --depth=1 origin {BRANCH}", "checkout -q FETCH_HEAD",
         "fetch -q --depth=1 origin main"],
        # A shallow clone fetches one branch only: main needs a ref of its own.
        [f"clone -q --depth 1 --branch {BRANCH} {{url}} .", "fetch -q --depth=1 origin main:main"],
        [f"clone -q --depth 1 --branch {BRANCH} {{url}} .", "fetch -q --depth=1 origin main:refs/remotes/origin/main"],
    ],
    ids=["actions-checkout", "git-clone-main", "git-clone-origin-main"],
)  # fmt: skip
def test_a_shallow_ci_checkout_compares_with_main(origin: Path, tmp_path: Path, checkout: list[str]) -> None:
    for command in checkout:
        git(tmp_path, *command.format(url=f"file://{origin}").split())
    assert git(tmp_path, "rev-parse", "--is-shallow-repository") == "true"
    write_gate_and_intervals(tmp_path, None)
    done = report_on(tmp_path)
    main = git(origin, "rev-parse", "--short=7", "main")
    assert re.search(rf"\nCompared with (origin/)?main \(commit {main}\)", done.report)
    assert "**+" in cells(done.report, "reports/metrics.json", "test.accuracy")[4]


def test_without_metrics_it_asks_for_the_pipeline(tmp_path: Path) -> None:
    extract_committed(tmp_path)
    (tmp_path / "reports" / "metrics.json").unlink()
    with pytest.raises(GitmlError, match=r"metrics.json: not found .* Run `dvc repro` first"):
        report.run(load_cfg(tmp_path), Paths(tmp_path))


def test_the_cli_prints_the_message(origin: Path, tmp_path: Path) -> None:
    root = copy_repo(origin, tmp_path / "repo")
    command = [sys.executable, "-m", "gitml.cli", "--root", str(root), "report"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("report: reports/report.md (gate ")
