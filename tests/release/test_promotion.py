"""`gitml promotion`: the pull request that sets production to a version, from a real /metrics scrape."""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitml.errors import GitmlError
from gitml.outputs import GateFile
from gitml.paths import Paths
from gitml.release.overlay import overlay_version, set_overlay_version
from gitml.release.promotion import live_figures, parse_exposition, quantile, read_live_figures
from tests.conftest import REPO, Trained, copy_repo
from tests.release.conftest import subcommand
from tests.serve.conftest import GIT_SHA, MODEL_VERSION, Server, request_records

CARD = "# Model card: a test model (commit 0123456)\n\nWhat the card says about the model.\n"


def post(url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@dataclass(frozen=True)
class Scrape:
    """A /metrics scrape of the real server after known traffic, and what that traffic was."""

    text: str
    predict_requests: int  # answered or rejected
    feedback_requests: int
    rejected: int  # 4xx
    predictions: int
    positive: int


@pytest.fixture(scope="module")
def scrape(trained_sample: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    """The real server on the suite's trained sample: a few predictions, a rejection, two labels; its /metrics."""
    bundle: Paths = copy_repo(trained_sample[0], tmp_path_factory.mktemp("promotion"))
    env = {"GITML_MODEL_VERSION": MODEL_VERSION, "GITML_GIT_SHA": GIT_SHA}
    server = Server(bundle.root, tmp_path_factory.mktemp("prediction-log"), env).start()
    try:
        manifest = json.loads(bundle.manifest.read_text())
        records = request_records(bundle)[:12]
        decisions: list[bool] = []
        for record in records[:7]:
            status, body = post(f"{server.url}/predict", record)
            assert status == 200, body
            decisions.append(body["decision"])
        status, batch = post(f"{server.url}/predict", records[7:])
        assert status == 200, batch
        decisions += [p["decision"] for p in batch["predictions"]]
        status, _ = post(f"{server.url}/predict", {**records[0], "not_a_column": 1})
        assert status == 422
        classes = {True: manifest["positive_class"], False: manifest["negative_class"]}
        first, second = batch["predictions"][:2]
        feedback = [  # one label agrees with the decision, one does not: live accuracy 0.5
            {"request_id": batch["request_id"], "index": 0, "label": classes[first["decision"]]},
            {"request_id": batch["request_id"], "index": 1, "label": classes[not second["decision"]]},
        ]
        status, answer = post(f"{server.url}/feedback", feedback)
        assert (status, answer) == (202, {"accepted": 2, "matched": 2})
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
            text = response.read().decode()
        yield Scrape(text, 9, 1, 1, len(decisions), sum(decisions))
    finally:
        server.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository root with a copy of deploy/k8s: prod runs v0.1.0, staging v0.2.0."""
    shutil.copytree(REPO / "deploy" / "k8s", tmp_path / "repo" / "deploy" / "k8s")
    root = tmp_path / "repo"
    set_overlay_version(root, "prod", "v0.1.0")
    set_overlay_version(root, "staging", "v0.2.0")
    return root


def gate(verdict: str = "pass") -> GateFile:
    warned = {
        "name": "fairness/group/equal_opportunity_difference", "kind": "fairness", "passed": True, "warning": True,
        "value": 0.123, "threshold": 0.1, "interval": [0.05, 0.2], "reason": "gap 0.123 above 0.100 | but unsure",
    }  # fmt: skip
    failed = {**warned, "name": "champion/auroc", "passed": verdict == "pass", "warning": False, "reason": "worse"}
    return {
        "verdict": verdict,
        "reason": "all 2 checks passed (1 with a warning)" if verdict == "pass" else "1 of 2 checks failed",
        "champion": {"description": "main (commit 11e89fe)"},
        "checks": [warned, failed],
        "counts": {"checks": 2, "failed": int(verdict != "pass"), "warnings": 1},
    }


@dataclass
class Files:
    metrics: Path
    card: Path
    gate: Path
    out: Path

    def argv(self, version: str) -> list[str]:
        return [
            "promotion", version, "--staging-metrics", str(self.metrics), "--card", str(self.card),
            "--gate", str(self.gate), "--out", str(self.out),
        ]  # fmt: skip


@pytest.fixture
def files(tmp_path: Path, scrape: Scrape) -> Files:
    made = Files(
        tmp_path / "metrics.txt", tmp_path / "model_card.md", tmp_path / "gate.json", tmp_path / "pr" / "body.md"
    )
    made.metrics.write_text(scrape.text)
    made.card.write_text(CARD)
    made.gate.write_text(json.dumps(gate()))
    return made


def test_the_scrape_is_read_as_prometheus_reads_it(scrape: Scrape) -> None:
    ours = parse_exposition(scrape.text, "scrape")
    theirs = [s for family in text_string_to_metric_families(scrape.text) for s in family.samples]
    assert [(s.name, s.labels, s.value) for s in ours] == [(s.name, s.labels, s.value) for s in theirs]
    figures = live_figures(ours)
    assert figures.requests == {"/predict": scrape.predict_requests, "/feedback": scrape.feedback_requests}
    assert figures.client_errors == scrape.rejected
    assert figures.server_errors == 0
    assert figures.predictions == scrape.predictions
    assert figures.positive == scrape.positive
    assert figures.accuracy == 0.5
    assert figures.labelled == 2
    assert figures.feedback == {"matched": 2}
    assert figures.log_errors == 0
    assert figures.p50 is not None
    assert figures.p99 is not None
    assert 0 < figures.p50 <= figures.p99 <= 2.5


def test_a_promotion_writes_the_body_sets_prod_and_prints_the_title(root: Path, files: Files, scrape: Scrape) -> None:
    prod = root / "deploy" / "k8s" / "overlays" / "prod" / "kustomization.yaml"
    comments = [line for line in prod.read_text().splitlines() if line.startswith("#")]
    title = subcommand(root, *files.argv("v0.2.0"))
    assert title == "Promote model v0.2.0 to production (from v0.1.0)"
    assert overlay_version(root, "prod") == "v0.2.0"
    assert [line for line in prod.read_text().splitlines() if line.startswith("#")] == comments
    body = files.out.read_text()
    assert body.startswith(f"## {title}\n\nProduction runs **v0.1.0** now; this sets it to **v0.2.0**")
    assert "rollback" not in body.lower()
    assert "Staging runs" not in body  # staging runs the version promoted
    # The gate's verdict and the checks behind its warning.
    assert "**PASS**: all 2 checks passed (1 with a warning); champion: main (commit 11e89fe)." in body
    assert (
        "| fairness/group/equal_opportunity_difference | 0.123 | 0.100 | gap 0.123 above 0.100 \\| but unsure |" in body
    )
    assert "Failed:" not in body
    # Staging's live figures, as the traffic made them.
    requests = scrape.predict_requests + scrape.feedback_requests
    assert "### Staging's live figures (v0.2.0)" in body
    assert f"| Requests served | {requests} (/feedback 1, /predict {scrape.predict_requests}) |" in body
    assert "| Server errors (5xx) | 0.0% (0) |" in body
    assert f"| Rejected requests (4xx) | {100 * scrape.rejected / requests:.1f}% ({scrape.rejected}) |" in body
    assert f"| Predictions | {scrape.predictions} |" in body
    assert f"| Positive decisions | {100 * scrape.positive / scrape.predictions:.1f}% ({scrape.positive}) |" in body
    assert "| Live accuracy | 0.5000 on 2 labelled predictions |" in body
    assert "| Feedback received | 2 (matched 2) |" in body
    assert "| Prediction log write errors | 0 |" in body
    assert "| /predict latency | p50 " in body
    assert " ms, p99 " in body
    # The model card, whole.
    assert CARD.rstrip() in body
    assert body.index("### Gate") < body.index("### Staging's live figures") < body.index("### Model card")


def test_an_older_version_is_a_rollback(root: Path, files: Files) -> None:
    set_overlay_version(root, "prod", "v0.10.0")  # semver order, not string order: v0.2.0 < v0.10.0
    title = subcommand(root, *files.argv("v0.2.0"))
    assert title == "Roll back production to model v0.2.0 (from v0.10.0)"
    body = files.out.read_text()
    assert body.startswith(f"## {title}\n\n**This is a rollback.** Production runs **v0.10.0** now")
    assert "new assignment of v0.2.0 to prod" in body
    assert overlay_version(root, "prod") == "v0.2.0"


def test_the_version_production_runs_is_refused_and_nothing_changes(root: Path, files: Files) -> None:
    prod = root / "deploy" / "k8s" / "overlays" / "prod" / "kustomization.yaml"
    before = prod.read_text()
    with pytest.raises(
        GitmlError, match=r"production already runs v0\.1\.0 \(deploy/k8s/overlays/prod/kustomization\.yaml\)"
    ):
        subcommand(root, *files.argv("v0.1.0"))
    with pytest.raises(GitmlError, match="not a model version"):
        subcommand(root, *files.argv("0.3.0"))
    files.gate.unlink()
    with pytest.raises(GitmlError, match=r"gate\.json: not found"):
        subcommand(root, *files.argv("v0.3.0"))
    files.gate.write_text(json.dumps(gate()))
    files.card.unlink()
    with pytest.raises(GitmlError, match=r"model_card\.md: not found; pass the release's model card"):
        subcommand(root, *files.argv("v0.3.0"))
    assert prod.read_text() == before
    assert not files.out.exists()


def test_no_scrape_says_so_and_a_failed_gate_is_flagged(root: Path, files: Files) -> None:
    files.metrics.unlink()
    files.gate.write_text(json.dumps(gate("fail")))
    assert subcommand(root, *files.argv("v0.3.0")) == "Promote model v0.3.0 to production (from v0.1.0)"
    body = files.out.read_text()
    assert "No live figures: metrics.txt is missing or empty" in body
    assert "| Requests served" not in body
    assert "**FAIL**: 1 of 2 checks failed" in body
    assert "> The gate failed for this version." in body
    assert "Failed:\n\n| Check | Value | Limit | Why |" in body
    assert "Staging runs v0.2.0, not v0.3.0: the live figures below are not this version's." in body
    files.metrics.write_text("\n")
    set_overlay_version(root, "prod", "v0.1.0")
    subcommand(root, *files.argv("v0.3.0"))
    assert "No live figures" in files.out.read_text()


def test_a_scrape_that_is_not_prometheus_text_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.txt"
    path.write_text("# HELP x\n<html>not metrics</html>\n")
    with pytest.raises(GitmlError, match=r"metrics\.txt:2: '<html>not metrics</html>' is not a metric sample"):
        read_live_figures(path)
    path.write_text('up{job="a} 1\n')
    with pytest.raises(GitmlError, match=r"metrics\.txt:1: "):
        read_live_figures(path)
    path.write_text("process_cpu_seconds_total 1.5\n")
    with pytest.raises(GitmlError, match="holds no gitml_ metric"):
        read_live_figures(path)


def test_label_values_are_unescaped() -> None:
    [sample] = parse_exposition('m{a="x\\"y",b="p\\\\q\\nr",} 2.5 1700000000\n', "t")
    assert sample.labels == {"a": 'x"y', "b": "p\\q\nr"}
    assert sample.value == 2.5


def test_quantiles_interpolate_within_buckets() -> None:
    buckets = {0.1: 50.0, 0.2: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.75, buckets) == pytest.approx(0.15)
    assert quantile(0.25, buckets) == pytest.approx(0.05)
    assert quantile(0.99, {0.1: 10.0, float("inf"): 20.0}) == 0.1  # in the open bucket: its lower bound
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.5, {}) is None


def test_a_huge_card_is_cut_to_fit_a_pull_request(root: Path, files: Files) -> None:
    files.card.write_text("# Model card\n" + "a line of the card\n" * 10_000)
    subcommand(root, *files.argv("v0.3.0"))
    body = files.out.read_text()
    assert len(body) < 65_536
    assert "characters; the release has it whole.)*" in body
    assert body.rstrip().endswith("</details>")


def test_the_first_promotion_says_production_runs_no_model(root: Path, files: Files) -> None:
    set_overlay_version(root, "prod", "v0.0.0")  # what the overlays name before any release
    set_overlay_version(root, "staging", "v0.0.0")
    with pytest.raises(GitmlError, match=r"v0\.0\.0 stands for no model"):
        subcommand(root, *files.argv("v0.0.0"))
    assert subcommand(root, *files.argv("v0.1.0")) == "Promote model v0.1.0 to production (from v0.0.0)"
    body = files.out.read_text()
    assert "Production runs no model yet (deploy/k8s/overlays/prod/kustomization.yaml names v0.0.0)" in body
    assert "deprecates" not in body
    assert "### Staging's live figures (no model)" in body
    assert "Staging runs no model, not v0.1.0" in body
    assert overlay_version(root, "prod") == "v0.1.0"
