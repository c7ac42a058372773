"""The environment: the lock is complete and installed, and the serve extra stays torch-free."""

from __future__ import annotations

import hashlib
import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HEAVY = {"torch", "lightning", "pandas", "deepchecks", "dvc", "scikit-learn"}


def lock_pins(repo: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (repo / "requirements" / "lock.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"lock line is not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


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
