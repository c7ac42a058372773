"""params.yaml is generated from conf/ by Hydra, exactly as `dvc exp run` composes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from gitml.config import compose_params, load_params
from gitml.errors import GitmlError


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
    assert params["data"]["name"] == "adult"


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
