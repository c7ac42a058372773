"""`gitml lineage VERSION` on a real git repository whose versions the real `gto` registered and whose
stages `gitml assign` set: everything it says comes from the tags and the files at the version's commit."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gitml.evaluate.measures import HEADLINE
from gitml.release import registry
from gitml.release.lineage import WIDTH, flatten, params_diff
from tests.conftest import git
from tests.release.test_registry import DIGEST, PR, build_released, call, ok

DATE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """v0.1.0 and v0.2.0 registered; staging had v0.1.0 and now runs v0.2.0; prod runs v0.1.0."""
    root = tmp_path_factory.mktemp("lineage") / "repo"
    versions = build_released(root)
    for stage, version in (("staging", "v0.1.0"), ("prod", "v0.1.0"), ("staging", "v0.2.0")):
        registry.assign(root, stage, version)
    return root, versions


def section(text: str, name: str) -> list[str]:
    """The rows of one section of the output: names in a column of WIDTH, rows after it."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines()[1:]:
        current = line[2 : 2 + WIDTH].strip() or current
        found.setdefault(current, []).append(line[2 + WIDTH :])
    return found[name]


def test_the_lineage_of_a_version(deployed: tuple[Path, dict[str, Any]]) -> None:
    root, versions = deployed
    state, before = versions["v0.2.0"], versions["v0.1.0"]
    text = ok(root, "lineage", "v0.2.0")
    assert text.splitlines()[0] == "model v0.2.0"
    assert section(text, "commit")[0].startswith(state["commit"])
    assert section(text, "pull request") == [f"#{PR}"]
    assert section(text, "gate") == [f"pass ({len(state['gate']['checks'])} of {len(state['gate']['checks'])} checks)"]
    assert section(text, "image") == [DIGEST]
    data = " ".join(section(text, "data"))
    for split, digest in state["manifest"]["data"].items():
        assert re.search(rf"{split}\s+sha256 {digest}", data)
    params = section(text, "params")
    assert "1 key differs from v0.1.0" in " ".join(params)
    assert any(
        line.split() == [state["key"], json.dumps(before["value"]), "->", json.dumps(state["value"])] for line in params
    ), params
    metrics = section(text, "metrics")
    shown = [m for m in HEADLINE if m.name in state["metrics"]["test"]]
    assert len(metrics) == len(shown)
    for line, measure in zip(metrics, shown, strict=True):
        new, old = state["metrics"]["test"][measure.name], before["metrics"]["test"][measure.name]
        assert line.split() == [*measure.label.split(), f"{new:.4f}", "(v0.1.0", f"{old:.4f})"]
    fairness = section(text, "fairness")
    assert sorted(line.split()[0] for line in fairness) == sorted(state["metrics"]["fairness"])
    (deployed_row,) = section(text, "deployed")
    assert re.fullmatch(rf"staging\s+since {DATE} \(tag model#staging#\d+\)", deployed_row)
    assert section(text, "past stages") == ["none"]


def test_stages_now_and_past(deployed: tuple[Path, dict[str, Any]]) -> None:
    root, _ = deployed
    text = ok(root, "lineage", "v0.1.0")
    assert section(text, "pull request") == ["none recorded"]
    assert section(text, "image")[0].startswith("none recorded")
    assert "the first version" in " ".join(section(text, "params"))
    (now,) = section(text, "deployed")
    since = registry.read_registry(root).in_stage("prod")[0]
    assert now == f"prod      since {registry.when(since.since)} (tag {since.tag})"
    (past,) = section(text, "past stages")
    assert re.fullmatch(rf"staging\s+{DATE} -> {DATE} \(tags model#staging#\d+, model#staging!#\d+\)", past)


def test_lineage_works_on_a_clone_with_the_tags(deployed: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = deployed
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-checkout", str(root), str(clone))  # the tags come along; no work tree
    assert ok(clone, "lineage", "v0.2.0") == ok(root, "lineage", "v0.2.0")


def test_an_unknown_version_lists_the_registered_ones(deployed: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    status, text = call(deployed[0], "lineage", "v9.9.9")
    assert status == 1
    assert "v9.9.9" in text
    assert "v0.1.0, v0.2.0" in text
    (tmp_path / "empty").mkdir()
    git(tmp_path / "empty", "init", "-q")
    status, text = call(tmp_path / "empty", "lineage", "v0.1.0")
    assert status == 1
    assert "no version of model is registered" in text


def test_params_diff_flattens_nested_keys() -> None:
    old = {"train": {"lr": 0.1, "layers": [64, 32]}, "seed": 1}
    new = {"train": {"lr": 0.2, "layers": [64, 32], "decay": 0.01}, "seed": 1}
    assert flatten(new) == {"train.lr": 0.2, "train.layers": [64, 32], "train.decay": 0.01, "seed": 1}
    changes = params_diff(old, new)
    assert [c[0] for c in changes] == ["train.decay", "train.lr"]
    assert changes[1][1:] == (0.1, 0.2)
