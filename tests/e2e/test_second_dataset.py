"""Bring your own data, end to end: the German Credit data (conf/data/german_credit.yaml, a second
real dataset of another domain, label and protected attributes) selected by one line of
conf/config.yaml in a repository whose main holds the bundled example's model.

The real DVC reproduces the pipeline, then the gate, the report and the server run on it as
`make run` and `make serve` run them. What must hold: the gate passes on limits that fit the data
(the generic ones and conf/dataset/german_credit.yaml), main's model of another dataset is "no
comparable model" and never gates, the report and model card speak only of this dataset, and the
server serves records shaped as the raw file's rows.
"""

from __future__ import annotations

import csv
import json
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gitml.baseline import problem
from gitml.paths import Paths
from gitml.scratch import make_scratch_repo
from tests.e2e.conftest import BUNDLED, run
from tests.serve.conftest import Server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("second-dataset")]

DATASET = "german_credit"
# A bundled example's committed test metrics, as main holds them: far above this dataset's, so
# that a comparison across datasets would fail the gate.
BUNDLED_METRICS = {
    "threshold": {"rule": "max_accuracy", "value": 0.5, "chosen_on": "val"},
    "test": {"auroc": 0.99, "accuracy": 0.95, "f1": 0.9, "ece": 0.01},
    "fairness": {},
}


def select(config: Path, dataset: str) -> None:
    """conf/config.yaml with `data: <dataset>`: the one choice a user makes."""
    text = config.read_text(encoding="utf-8")
    chosen, count = re.subn(r"^(  - data: )\S+", rf"\g<1>{dataset}", text, count=1, flags=re.M)
    assert count == 1, "conf/config.yaml's defaults list has no `- data:` line"
    config.write_text(chosen, encoding="utf-8")


