"""`gitml serve` refuses to start on a broken setup with a message that says what to do."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gitml.cli import main
from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.serve.config import ServeConfig
from tests.conftest import copy_repo, params_section


def serve_section(**changes: Any) -> dict[str, Any]:
    """The repository's `serve` section of params.yaml (conf/serve/), with keys replaced;
    prediction_log's keys replace those of the section's."""
    serve = params_section("serve")
    log = {**serve["prediction_log"], **changes.pop("prediction_log", {})}
    return {**serve, **changes, "prediction_log": log}


@pytest.mark.parametrize(
    ("missing", "stage"), [("model.onnx", "export"), ("preprocess.json", "train"), ("threshold.json", "evaluate")]
)
def test_a_missing_model_file_names_the_stage_that_writes_it(
    served: Paths, tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str, stage: str
) -> None:
    paths = copy_repo(served, tmp_path)
    (paths.models / missing).unlink()
    assert main(["--root", str(paths.root), "serve"]) == 1
    err = capsys.readouterr().err
    assert f"{missing}: not found; the {stage} stage writes it" in err
    assert "Traceback" not in err


def vouch(paths: Paths, name: str) -> None:
    """Record a file's new sha256 in the manifest, as if the bundle had been made so."""
    manifest = json.loads(paths.manifest.read_text())
    manifest["files"][name] = hashlib.sha256((paths.models / name).read_bytes()).hexdigest()
    paths.manifest.write_text(json.dumps(manifest))


def test_a_damaged_model_or_threshold_is_reported(
    served: Paths, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = copy_repo(served, tmp_path)
    paths.onnx.write_bytes(b"not a model")
    assert main(["--root", str(paths.root), "serve"]) == 1
    assert "model.onnx: its sha256" in capsys.readouterr().err  # the manifest does not vouch for it
    vouch(paths, "model.onnx")
    assert main(["--root", str(paths.root), "serve"]) == 1
    assert "model.onnx: ONNX Runtime cannot load it" in capsys.readouterr().err
    paths = copy_repo(served, tmp_path)
    paths.threshold.write_text("{}", encoding="utf-8")
    vouch(paths, "threshold.json")
    assert main(["--root", str(paths.root), "serve"]) == 1
    assert "threshold.json: threshold None is not a probability" in capsys.readouterr().err


def test_an_unwritable_log_directory_is_refused(
    served: Paths, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    assert main(["--root", str(served.root), "serve", "--log-dir", str(blocker / "logs")]) == 1
    err = capsys.readouterr().err
    assert "prediction log directory" in err
    assert "--log-dir" in err


@pytest.mark.slow
def test_a_taken_port_is_reported(served: Paths, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "gitml.cli",
                "--root",
                str(served.root),
                "serve",
                "--port",
                str(port),
                "--log-dir",
                str(tmp_path / "log"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 1
    assert f"could not listen on 127.0.0.1:{port}" in done.stderr


@pytest.mark.parametrize(
    ("serve", "message"),
    [
        ({"max_batch": 0}, "max_batch must be a whole number >= 1"),
        ({"port": 70000}, "port must be at most 65535"),
        ({"prediction_log": {"flush_seconds": 0}}, "flush_seconds must be a number of seconds above 0"),
        ({"prediction_log": {"dirr": "x"}}, "unknown key 'dirr' (did you mean 'dir'?)"),
        ({"max_bacth": 10}, "did you mean 'max_batch'?"),
    ],
)
def test_serve_config_mistakes_are_named(tmp_path: Path, serve: dict[str, Any], message: str) -> None:
    with pytest.raises(GitmlError, match=r"params\.yaml: serve") as error:
        ServeConfig.from_config(serve_section(**serve), "params.yaml", tmp_path)
    assert message in str(error.value)


def test_the_serve_config_is_conf_serve(tmp_path: Path) -> None:
    serve = serve_section()
    config = ServeConfig.from_config(serve, "params.yaml", tmp_path)
    log = serve["prediction_log"]
    assert (config.host, config.port, config.max_batch) == (serve["host"], serve["port"], serve["max_batch"])
    assert (config.max_body_bytes, config.live_window) == (serve["max_body_bytes"], serve["live_window"])
    assert config.log.directory == tmp_path / log["dir"]
    assert (config.log.flush_seconds, config.log.rotate_bytes) == (log["flush_seconds"], log["rotate_bytes"])
    assert (config.log.rotate_seconds, config.log.max_pending) == (log["rotate_seconds"], log["max_pending"])


@pytest.mark.parametrize(("key", "value"), [("host", None), ("host", ""), ("dir", 3)])
def test_a_host_or_log_dir_that_is_not_text_is_named(tmp_path: Path, key: str, value: object) -> None:
    serve = serve_section(**({key: value} if key == "host" else {"prediction_log": {key: value}}))
    with pytest.raises(GitmlError, match=rf"{key} must be text"):
        ServeConfig.from_config(serve, "params.yaml", tmp_path)


def test_log_dir_is_relative_to_the_root_and_flags_override(tmp_path: Path) -> None:
    config = ServeConfig.from_config(serve_section(prediction_log={"dir": "logs/p"}), "params.yaml", tmp_path)
    assert config.log.directory == tmp_path / "logs" / "p"
    changed = config.with_overrides(host="0.0.0.0", port=9000, log_dir=Path("/var/log/x"))
    assert (changed.host, changed.port, changed.log.directory) == ("0.0.0.0", 9000, Path("/var/log/x"))
    with pytest.raises(GitmlError, match=r"--port 70000"):
        config.with_overrides(port=70000)
