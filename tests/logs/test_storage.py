"""Storage locations: folders, file://, s3:// (moto), fsspec schemes, the DVC remote, and the
errors that say what is wrong and what to install; the `logs` extra itself."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gitml.errors import GitmlError
from gitml.logs.storage import DVC_FOLDER, dvc_remote, open_storage
from gitml.serve.config import ServeConfig
from tests.conftest import REPO, params_section
from tests.logs.conftest import S3


def test_a_folder_is_local_and_relative_to_the_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = open_storage("logs/shipped", tmp_path)
    assert storage.fs.type_name == "local"
    assert storage.base == str(tmp_path / "logs" / "shipped")
    assert storage.path("predictions", "x.jsonl") == f"{tmp_path}/logs/shipped/predictions/x.jsonl"
    assert not storage.atomic_writes  # a local file is written under a temporary name, then moved
    monkeypatch.chdir(tmp_path)
    assert open_storage(Path("here")).base == str(tmp_path / "here")  # no root: the current directory
    assert open_storage(f"file://{tmp_path}/there").base == f"{tmp_path}/there"


def test_s3_goes_to_the_endpoint_in_the_environment(moto: S3, bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = open_storage(f"s3://{bucket}/some/prefix/")
    assert storage.fs.type_name == "s3"
    assert storage.base == f"{bucket}/some/prefix"
    assert storage.atomic_writes  # an object appears whole: written in place
    with storage.fs.open_output_stream(storage.path("a.jsonl")) as out:
        out.write(b"{}\n")
    assert moto.keys(bucket) == {"some/prefix/a.jsonl": b"{}\n"}
    # The S3-specific variable wins over the general one, as in the AWS SDKs.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto.endpoint)
    assert open_storage(f"s3://{bucket}").fs.get_file_info(f"{bucket}/some/prefix/a.jsonl").size == 3


def test_s3_without_a_bucket_is_named() -> None:
    with pytest.raises(GitmlError, match="name the bucket"):
        open_storage("s3:///prefix")


def test_other_schemes_go_through_fsspec(tmp_path: Path) -> None:
    storage = open_storage(f"memory://gitml-{tmp_path.name}/a")
    assert storage.fs.type_name == "py::fsspec+memory"
    assert not storage.atomic_writes


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchscheme://bucket/logs", "no storage handles the scheme 'nosuchscheme'"),
        ("abfs://container/logs", "the 'abfs' scheme needs a package that is not installed: .*adlfs"),
    ],
    ids=["unknown", "not-installed"],
)
def test_a_scheme_without_an_implementation_is_named_with_what_to_install(url: str, message: str) -> None:
    with pytest.raises(GitmlError, match=message) as info:
        open_storage(url)
    assert url in str(info.value)


def dvc_config(root: Path, text: str, local: str | None = None) -> None:
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc" / "config").write_text(text)
    if local is not None:
        (root / ".dvc" / "config.local").write_text(local)


def test_dvc_remote_is_the_default_remote_plus_a_folder(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    dvc_config(
        root,
        "[core]\n    remote = local\n['remote \"local\"']\n    # beside the clone\n    url = ../../store\n"
        "['remote \"cloud\"']\n    url = s3://bucket/gitml/\n",
    )
    assert dvc_remote(root) == f"{tmp_path / 'store'}/{DVC_FOLDER}"  # relative to .dvc/, as DVC reads it
    assert dvc_remote(root, "cloud") == f"s3://bucket/gitml/{DVC_FOLDER}"
    assert open_storage("dvc-remote", root).base == str(tmp_path / "store" / DVC_FOLDER)
    assert open_storage("dvc://", root).base == str(tmp_path / "store" / DVC_FOLDER)
    assert open_storage("dvc://local", root).base == str(tmp_path / "store" / DVC_FOLDER)


def test_dvc_config_local_overrides_the_remote(tmp_path: Path) -> None:
    dvc_config(tmp_path, "[core]\n    remote = a\n['remote \"a\"']\n    url = /x\n", "['remote \"a\"']\n    url = /y\n")
    assert dvc_remote(tmp_path) == f"/y/{DVC_FOLDER}"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "not found; is .* a DVC repository"),
        ("[core]\n    analytics = false\n", "DVC has no default remote"),
        ("[core]\n    remote = gone\n", "no remote named 'gone'"),
    ],
)
def test_dvc_remote_mistakes_are_named(tmp_path: Path, config: str | None, message: str) -> None:
    if config is not None:
        dvc_config(tmp_path, config)
    with pytest.raises(GitmlError, match=message):
        open_storage("dvc-remote", tmp_path)


def test_the_storage_setting_is_a_url_or_a_folder_under_the_root(tmp_path: Path) -> None:
    def storage(value: str) -> str:
        serve = params_section("serve")
        serve["prediction_log"]["storage"] = value
        return ServeConfig.from_config(serve, "params.yaml", tmp_path).log.storage

    assert storage("logs/shipped") == str(tmp_path / "logs" / "shipped")
    assert storage("/abs/logs") == "/abs/logs"
    assert storage("s3://bucket/gitml-logs") == "s3://bucket/gitml-logs"
    assert storage("dvc-remote") == "dvc-remote"
    assert params_section("serve")["prediction_log"]["storage"] == "logs/shipped"  # conf/serve/default.yaml
    serve = params_section("serve")
    serve["prediction_log"]["storage"] = ""
    with pytest.raises(GitmlError, match="storage must be text"):
        ServeConfig.from_config(serve, "params.yaml", tmp_path)


def test_the_logs_extra_is_pyarrow_and_fsspec_and_no_pandas() -> None:
    from tests.test_packaging import HEAVY, closure

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    logs = project["optional-dependencies"]["logs"]
    assert sorted(r.split(">")[0].split("=")[0].split("<")[0] for r in logs) == ["fsspec", "pyarrow"]
    pulled = closure(project["dependencies"] + project["optional-dependencies"]["serve"] + logs)
    assert not (pulled & HEAVY), f"the serving image (serve + logs) would pull {sorted(pulled & HEAVY)}"