@pytest.fixture(scope="module")
def byod(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    work = tmp_path_factory.mktemp("byod") / "repo"
    work.mkdir()
    make_scratch_repo(repo, work)
    # main as a fork has it before its first change: the bundled example's params and metrics
    # (the metrics stand in for its model's; whatever conf/ selects here, main's dataset is another).
    run(work, "gitml", "params", f"data={BUNDLED}")
    (work / "reports").mkdir(exist_ok=True)
    (work / "reports" / "metrics.json").write_text(json.dumps(BUNDLED_METRICS), encoding="utf-8")
    run(work, "git", "add", "-f", "params.yaml", "reports/metrics.json")
    run(work, "git", "commit", "-qm", "the bundled example")
    run(work, "git", "checkout", "-q", "-b", "own-data")
    select(work / "conf" / "config.yaml", DATASET)
    run(work, "gitml", "params")
    run(work, "dvc", "repro")
    run(work, "gitml", "gate")
    run(work, "gitml", "report")
    return Paths(work)


def main_problem(paths: Paths) -> tuple[str, str, str]:
    return problem(yaml.safe_load(run(paths.root, "git", "show", "main:params.yaml")))


def test_one_config_line_selects_the_dataset_its_card_and_its_settings(byod: Paths) -> None:
    params = yaml.safe_load(byod.params.read_text(encoding="utf-8"))
    assert params["data"]["name"] == DATASET
    assert params["card"], "conf/card/german_credit.yaml follows the data choice"
    # conf/dataset/german_credit.yaml is merged over the generic settings.
    own = yaml.safe_load((byod.conf / "dataset" / f"{DATASET}.yaml").read_text(encoding="utf-8"))
    limit = own["gates"]["deepchecks"]["model_evaluation"]["min_auroc"]
    assert params["gates"]["deepchecks"]["model_evaluation"]["min_auroc"] == limit
    generic = yaml.safe_load((byod.conf / "gates" / "default.yaml").read_text(encoding="utf-8"))
    assert limit != generic["deepchecks"]["model_evaluation"]["min_auroc"]
    train = json.loads(byod.train_report.read_text(encoding="utf-8"))
    # 700 training rows: the batch shrinks so that an epoch is train.min_steps_per_epoch steps.
    assert train["rows"]["train"] < params["train"]["batch_size"]
    assert -(-train["rows"]["train"] // train["batch_size"]) >= params["train"]["min_steps_per_epoch"]


def test_the_gate_passes_and_main_of_another_dataset_is_no_comparable_model(byod: Paths) -> None:
    gate = json.loads(byod.gate.read_text(encoding="utf-8"))
    failed = [f"{c['name']}: {c['reason']}" for c in gate["checks"] if not c["passed"]]
    assert gate["verdict"] == "pass", failed
    theirs = main_problem(byod)
    assert theirs[0] != DATASET
    assert f"dataset '{theirs[0]}'" in gate["champion"]["incomparable"]
    champion = [c for c in gate["checks"] if c["kind"] == "champion"]
    assert len(champion) == 1
    assert champion[0]["reason"].startswith("no comparable model")
    # Every protected attribute of the schema is gated (the generic fairness default) ...
    protected = [
        n for n, c in yaml.safe_load(byod.params.read_text())["data"]["columns"].items() if c["role"] == "protected"
    ]
    gated = {c["name"].split("/")[1] for c in gate["checks"] if c["kind"] == "fairness"}
    assert gated == set(protected)
    # Limits these small splits cannot judge are raised to their sampling noise, and say so.
    deepchecks = json.loads((byod.root / "reports" / "deepchecks.json").read_text(encoding="utf-8"))
    raised = [c for c in deepchecks["conditions"] if "gates.deepchecks.sampling_noise_z" in c["details"]]
    assert raised
    assert all(c["setting"] for c in raised)
    # ... and every check with a limit names the key that sets it.
    for check in gate["checks"]:
        if check["kind"] == "fairness" or (check["kind"] == "deepchecks" and "Single Value" not in check["name"]):
            assert check["setting"], check


def test_the_report_and_card_speak_only_of_this_dataset(byod: Paths) -> None:
    name, label, _ = main_problem(byod)
    report = byod.report.read_text(encoding="utf-8")
    first = report.splitlines()[:4]
    assert any("No comparable model" in line for line in first), first
    rest = "\n".join(line for line in report.splitlines() if "No comparable model" not in line)
    rest = rest.replace("no comparable model", "")
    checks = [line for line in rest.splitlines() if "champion/" in line]
    others = "\n".join(line for line in rest.splitlines() if line not in checks)
    for word in (name, label):
        assert not re.search(rf"\b{re.escape(word)}\b", others), f"the report names main's {word!r}"
    assert "| main |" not in report
    assert "main's curves" not in report
    card = byod.model_card.read_text(encoding="utf-8")
    for word in (name, label):
        assert not re.search(rf"\b{re.escape(word)}\b", card, flags=re.I), f"the model card names {word!r}"
    assert "German Credit" in card


def test_the_server_serves_the_raw_files_rows(byod: Paths, tmp_path: Path) -> None:
    params = yaml.safe_load(byod.params.read_text(encoding="utf-8"))
    label = next(n for n, c in params["data"]["columns"].items() if c["role"] == "label")
    source = byod.root / params["data"]["raw"]["files"][0]["path"]
    with source.open(newline="", encoding="utf-8") as fh:
        rows = [dict(row) for row, _ in zip(csv.DictReader(fh), range(50), strict=False)]
    records: list[dict[str, Any]] = []
    for row in rows:
        row.pop(label)
        records.append({k: int(v) if v.isdigit() else v for k, v in row.items()})
    server = Server(byod.root, tmp_path / "log").start()
    try:
        answer = httpx.post(f"{server.url}/predict", json=records, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert len(predictions) == len(records)
        classes = set(params["data"]["columns"][label]["categories"])
        assert {p["class"] for p in predictions} <= classes
        assert all(0.0 <= p["score"] <= 1.0 for p in predictions)
    finally:
        status, output = server.stop()
    # uvicorn shuts down gracefully, then re-raises SIGTERM (tests/serve/test_server.py).
    assert status in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
