"""The PNG figures: main overlaid where it has the data, one series where it has not, stable bytes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PIL import Image

from gitml.baseline import branch_baseline
from gitml.paths import Paths
from gitml.report import Outputs, curve_names, working_tree
from gitml.report.figures import THIS, write_figures
from tests.report.conftest import Reported

MAIN = "main (abc1234)"


def outputs(reported: Reported) -> tuple[Outputs, Outputs]:
    paths = reported.paths
    curves = curve_names(paths)
    baseline = branch_baseline(paths.root)
    assert baseline.exists
    return Outputs.read(working_tree(paths.root), paths, curves), Outputs.read(baseline.read_text, paths, curves)


def test_main_is_drawn_beside_this_branch(reported: Reported, tmp_path: Path) -> None:
    now, main = outputs(reported)
    drawn = {d.name: d for d in write_figures(tmp_path, now, main, MAIN)}
    assert set(drawn) == {"roc", "pr", "calibration", "groups", "training"}
    for name in ("roc", "pr", "calibration", "groups"):
        assert set(drawn[name].series) == {THIS, MAIN}, name
    assert {f"{MAIN}: {c}" for c in now.curves} | {f"{THIS}: {c}" for c in now.curves} == set(drawn["training"].series)
    assert now.plots["roc"] != main.plots["roc"]  # the branch moved its curve: two different lines


def test_without_main_each_figure_has_this_branch_alone(reported: Reported, tmp_path: Path) -> None:
    now, _ = outputs(reported)
    for figure in write_figures(tmp_path, now, None, MAIN):
        assert all(label.startswith(THIS) for label in figure.series), figure.name


def test_figures_are_small_stable_pngs(reported: Reported, tmp_path: Path) -> None:
    now, main = outputs(reported)
    first = write_figures(tmp_path / "a", now, main, MAIN)
    second = write_figures(tmp_path / "b", now, main, MAIN)
    for a, b in zip(first, second, strict=True):
        assert a.path.read_bytes() == b.path.read_bytes(), a.name
        assert a.path.stat().st_size < 200_000
        with Image.open(a.path) as image:
            assert image.format == "PNG"
            assert 300 <= image.height <= 1000


def test_a_figure_without_its_data_is_not_drawn_and_an_old_one_goes(reported: Reported, tmp_path: Path) -> None:
    now, main = outputs(reported)
    stale = tmp_path / "roc.png"
    stale.write_bytes(b"an old figure")
    without = dataclasses.replace(now, plots={k: v for k, v in now.plots.items() if k != "roc"}, curves={})
    drawn = {d.name for d in write_figures(tmp_path, without, main, MAIN)}
    assert drawn == {"pr", "calibration", "groups"}
    assert not stale.exists()


def test_curve_names_are_dvclive_tsv_files_without_the_epoch_counter(reported: Reported) -> None:
    names = curve_names(reported.paths)
    assert "train/loss" in names
    assert "epoch" not in names
    assert all((Paths(reported.paths.root).dvclive / "plots" / "metrics" / f"{n}.tsv").is_file() for n in names)
