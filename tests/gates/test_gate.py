"""The gate: fairness limits, the champion from real git and GTO tags, the verdict and `gitml gate --check`."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gitml.baseline import branch_baseline, champion
from gitml.bundle import Manifest, write_manifest
from gitml.cli import main
from gitml.config import compose_params, dataset_schema, load_params
from gitml.errors import GitmlError
from gitml.gates.champion import ChampionConfig, champion_checks
from gitml.gates.fairness import fairness_checks, gated_limits
from gitml.paths import Paths
from gitml.scratch import scratch_env
from gitml.stages import gate
from tests.conftest import REPO, Trained, git, params_section

PROTECTED = ["sex", "race", "age"]
SUMMARY = {"equal_opportunity_difference": 0.08, "demographic_parity_ratio": 0.30, "base_rate_ratio": 0.36}


CHAMPION = ChampionConfig.from_config(params_section("gates.champion"), "params.yaml")  # conf/gates/'s


def limits(**attributes: Any) -> dict[str, Any]:
    """The checked limits of `attributes`; one that does not say decide_on decides on the estimate."""
    completed = {name: {"decide_on": "estimate", **limit} for name, limit in attributes.items()}
    return gated_limits({"attributes": completed}, "params.yaml", PROTECTED)


def one_check(limit: dict[str, Any], summary: dict[str, Any], interval: list[float] | None = None) -> Any:
    metric = next(k for k in limit if k != "decide_on")
    intervals = {"sex": {metric: interval}} if interval else {}
    (check,) = fairness_checks(limits(sex=limit), {"sex": summary}, intervals, 0.95)
    return check


@pytest.mark.parametrize(
    ("limit", "passed"),
    [
        ({"equal_opportunity_difference": {"max": 0.10}}, True),
        ({"equal_opportunity_difference": {"max": 0.05}}, False),
        ({"demographic_parity_ratio": {"min": 0.8, "relative_to_base_rate": False}}, False),  # four-fifths: 0.30 < 0.8
        ({"demographic_parity_ratio": {"min": 0.8, "relative_to_base_rate": True}}, True),  # 0.30 >= 0.8 x 0.36
        ({"demographic_parity_ratio": {"min": 0.9, "relative_to_base_rate": True}}, False),  # 0.30 < 0.324
    ],
)
def test_an_estimate_is_held_to_its_limit(limit: dict[str, Any], passed: bool) -> None:
    check = one_check(limit, SUMMARY)
    assert check.passed is passed
    assert not check.warning
    assert ("within" in check.reason) is passed


def test_relative_limit_is_the_base_rate_ratio_times_min() -> None:
    check = one_check({"demographic_parity_ratio": {"min": 0.8, "relative_to_base_rate": True}}, SUMMARY)
    assert check.threshold == pytest.approx(0.8 * 0.36)
    assert "base-rate ratio 0.360" in check.reason


@pytest.mark.parametrize(
    ("interval", "passed", "warning"),
    [
        ([0.02, 0.09], True, False),  # estimate 0.08 within 0.10
        ([0.05, 0.30], True, True),  # estimate past 0.06, interval reaches back inside
        ([0.07, 0.12], False, False),  # the whole interval above 0.06
    ],
)
def test_decide_on_interval_fails_only_when_the_whole_interval_is_past(
    interval: list[float], passed: bool, warning: bool
) -> None:
    limit = {"decide_on": "interval", "equal_opportunity_difference": {"max": 0.10 if interval[1] < 0.1 else 0.06}}
    check = one_check(limit, SUMMARY, interval)
    assert (check.passed, check.warning) == (passed, warning)
    assert check.interval == tuple(interval)


def test_an_undefined_gap_fails_and_says_what_to_change() -> None:
    summary = {"equal_opportunity_difference": None, "groups_compared_tpr": ["Male"]}
    check = one_check({"equal_opportunity_difference": {"max": 0.1}}, summary)
    assert not check.passed
    assert "min_group_cases" in check.reason
    assert "Male" in check.reason


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"sexx": {"equal_opportunity_difference": {"max": 0.1}}}, "did you mean 'sex'"),
        ({"sex": {"equal_oportunity_difference": {"max": 0.1}}}, "did you mean 'equal_opportunity_difference'"),
        ({"sex": {"equal_opportunity_difference": {"min": 0.1}}}, "unknown key 'min'"),
        ({"sex": {"equal_opportunity_difference": {"max": 10}}}, "max must be a number in [0, 1]"),
        ({"sex": {"decide_on": "ci"}}, "decide_on 'ci' is not one of estimate, interval"),
        ({"sex": {"equal_opportunity_difference": {"max": 0.1, "relative_to_base_rate": True}}}, "unknown key"),
    ],
)
def test_config_mistakes_name_the_key(attributes: dict[str, Any], message: str) -> None:
    with pytest.raises(GitmlError, match=r"gates\.fairness") as caught:
        limits(**attributes)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("fairness", "message"),
    [
        ({}, r"gates.fairness: 'attributes' is required"),
        (
            {"attributes": {"sex": {"equal_opportunity_difference": {"max": 0.1}}}},
            r"gates.fairness.attributes.sex: 'decide_on' is required",
        ),
        (
            {"attributes": {"sex": {"decide_on": "estimate", "demographic_parity_ratio": {"min": 0.8}}}},
            r"gates.fairness.attributes.sex.demographic_parity_ratio: 'relative_to_base_rate' is required",
        ),
        (
            {"attributes": {"sex": {"decide_on": "estimate", "equal_opportunity_difference": {}}}},
            r"gates.fairness.attributes.sex.equal_opportunity_difference: 'max' is required",
        ),
    ],
)
def test_a_missing_fairness_key_is_named(fairness: dict[str, Any], message: str) -> None:
    with pytest.raises(GitmlError, match=rf"params.yaml: {message}"):
        gated_limits(fairness, "params.yaml", PROTECTED)


def test_no_gated_attribute_is_no_limit() -> None:
    assert gated_limits({"attributes": None}, "params.yaml", PROTECTED) == {}
    assert gated_limits({"attributes": {}}, "params.yaml", PROTECTED) == {}


def test_the_champion_config_is_conf_gates() -> None:
    champion = params_section("gates.champion")
    config = ChampionConfig.from_config(champion, "params.yaml")
    assert dataclasses.asdict(config) == champion


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"primary_metric": "auc"},
            r"primary_metric 'auc' is not one of accuracy, .*, auroc, .*\(did you mean 'auroc'\?\)",
        ),
        ({"tolerance": -0.1}, r"tolerance must be a number >= 0, got -0.1"),
        ({"branch": None}, r"branch must be text, got None"),
        ({"stage": ""}, r"stage must be text"),
    ],
)
def test_champion_config_mistakes_are_named(change: dict[str, Any], message: str) -> None:
    champion = params_section("gates.champion", **change)
    with pytest.raises(GitmlError, match=rf"params.yaml: gates.champion: {message}"):
        ChampionConfig.from_config(champion, "params.yaml")


# --- the champion, from real git history and real GTO tags (no mocks) -------------------------


def gto(root: Path, *args: str) -> None:
    subprocess.run(["gto", *args], cwd=root, env=scratch_env(), capture_output=True, text=True, check=True)


def commit_metrics(root: Path, auroc: float, tpr_gap: float, message: str) -> str:
    metrics = {"test": {"auroc": auroc, "brier": 0.1}, "fairness": {"sex": {"equal_opportunity_difference": tpr_gap}}}
    path = root / "reports" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics), encoding="utf-8")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def history(tmp_path: Path) -> Path:
    root = tmp_path / "history"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    return root


GATED = {"sex": {"equal_opportunity_difference": {"max": 0.1}}}


def candidate(auroc: float, tpr_gap: float) -> dict[str, Any]:
    return {"test": {"auroc": auroc, "brier": 0.1}, "fairness": {"sex": {"equal_opportunity_difference": tpr_gap}}}


def test_without_history_there_is_no_champion_and_the_check_says_so(tmp_path: Path) -> None:
    baseline = champion(tmp_path)
    assert not baseline.exists
    assert "not a git repository" in baseline.description
    (check,) = champion_checks(CHAMPION, baseline, candidate(0.9, 0.05), GATED)
    assert check.passed
    assert "no champion" in check.reason


def test_before_any_promotion_the_champion_is_mains_committed_metrics(history: Path) -> None:
    main_commit = commit_metrics(history, 0.910, 0.05, "main's model")
    git(history, "checkout", "-q", "-b", "candidate")
    baseline = champion(history)
    assert (baseline.source, baseline.commit) == ("branch", main_commit)

    worse, wider = champion_checks(CHAMPION, baseline, candidate(0.900, 0.08), GATED)
    assert not worse.passed
    assert worse.value == pytest.approx(-0.010)
    assert "0.9000 vs champion 0.9100" in worse.reason
    assert not wider.passed
    assert wider.value == pytest.approx(0.03)

    close, same = champion_checks(CHAMPION, baseline, candidate(0.907, 0.06), GATED)
    assert close.passed
    assert same.passed  # -0.003 within 0.005; widens 0.01 within 0.02


def test_the_production_model_in_gto_is_the_champion_once_there_is_one(history: Path) -> None:
    prod_commit = commit_metrics(history, 0.930, 0.05, "the model in production")
    gto(history, "register", "model")
    gto(history, "assign", "model", "--stage", "prod")
    commit_metrics(history, 0.880, 0.05, "a weaker model merged later, never promoted")
    baseline = champion(history)
    assert (baseline.source, baseline.commit, baseline.version) == ("gto", prod_commit, "v0.0.1")
    assert "model#prod#1" in baseline.description
    (primary, _) = champion_checks(CHAMPION, baseline, candidate(0.920, 0.05), GATED)
    assert not primary.passed  # 0.92 is better than main's 0.88, but 0.01 worse than production's 0.93


@pytest.mark.parametrize(
    ("interval", "passed", "warning"),
    [
        ([0.06, 0.15], True, True),  # 0.10 vs 0.05 widens by 0.05, but the interval reaches 0.06 (< 0.05 + 0.02)
        ([0.08, 0.15], False, False),  # even the interval's low end widens by 0.03
    ],
)
def test_a_gap_decided_on_its_interval_widens_only_when_all_of_it_does(
    history: Path, interval: list[float], passed: bool, warning: bool
) -> None:
    commit_metrics(history, 0.9, 0.05, "main")
    gated = {"sex": {"equal_opportunity_difference": {"max": 0.1, "decide_on": "interval"}}}
    intervals = {"sex": {"equal_opportunity_difference": interval}}
    (_, check) = champion_checks(CHAMPION, champion(history), candidate(0.9, 0.10), gated, intervals)
    assert (check.passed, check.warning) == (passed, warning)
    assert check.value == pytest.approx(0.05)


def test_lower_is_better_metrics_count_a_rise_as_worse(history: Path) -> None:
    commit_metrics(history, 0.9, 0.05, "main")
    config = dataclasses.replace(CHAMPION, primary_metric="brier", tolerance=0.005)
    worse = candidate(0.9, 0.05)
    worse["test"]["brier"] = 0.11
    (check, _) = champion_checks(config, champion(history), worse, GATED)
    assert not check.passed
    assert check.value == pytest.approx(-0.01)


def test_a_shallow_clone_finds_main_once_fetched(history: Path, tmp_path: Path) -> None:
    commit_metrics(history, 0.91, 0.05, "main")
    git(history, "checkout", "-q", "-b", "feature")
    commit_metrics(history, 0.92, 0.05, "feature")
    clone = tmp_path / "ci"
    git(tmp_path, "clone", "-q", "--depth", "1", "--branch", "feature", f"file://{history}", str(clone))
    assert not branch_baseline(clone).exists
    assert "git fetch --depth=1 origin main:main" in branch_baseline(clone).description
    git(clone, "fetch", "-q", "--depth", "1", "origin", "main:main")  # what the CI workflow runs
    found = branch_baseline(clone)
    assert found.ref == "main"
    assert found.read_json("reports/metrics.json")["test"]["auroc"] == 0.91


# --- the whole gate on the repository's own outputs ----------------------------------------


@pytest.fixture
def gate_repo(repo: Path, trained_sample: Trained, tmp_path: Path) -> Paths:
    """conf/ and the committed reports of this repository, in a directory that is not a git repository."""
    root = tmp_path / "gate"
    shutil.copytree(repo / "conf", root / "conf")
    paths = Paths(root)
    compose_params(paths.conf, paths.params)
    for path in (paths.metrics, paths.intervals, paths.fairness):
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / path.relative_to(root), path)
    write_deepchecks(paths, [("PASS", "Feature Drift"), ("WARN", "New Category")])
    # The committed model files live in DVC, not in a fresh clone: the suite's sample bundle, with a
    # manifest that records the committed metrics, stands in for them.
    shutil.copytree(trained_sample[0].models, paths.models)
    params = load_params(paths.params)
    metrics = json.loads(paths.metrics.read_text())
    sample = Manifest.read(paths.models / "manifest.json")
    write_manifest(
        paths.models, params["data"], dataset_schema(params, paths.params), {}, params,
        {**metrics["test"], "threshold": metrics["threshold"]["value"]}, sample.probe,
    )  # fmt: skip
    return paths


def write_deepchecks(paths: Paths, outcomes: list[tuple[str, str]]) -> None:
    conditions = [
        {
            "suite": "train_test_validation",
            "check": check,
            "condition": "score below 0.2",
            "category": c,
            "details": "x",
        }
        for c, check in outcomes
    ]
    paths.deepchecks_results.write_text(json.dumps({"suites": {}, "conditions": conditions}), encoding="utf-8")


def test_the_gate_writes_every_check_and_passes_the_committed_model(
    gate_repo: Paths, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--root", str(gate_repo.root), "gate"]) == 0
    report = json.loads(gate_repo.gate.read_text(encoding="utf-8"))
    kinds = {c["kind"] for c in report["checks"]}
    assert kinds == {"bundle", "deepchecks", "fairness", "champion"}
    params = load_params(gate_repo.params)
    protected = [c.name for c in dataset_schema(params, gate_repo.params).protected_columns]
    configured = gated_limits(params["gates"]["fairness"], "params.yaml", protected)
    fairness = [c["name"] for c in report["checks"] if c["kind"] == "fairness"]
    assert fairness == [f"fairness/{a}/{m}" for a, ms in configured.items() for m in ms]
    for check in report["checks"]:
        assert set(check) == {
            "name",
            "kind",
            "value",
            "threshold",
            "passed",
            "reason",
            "warning",
            "interval",
            "setting",
        }
        assert check["reason"]
        if check["kind"] in ("fairness", "champion"):  # the params.yaml key that sets the limit
            _, attribute, *metric = check["name"].split("/")
            if check["kind"] == "fairness":
                assert check["setting"] == configured[attribute][metric[0]]["setting"]
                assert f".{metric[0]}." in check["setting"]
            elif check["threshold"] is not None:  # "no champion" has no limit to name
                assert check["setting"].startswith("gates.champion.")
    assert report["verdict"] == "pass"
    assert report["champion"]["source"] == "none"
    assert main(["--root", str(gate_repo.root), "gate", "--check"]) == 0
    out = capsys.readouterr().out
    assert "gate: PASS" in out
    assert "passed with a warning" in out
    assert "New Category" in out


@pytest.mark.parametrize("category", ["FAIL", "ERROR"])
def test_a_failed_condition_fails_the_verdict_after_writing_the_report(
    gate_repo: Paths, capsys: pytest.CaptureFixture[str], category: str
) -> None:
    write_deepchecks(gate_repo, [("PASS", "Feature Drift"), (category, "Label Drift")])
    assert main(["--root", str(gate_repo.root), "gate"]) == 0  # the gate records; it does not fail the stage
    report = json.loads(gate_repo.gate.read_text(encoding="utf-8"))
    assert report["verdict"] == "fail"
    assert report["counts"]["failed"] == 1
    assert "deepchecks/train_test_validation/Label Drift" in report["reason"]
    capsys.readouterr()
    assert main(["--root", str(gate_repo.root), "gate", "--check"]) == 1
    err = capsys.readouterr().err
    assert "gate: FAIL" in err
    table = err.splitlines()
    header = next(i for i, line in enumerate(table) if line.strip().startswith("check"))
    assert "Label Drift" in table[header + 1]
    assert category in table[header + 1]


def test_a_tightened_limit_fails_the_committed_model(gate_repo: Paths) -> None:
    # The committed model's widest equalized-odds gap, held to half of what decides it (its
    # estimate, or the low end of its interval), the attribute's other limits as they are.
    fairness = json.loads(gate_repo.metrics.read_text())["fairness"]
    intervals = json.loads(gate_repo.intervals.read_text())["fairness"]
    gaps = {a: m["equalized_odds_difference"] for a, m in fairness.items() if m.get("equalized_odds_difference")}
    attribute = max(gaps, key=gaps.__getitem__)
    named = load_params(gate_repo.params)["gates"]["fairness"]["attributes"].get(attribute)
    if named:
        low = intervals[attribute]["equalized_odds_difference"][0]
        deciding = low if named["decide_on"] == "interval" else gaps[attribute]
        override = f"++gates.fairness.attributes.{attribute}.equalized_odds_difference={{max: {deciding / 2:.4f}}}"
    else:  # held to the generic default: named now, with this one limit
        limit = f"{{decide_on: estimate, equalized_odds_difference: {{max: {gaps[attribute] / 2:.4f}}}}}"
        override = f"++gates.fairness.attributes.{attribute}={limit}"
    compose_params(gate_repo.conf, gate_repo.params, [override])
    report = gate.run(load_params(gate_repo.params), gate_repo)
    failed = [c["name"] for c in report["checks"] if not c["passed"]]
    assert failed == [f"fairness/{attribute}/equalized_odds_difference"]


def test_missing_inputs_name_the_stage_to_run(gate_repo: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    gate_repo.deepchecks_results.unlink()
    assert main(["--root", str(gate_repo.root), "gate"]) == 1
    assert "deepchecks stage has not run" in capsys.readouterr().err
    assert main(["--root", str(gate_repo.root), "gate", "--check"]) == 1
    assert "gate stage has not run" in capsys.readouterr().err


def test_one_line_turns_the_baselines_check_on(gate_repo: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    """gates.baselines.enabled: the committed network against the committed baselines, within the gap or not."""
    shutil.copy(REPO / "reports" / "baselines.json", gate_repo.baselines)
    compose_params(gate_repo.conf, gate_repo.params, ["gates.baselines.enabled=true"])
    report = gate.run(load_params(gate_repo.params), gate_repo)
    (check,) = [c for c in report["checks"] if c["kind"] == "baselines"]
    baselines = json.loads(gate_repo.baselines.read_text())
    ours = json.loads(gate_repo.metrics.read_text())["test"]["auroc"]
    theirs = baselines["models"][baselines["best"]]["test"]["auroc"]
    gap = load_params(gate_repo.params)["gates"]["baselines"]["max_auroc_gap"]
    assert check["passed"] is (ours - theirs >= -gap)
    assert check["value"] == pytest.approx(ours - theirs)
    assert check["setting"] == "gates.baselines.max_auroc_gap"
    gate_repo.baselines.unlink()
    assert main(["--root", str(gate_repo.root), "gate"]) == 1
    assert "baselines.json: not found; the baselines stage has not run" in capsys.readouterr().err
