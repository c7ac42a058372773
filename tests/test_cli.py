"""The `gitml` command line: user mistakes print a message and exit 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gitml.cli import main
from tests.conftest import TOY_KEY, toy_config, toy_rows, write_csv, write_toy_params

pytestmark = pytest.mark.usefixtures("toy_key")


def gitml(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--root", str(root), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_stages_run_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    write_toy_params(tmp_path)
    assert gitml(capsys, tmp_path, "ingest") == (0, "ingest: 200 rows read -> 200 clean, 0 quarantined (none)\n", "")
    code, out, _ = gitml(capsys, tmp_path, "split")
    assert code == 0
    assert out.startswith("split: train 120, val 40, test 40")
    code, out, _ = gitml(capsys, tmp_path, "summary")
    assert code == 0
    assert "200 rows read" in out
    assert "reference" in out


def test_quarantine_reasons_are_counted_in_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = toy_rows()
    rows[3][1] = "130"
    write_csv(tmp_path / "raw" / "toy.csv", rows)
    write_toy_params(tmp_path)
    assert (
        gitml(capsys, tmp_path, "ingest")[1]
        == "ingest: 200 rows read -> 199 clean, 1 quarantined (out_of_range:age 1)\n"
    )
    gitml(capsys, tmp_path, "split")
    assert "199 clean, 1 quarantined (0.50%: out_of_range:age 1)" in gitml(capsys, tmp_path, "summary")[1]


def test_bad_config_prints_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = toy_config()
    cfg["columns"]["age"]["role"] = "protcted"
    write_toy_params(tmp_path, data=cfg)
    code, _, err = gitml(capsys, tmp_path, "ingest")
    assert code == 1
    assert err.startswith("gitml ingest: error: params.yaml: data (from conf/data/): column 'age': role 'protcted'")
    assert "(did you mean 'protected'?)" in err


def test_missing_or_broken_params(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = gitml(capsys, tmp_path, "split")
    assert code == 1
    assert "params.yaml: not found" in err
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    assert "not valid YAML" in gitml(capsys, tmp_path, "ingest")[2]
    (tmp_path / "params.yaml").write_text("- a list\n")
    assert "expected a mapping of config sections" in gitml(capsys, tmp_path, "ingest")[2]
    (tmp_path / "params.yaml").write_text("split: {}\n")
    assert "has no `data` section" in gitml(capsys, tmp_path, "ingest")[2]


def test_summary_before_the_pipeline_ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = gitml(capsys, tmp_path, "summary")
    assert code == 1
    assert "the ingest stage has not run" in err


def test_params_compose_and_check(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "conf").symlink_to(repo / "conf")
    assert gitml(capsys, tmp_path, "params", "--check")[0] == 1  # no params.yaml yet
    assert gitml(capsys, tmp_path, "params")[0] == 0
    assert gitml(capsys, tmp_path, "params", "--check") == (0, "params: params.yaml matches conf/\n", "")
    (tmp_path / "params.yaml").write_text((tmp_path / "params.yaml").read_text().replace("seed: 42", "seed: 43"))
    code, _, err = gitml(capsys, tmp_path, "params", "--check")
    assert code == 1
    assert "differs from what conf/ composes into" in err


def test_a_real_process_shows_no_traceback(tmp_path: Path) -> None:
    """Through the installed console script, as dvc.yaml calls it."""
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows(), delimiter="\t")
    write_toy_params(tmp_path)
    script = Path(sys.executable).parent / "gitml"
    result = subprocess.run(
        [str(script), "--root", str(tmp_path), "ingest"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", **TOY_KEY},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("gitml ingest: error: raw/toy.csv: the header has one field")
    assert "looks '\\t'-separated" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
