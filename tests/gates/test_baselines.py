"""The gate's baselines check: off by default, one line to turn on, the network's test AUROC held
within gates.baselines.max_auroc_gap of the best classical baseline's."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from gitml.cli import main
from gitml.errors import GitmlError
from gitml.gates.baselines import BaselinesGateConfig, baselines_checks
from gitml.outputs import BaselinesFile
from tests.conftest import params_section

ROWS = 1000
ON = BaselinesGateConfig(enabled=True, max_auroc_gap=0.005)


def network(auroc: float, rows: int = ROWS) -> dict[str, Any]:
    return {"test": {"auroc": auroc, "rows": rows}}


def fitted(**aurocs: float) -> BaselinesFile:
    """A reports/baselines.json with these test AUROCs; the best is the highest."""
    models: dict[str, Any] = {
        name: {"threshold": {}, "test": {"auroc": auroc, "rows": ROWS}, "fairness": {}, "fit": {}}
        for name, auroc in aurocs.items()
    }
    return {"enabled": True, "config": {}, "models": models, "best": max(aurocs, key=aurocs.__getitem__)}


def test_off_by_default_and_then_no_check() -> None:
    config = BaselinesGateConfig.from_config(params_section("gates.baselines"), "params.yaml")  # conf/gates/'s
    assert config.enabled is False
    assert config.max_auroc_gap == params_section("gates.baselines")["max_auroc_gap"]
    assert baselines_checks(config, network(0.5), fitted(gradient_boosting=0.99)) == []


@pytest.mark.parametrize(
    ("ours", "passed"),
    [(0.927, True), (0.930, True), (0.9231, True), (0.9219, False), (0.9, False)],
)
def test_the_network_may_be_at_most_the_gap_below_the_best_baseline(ours: float, passed: bool) -> None:
    (check,) = baselines_checks(ON, network(ours), fitted(logistic_regression=0.903, gradient_boosting=0.927))
    assert check.passed is passed
    assert check.name == "baselines/auroc"
    assert check.kind == "baselines"
    assert check.setting == "gates.baselines.max_auroc_gap"
    assert check.value == pytest.approx(ours - 0.927)
    assert check.threshold == -0.005
    assert "best baseline (gradient boosting 0.927)" in check.reason
    assert ("within 0.005 test AUROC" if passed else "more than 0.005 test AUROC below") in check.reason


def test_it_fails_when_there_is_nothing_to_compare_with() -> None:
    off: BaselinesFile = {"enabled": False, "config": {}, "models": {}, "best": None}
    (check,) = baselines_checks(ON, network(0.9), off)
    assert not check.passed
    assert "baselines.enabled: false" in check.reason
    (check,) = baselines_checks(ON, network(0.9, rows=ROWS + 1), fitted(gradient_boosting=0.9))
    assert not check.passed
    assert "different runs" in check.reason


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"enabled": "on", "max_auroc_gap": 0.005}, "enabled must be true or false"),
        ({"enabled": True, "max_auroc_gap": -0.1}, r"max_auroc_gap must be a number in \[0, 1\]"),
        ({"enabled": True}, "'max_auroc_gap' is required"),
        ({"enabled": True, "max_gap": 0.01}, r"unknown key 'max_gap' \(did you mean 'max_auroc_gap'\?\)"),
    ],
)
def test_config_mistakes_name_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(GitmlError, match=rf"^params.yaml: gates.baselines: {message}"):
        BaselinesGateConfig.from_config(config, "params.yaml")


def test_params_refuses_the_check_on_with_the_baselines_off(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(repo / "conf", tmp_path / "conf")
    assert main(["--root", str(tmp_path), "params", "gates.baselines.enabled=true"]) == 0
    capsys.readouterr()
    assert main(["--root", str(tmp_path), "params", "gates.baselines.enabled=true", "baselines.enabled=false"]) == 1
    err = capsys.readouterr().err
    assert "gates.baselines.enabled is true, but baselines.enabled is false" in err
    assert "Traceback" not in err
