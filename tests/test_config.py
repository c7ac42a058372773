"""params.yaml is generated from conf/ by Hydra, exactly as `dvc exp run` composes it."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitml.config import compose_params, dataset_schema, load_params
from gitml.errors import GitmlError
from tests.conftest import REPO, params_section


def test_committed_params_match_conf(repo: Path, tmp_path: Path) -> None:
    compose_params(repo / "conf", tmp_path / "params.yaml")
    assert (tmp_path / "params.yaml").read_text() == (repo / "params.yaml").read_text(), (
        "params.yaml is out of date: run `make params` and commit it"
    )


def test_overrides_compose(repo: Path, tmp_path: Path) -> None:
    compose_params(
        repo / "conf", tmp_path / "params.yaml", ["split.seed=7", "data.quality.max_quarantined_fraction=0.5"]
    )
    params = load_params(tmp_path / "params.yaml")
    assert params["split"]["seed"] == 7
    assert params["data"]["quality"]["max_quarantined_fraction"] == 0.5
    # The dataset conf/config.yaml selects, whichever it is.
    choice = re.search(r"^  - data: (\S+)", (repo / "conf" / "config.yaml").read_text(), flags=re.M)
    assert choice is not None
    selected = yaml.safe_load((repo / "conf" / "data" / f"{choice[1]}.yaml").read_text())
    assert params["data"]["name"] == selected["name"]


def test_a_second_dataset_config_is_selectable(repo: Path, tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(repo / "conf", conf)
    mine = yaml.safe_load((conf / "data" / "adult.yaml").read_text())
    mine["name"] = "mine"
    (conf / "data" / "mine.yaml").write_text(yaml.safe_dump(mine))
    compose_params(conf, tmp_path / "params.yaml", ["data=mine"])
    assert load_params(tmp_path / "params.yaml")["data"]["name"] == "mine"


@pytest.mark.parametrize("override", ["data=does_not_exist", "split.sed=7"])
def test_bad_overrides_are_errors(repo: Path, tmp_path: Path, override: str) -> None:
    with pytest.raises(GitmlError, match="composing"):
        compose_params(repo / "conf", tmp_path / "params.yaml", [override])


def test_no_conf_dir(tmp_path: Path) -> None:
    with pytest.raises(GitmlError, match="root of the Hydra config"):
        compose_params(tmp_path / "conf", tmp_path / "params.yaml")


# --- Defaults live in conf/ only: every key a stage reads is required --------------------------

SOURCE = "params.yaml"
PARAMS = load_params(REPO / "params.yaml")
# The sections of params.yaml that stages read with a ConfigReader (the dataset schema, whose
# optional keys have documented defaults, and gates.fairness, whose limits are optional, aside).
SECTIONS = (
    "split", "preprocess", "train", "baselines", "export", "evaluate", "gates.deepchecks", "gates.champion",
    "gates.baselines", "serve",
)  # fmt: skip
# The message of a missing fraction says what the three are for.
FRACTIONS = r"split.fractions: give each of train, val, test a positive share"


def read(name: str, cfg: Mapping[str, Any]) -> Any:
    """The section checked by the code that a stage reads it with."""
    from gitml.data.features import PreprocessConfig
    from gitml.data.split import SplitConfig
    from gitml.evaluate import config as evaluate
    from gitml.evaluate.classical import BaselinesConfig
    from gitml.gates.baselines import BaselinesGateConfig
    from gitml.gates.champion import ChampionConfig
    from gitml.serve.config import ServeConfig
    from gitml.stages import deepchecks, export
    from gitml.stages.train import TrainConfig

    label = dataset_schema(PARAMS, Path(SOURCE)).label.name
    readers: dict[str, Callable[[Mapping[str, Any]], Any]] = {
        "split": lambda c: SplitConfig.from_config(c, label, SOURCE),
        "preprocess": lambda c: PreprocessConfig.from_config(c, SOURCE),
        "train": lambda c: TrainConfig.from_config(c, SOURCE),
        "baselines": lambda c: BaselinesConfig.from_config(c, SOURCE),
        "export": lambda c: export.read_config(c, SOURCE),
        "evaluate": lambda c: evaluate.read_config(c, SOURCE),
        "gates.deepchecks": lambda c: deepchecks.read_config(c, SOURCE),
        "gates.champion": lambda c: ChampionConfig.from_config(c, SOURCE),
        "gates.baselines": lambda c: BaselinesGateConfig.from_config(c, SOURCE),
        "serve": lambda c: ServeConfig.from_config(c, SOURCE, Path("/srv")),
    }
    return readers[name](cfg)


def key_paths(mapping: Mapping[str, Any], parent: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key of a nested mapping, as its path."""
    paths = []
    for key, value in mapping.items():
        paths.append((*parent, key))
        if isinstance(value, Mapping):
            paths += key_paths(value, (*parent, key))
    return paths


MISSING = [
    pytest.param(name, path, id=f"{name}.{'.'.join(path)}")
    for name in SECTIONS
    for path in key_paths(params_section(name))
]


def test_every_section_is_checked_and_read_whole() -> None:
    assert {len(key_paths(params_section(name))) > 0 for name in SECTIONS} == {True}
    for name in SECTIONS:
        read(name, params_section(name))  # conf/ has every key the code reads


@pytest.mark.parametrize(("name", "path"), MISSING)
def test_a_missing_key_is_an_error_that_names_it(name: str, path: tuple[str, ...]) -> None:
    cfg = params_section(name)
    parent = cfg
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    where = ".".join((name, *path[:-1]))
    message = FRACTIONS if where == "split.fractions" else rf"{re.escape(where)}: '{re.escape(path[-1])}' is required\."
    with pytest.raises(GitmlError, match=rf"^{SOURCE}: {message}"):
        read(name, cfg)


def test_the_deepchecks_config_is_conf_gates_deepchecks() -> None:
    """No hand copy of conf/gates/: what the stage reads is the params section itself."""
    deepchecks_cfg = params_section("gates.deepchecks")
    assert read("gates.deepchecks", deepchecks_cfg) == deepchecks_cfg


def test_read_values_are_params_values() -> None:
    """The values the stages use are params.yaml's, whatever they are: change each and it follows."""
    export = params_section("export")
    assert read("export", {"opset": export["opset"] + 1, "parity_tolerance": 0.25}) == (export["opset"] + 1, 0.25)
    evaluate = params_section("evaluate")
    evaluate["threshold"] = {"rule": "fixed", "value": 0.0}
    evaluate["bootstrap"] = {"resamples": 123, "confidence": 0.9, "seed": 5}
    config = read("evaluate", evaluate)
    assert (config.rule, config.value, config.calibration_bins) == ("fixed", 0.0, evaluate["calibration_bins"])
    assert (config.bootstrap.resamples, config.bootstrap.confidence, config.bootstrap.seed) == (123, 0.9, 5)
    assert (config.min_group_size, config.min_group_cases) == (evaluate["min_group_size"], evaluate["min_group_cases"])
    split = {**params_section("split"), "seed": 3, "reference_rows": 7}
    assert (read("split", split).seed, read("split", split).reference_rows) == (3, 7)
