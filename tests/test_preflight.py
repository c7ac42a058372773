"""`gitml params` checks the composed configuration against the dataset schema before any stage
runs, listing every problem; a module missing from the environment is named with its install
command, never a traceback. Run on whatever dataset conf/ selects."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitml.cli import main
from gitml.gates.checks import Check
from gitml.gates.fairness import fairness_checks, gated_limits
from tests.conftest import git


@pytest.fixture
def conf_root(repo: Path, tmp_path: Path) -> Path:
    shutil.copytree(repo / "conf", tmp_path / "conf")
    return tmp_path


def schema_names(root: Path) -> tuple[str, list[str], list[str]]:
    """The label, the protected columns and the plain features of the dataset conf/ selects."""
    assert main(["--root", str(root), "params"]) == 0
    columns = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))["data"]["columns"]
    label = next(n for n, c in columns.items() if c["role"] == "label")
    protected = [n for n, c in columns.items() if c["role"] == "protected"]
    plain = [n for n, c in columns.items() if c["role"] == "feature" and c.get("pii", "keep") == "keep"]
    return label, protected, plain


def test_params_lists_every_setting_that_names_what_the_schema_lacks(
    conf_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    label, _, plain = schema_names(conf_root)
    capsys.readouterr()
    overrides = [
        f"split.stratify=[{label}_typo]",
        "train.reweigh.enabled=true",
        f"train.reweigh.attributes=[{plain[0]}]",
        f"+gates.fairness.attributes.{plain[0]}={{decide_on: estimate}}",
    ]
    assert main(["--root", str(conf_root), "params", *overrides]) == 1
    err = capsys.readouterr().err
    assert "3 settings of conf/ would stop the pipeline" in err
    assert f"split.stratify names '{label}_typo'" in err
    assert f"(did you mean '{label}'?)" in err
    assert f"train.reweigh.attributes names '{plain[0]}', which the dataset schema does not mark protected" in err
    assert f"gates.fairness.attributes.{plain[0]}: '{plain[0]}' is not a protected column" in err
    assert "Traceback" not in err


def test_params_passes_the_selected_config_as_it_is(conf_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--root", str(conf_root), "params"]) == 0
    assert "checked against the dataset schema" in capsys.readouterr().out
    assert main(["--root", str(conf_root), "params", "--check"]) == 0


def test_a_missing_optional_module_names_its_extra_and_install_command(conf_root: Path) -> None:
    # The serve extra absent, as in the environment `make run` installs: fastapi cannot be
    # imported (a process of its own, so that no module of this one has imported it already).
    script = "import sys; sys.modules['fastapi'] = None; from gitml.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", script, "--root", str(conf_root), "serve"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert "needs the Python package 'fastapi', which is in gitml's `serve` extra" in done.stderr
    assert "pip install -c requirements/lock.txt -e '.[serve]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_protected_attribute_not_named_takes_the_default_limits() -> None:
    config = {
        "default": {"decide_on": "interval", "equal_opportunity_difference": {"max": 0.1}},
        "attributes": {"a": {"decide_on": "estimate", "equalized_odds_difference": {"max": 0.2}}, "c": None},
    }
    limits = gated_limits(config, "params.yaml", ["a", "b", "c"])
    assert set(limits) == {"a", "b"}  # c: named with null, not gated
    assert (
        limits["a"]["equalized_odds_difference"]["setting"]
        == "gates.fairness.attributes.a.equalized_odds_difference.max"
    )
    assert (
        limits["b"]["equal_opportunity_difference"]["setting"]
        == "gates.fairness.default.equal_opportunity_difference.max"
    )


@pytest.mark.parametrize(("decide_on", "passed"), [("interval", True), ("estimate", False)])
def test_a_gap_too_few_cases_define_warns_on_the_interval_rule_and_fails_on_the_estimate(
    decide_on: str, passed: bool
) -> None:
    limits = gated_limits(
        {"attributes": {"a": {"decide_on": decide_on, "equal_opportunity_difference": {"max": 0.1}}}}, "p", ["a"]
    )
    summary = {"a": {"equal_opportunity_difference": None, "groups_compared_tpr": ["x"]}}
    [check] = fairness_checks(limits, summary, {}, 0.95)
    assert isinstance(check, Check)
    assert check.passed is passed
    assert check.warning is passed
    assert "lower evaluate.min_group_cases" in check.reason
    assert check.setting == "gates.fairness.attributes.a.equal_opportunity_difference.max"


@pytest.mark.parametrize(("rows", "batch"), [(34_152, 2048), (10_000, 625), (700, 44), (100, 16), (5, 16)])
def test_the_batch_shrinks_so_a_small_split_trains_in_several_steps(rows: int, batch: int) -> None:
    from gitml.stages.train import TrainConfig, batch_size_for  # Lightning: imported by this test alone

    config = TrainConfig(42, 2048, 16, None, "none", "val/auroc", 4, 0.0, False, None)
    assert batch_size_for(config, rows) == batch


def test_a_baseline_of_another_dataset_label_or_positive_class_is_no_comparable_model(tmp_path: Path) -> None:
    from gitml.baseline import branch_baseline, incomparable

    columns: dict[str, dict[str, str]] = {"risk": {"role": "label", "positive": "bad"}, "age": {"role": "feature"}}
    data: dict[str, Any] = {"name": "credit", "columns": columns}
    git(tmp_path, "init", "-q", "-b", "main")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": data}))
    git(tmp_path, "add", "params.yaml")
    git(tmp_path, "commit", "-qm", "main")
    main_branch = branch_baseline(tmp_path)

    assert incomparable({"data": data}, main_branch) is None
    # A schema edit of the same problem (a column more) still compares.
    wider = {**data, "columns": {**columns, "income": {"role": "feature"}}}
    assert incomparable({"data": wider}, main_branch) is None
    for changed, said in (
        ({**data, "name": "census"}, "dataset 'census' (risk = bad)"),
        ({**data, "columns": {"default": {"role": "label", "positive": "yes"}}}, "dataset 'credit' (default = yes)"),
        ({**data, "columns": {"risk": {"role": "label", "positive": "good"}}}, "dataset 'credit' (risk = good)"),
    ):
        why = incomparable({"data": changed}, main_branch)
        assert why is not None
        assert "was trained on dataset 'credit' (risk = bad)" in why
        assert why.endswith(f"this model on {said}")
    # Nothing committed to compare with, or no params.yaml there: nothing says it differs.
    elsewhere = tmp_path.parent / f"{tmp_path.name}-not-a-repository"
    elsewhere.mkdir()
    assert incomparable({"data": data}, branch_baseline(elsewhere)) is None
