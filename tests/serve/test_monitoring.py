"""deploy/monitoring: the alerting rules and the Grafana dashboard read the metrics the server exports.

promtool (Debian's `prometheus` package; .ci/run installs it) checks the rules and runs their unit
tests (deploy/monitoring/alerts-test.yaml: each alert fires on the series that should raise it and
not on a healthy namespace beside it). Every metric the rules and the dashboard name is then looked
for in a scrape of the real server, so a renamed metric cannot leave an alert that never fires.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gitml.bundle import Manifest
from gitml.paths import Paths
from tests.conftest import REPO
from tests.serve.conftest import request_records

MONITORING = REPO / "deploy" / "monitoring"
METRIC = re.compile(r"\bgitml_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_info")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (.ci/run does)", pytrace=False)
    return subprocess.run([found, *args], cwd=MONITORING, capture_output=True, text=True, check=False)


def rule_expressions() -> list[str]:
    groups = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return loaded


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", "alerts.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rule_expressions())} rules found" in done.stdout


def test_each_alert_fires_where_it_should_and_nowhere_else() -> None:
    done = promtool("test", "rules", "alerts-test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    tested = {
        case["alertname"]
        for test in yaml.safe_load((MONITORING / "alerts-test.yaml").read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    groups = yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
    assert tested == {rule["alert"] for group in groups for rule in group["rules"]}, "an alert without a firing test"


def test_the_unit_tests_catch_a_changed_limit(tmp_path: Path) -> None:
    """The unit tests bite: the rules with one limit loosened fail them."""
    shutil.copytree(MONITORING, tmp_path / "monitoring")
    rules = tmp_path / "monitoring" / "alerts.yaml"
    text = rules.read_text()
    assert "> 0.02" in text
    rules.write_text(text.replace("> 0.02", "> 0.2"))
    found = shutil.which("promtool")
    assert found is not None
    done = subprocess.run(
        [found, "test", "rules", "alerts-test.yaml"], cwd=rules.parent, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "GitmlRejectionRateHigh" in done.stdout + done.stderr


def base_name(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_the_rules_and_the_dashboard_read_only_what_the_server_exports(served: Paths, start_server: Any) -> None:
    server = start_server(served.root)
    manifest = Manifest.read(served.models / "manifest.json")
    record = request_records(served)[0]
    answer = httpx.post(f"{server.url}/predict", json=record)
    assert answer.status_code == 200
    # A label fed back: live accuracy is exported from the first one on.
    label = {"request_id": answer.json()["request_id"], "label": manifest.positive_class}
    assert httpx.post(f"{server.url}/feedback", json=label).status_code == 202
    rejected = {**record, next(iter(record)): "not a value of this column"}
    assert httpx.post(f"{server.url}/predict", json=rejected).status_code == 422
    scrape = httpx.get(f"{server.url}/metrics").text
    exported = {match.split("{")[0].split(" ")[0] for match in scrape.splitlines() if match.startswith("gitml_")}
    exported_bases = {base_name(name) for name in exported}
    used = {name for expr in rule_expressions() + dashboard_expressions() for name in METRIC.findall(expr)}
    assert used, "no gitml metric in the rules or the dashboard"
    for name in sorted(used):
        assert name in exported or base_name(name) in exported_bases, f"{name} is not on the server's /metrics"
    # The test-split figures the rules compare with are the manifest's, one labelled gauge each.
    for metric in ("accuracy", "selection_rate"):
        line = next(x for x in scrape.splitlines() if x.startswith(f'gitml_model_test_metric{{metric="{metric}"}}'))
        assert float(line.split()[-1]) == pytest.approx(manifest.metrics[metric])


def test_the_dashboard_is_a_grafana_dashboard_per_namespace() -> None:
    board = dashboard()
    assert board["uid"] == "gitml-server"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    assert "label_values(gitml_model_info, namespace)" in variables["namespace"]["definition"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        for target in panel["targets"]:
            assert 'namespace="$namespace"' in target["expr"], (panel["title"], target["expr"])
