"""The `gitml` command line: user mistakes print a message and exit 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import TOY_KEY, toy_config, toy_rows, write_csv


def gitml(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitml.cli", "--root", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def write_params(root: Path, **sections: object) -> None:
    params: dict[str, object] = {
        "data": toy_config(),
        "split": {"seed": 1, "fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
    }
    params.update(sections)
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def test_stages_run_from_the_command_line(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    write_params(tmp_path)
    ingest = gitml(tmp_path, "ingest", env=TOY_KEY)
    assert ingest.returncode == 0, ingest.stderr
    assert ingest.stdout.strip() == "ingest: 200 rows read -> 200 clean, 0 quarantined (none)"
    split = gitml(tmp_path, "split")
    assert split.returncode == 0, split.stderr
    assert split.stdout.startswith("split: train 120, val 40, test 40")
    summary = gitml(tmp_path, "summary")
    assert "200 rows read" in summary.stdout
    assert "reference" in summary.stdout


def test_bad_data_prints_a_message_not_a_traceback(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows(), delimiter="\t")
    write_params(tmp_path)
    result = gitml(tmp_path, "ingest", env=TOY_KEY)
    assert result.returncode == 1
    assert result.stderr.startswith("gitml ingest: error: raw/toy.csv: the header has one field")
    assert "Traceback" not in result.stderr


def test_bad_config_prints_a_message(tmp_path: Path) -> None:
    cfg = toy_config()
    cfg["columns"]["age"]["role"] = "protcted"
    write_params(tmp_path, data=cfg)
    result = gitml(tmp_path, "ingest", env=TOY_KEY)
    assert result.returncode == 1
    assert (
        "role 'protcted' is not one of feature, label, protected, identifier (did you mean 'protected'?)"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_missing_or_broken_params(tmp_path: Path) -> None:
    missing = gitml(tmp_path, "split")
    assert missing.returncode == 1
    assert "params.yaml: not found" in missing.stderr
    (tmp_path / "params.yaml").write_text("data: [unclosed\n")
    broken = gitml(tmp_path, "ingest")
    assert broken.returncode == 1
    assert "not valid YAML" in broken.stderr
    (tmp_path / "params.yaml").write_text("split: {}\n")
    no_data = gitml(tmp_path, "ingest")
    assert "has no `data` section" in no_data.stderr


def test_summary_before_the_pipeline_ran(tmp_path: Path) -> None:
    result = gitml(tmp_path, "summary")
    assert result.returncode == 1
    assert "the ingest stage has not run" in result.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "gitml"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    for command in ("params", "ingest", "split", "summary"):
        assert command in result.stdout
