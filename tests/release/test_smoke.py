"""`gitml smoke` against the real server (`gitml serve`, uvicorn) on a model the pipeline trained."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.release.smoke import read_probe
from tests.conftest import Trained, copy_repo, git
from tests.release.conftest import subcommand
from tests.serve.conftest import GIT_SHA, MODEL_VERSION, Server, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(trained_sample: Trained, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """A copy of the suite's trained sample (tests/conftest.py): the server writes its log beside it."""
    return copy_repo(trained_sample[0], tmp_path_factory.mktemp("smoke"))


@pytest.fixture(scope="module")
def server(bundle: Paths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"GITML_MODEL_VERSION": MODEL_VERSION, "GITML_GIT_SHA": GIT_SHA}
    running = Server(bundle.root, tmp_path_factory.mktemp("prediction-log"), env).start()
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()


def manifest_copy(bundle: Paths, tmp_path: Path, **probe: object) -> Path:
    """A copy of the bundle's manifest.json with keys of its probe replaced."""
    data = json.loads(bundle.manifest.read_text())
    data["probe"] = {**data["probe"], **probe}
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    return path


def test_the_deployed_server_passes(server: Server, bundle: Paths, capsys: pytest.CaptureFixture[str]) -> None:
    probe = read_probe(bundle.manifest)
    assert 0 <= probe.score <= 1
    message = subcommand(
        bundle.root, "smoke", server.url + "/", "--version", MODEL_VERSION, "--manifest", str(bundle.manifest)
    )
    assert message == f"smoke: {server.url}/ serves {MODEL_VERSION}: 3 checks passed"
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"smoke: {server.url}/ready answered 200 after ")
    assert lines[1] == f"smoke: {server.url}/version names model_version {MODEL_VERSION}"
    assert lines[2] == (
        f"smoke: {server.url}/predict scored the probe record {probe.score:.6f} (expected {probe.score:.6f})"
    )


def test_the_probe_is_read_from_the_version_tag(
    server: Server, bundle: Paths, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --manifest: models/manifest.json at the annotated tag model@V, as GTO registers it."""
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    shutil.copy(bundle.manifest, repo / "models" / "manifest.json")
    git(repo, "init", "--quiet")
    git(repo, "add", "models/manifest.json")
    git(repo, "commit", "--quiet", "-m", "model")
    git(repo, "tag", "-a", f"model@{MODEL_VERSION}", "-m", f"model {MODEL_VERSION}")
    (repo / "models" / "manifest.json").write_text("{}")  # the working tree is not what is read
    assert subcommand(repo, "smoke", server.url, "--version", MODEL_VERSION).endswith("3 checks passed")
    assert len(capsys.readouterr().out.splitlines()) == 3
    with pytest.raises(GitmlError, match=r"cannot read models/manifest.json at model@v9\.9\.9 .*--manifest FILE"):
        subcommand(repo, "smoke", server.url, "--version", "v9.9.9")


def test_another_version_fails_naming_both(server: Server, bundle: Paths) -> None:
    with pytest.raises(GitmlError) as caught:
        subcommand(bundle.root, "smoke", server.url, "--version", "v1.4.3", "--manifest", str(bundle.manifest))
    assert f"{server.url}/version: expected model_version v1.4.3, got '{MODEL_VERSION}'" in str(caught.value)


def test_a_different_probe_score_fails_naming_both_scores(server: Server, bundle: Paths, tmp_path: Path) -> None:
    served = read_probe(bundle.manifest).score
    recorded = served - 0.01 if served > 0.5 else served + 0.01
    manifest = manifest_copy(bundle, tmp_path, score=recorded)
    with pytest.raises(GitmlError) as caught:
        subcommand(bundle.root, "smoke", server.url, "--version", MODEL_VERSION, "--manifest", str(manifest))
    message = str(caught.value)
    assert message.startswith(f"{server.url}/predict: the probe record scored {served:.9f}, expected {recorded:.9f}")
    assert "difference 0.01 > 1e-06" in message
    # Within the tolerance it passes.
    close = manifest_copy(bundle, tmp_path, score=served + 4e-7)
    assert subcommand(bundle.root, "smoke", server.url, "--version", MODEL_VERSION, "--manifest", str(close)).endswith(
        "3 checks passed"
    )


def test_a_probe_record_the_server_refuses_fails_with_its_answer(server: Server, bundle: Paths, tmp_path: Path) -> None:
    record = {**read_probe(bundle.manifest).record, "not_a_column": 1}
    manifest = manifest_copy(bundle, tmp_path, record=record)
    with pytest.raises(
        GitmlError, match=rf"{server.url}/predict: expected 200 with a score .* got HTTP 422: .*not_a_column"
    ):
        subcommand(bundle.root, "smoke", server.url, "--version", MODEL_VERSION, "--manifest", str(manifest))


def test_a_server_that_is_not_up_fails_after_the_timeout_naming_ready(bundle: Paths) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(GitmlError) as caught:
        subcommand(
            bundle.root,
            "smoke",
            url,
            "--version",
            MODEL_VERSION,
            "--manifest",
            str(bundle.manifest),
            "--timeout",
            "1.5",
        )
    elapsed = time.monotonic() - started
    assert 1.5 <= elapsed < 4.0, elapsed
    message = str(caught.value)
    assert message.startswith(f"{url}/ready did not answer 200 within 1.5 s (")
    assert "the last answer: no answer (" in message
    assert "refused" in message.lower()
    tries = int(message.split("(", 1)[1].split(" tries")[0])
    assert 4 <= tries <= 5  # one every 0.5 s, the last at the deadline


def test_bad_arguments_are_refused(bundle: Paths, tmp_path: Path) -> None:
    with pytest.raises(GitmlError, match="not a model version"):
        subcommand(bundle.root, "smoke", "http://127.0.0.1:1", "--version", "1.4.2", "--manifest", str(bundle.manifest))
    with pytest.raises(GitmlError, match="is not an http"):
        subcommand(
            bundle.root, "smoke", "127.0.0.1:8000", "--version", MODEL_VERSION, "--manifest", str(bundle.manifest)
        )
    with pytest.raises(GitmlError, match=r"manifest\.json: not found; pass the model bundle's manifest\.json"):
        subcommand(
            bundle.root,
            "smoke",
            "http://127.0.0.1:1",
            "--version",
            MODEL_VERSION,
            "--manifest",
            str(tmp_path / "manifest.json"),
        )
