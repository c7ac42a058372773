"""Shared fixtures and helpers: a small dataset of our own making (the "toy" schema), the real
repository and its params sections, the programs tests run (linters, git), and a scratch repository
with the real config and a sample of the real splits, trained once."""

from __future__ import annotations

import copy
import csv
import fcntl
import functools
import importlib.util
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gitml.paths import Paths
from gitml.scratch import scratch_env

REPO = Path(__file__).resolve().parents[1]

CITIES = ["Berlin", "Hamburg", "Munich", "Lyon", "Paris", "Nice"]
TOY_COLUMNS = ["customer_id", "age", "city", "balance", "segment", "churned"]

# Every rule the schema language has, on six columns: an identifier to pseudonymise, a banded
# protected attribute, a categorical generalised into groups, a top-coded number, and the label.
TOY_CONFIG: dict[str, Any] = {
    "name": "toy",
    "raw": {
        "files": [{"path": "raw/toy.csv"}],
        "delimiter": ",",
        "header": True,
        "missing_values": ["?", "NA"],
    },
    "quality": {"max_quarantined_fraction": 0.2, "duplicates": "quarantine", "pii_max_matches": 0},
    "pseudonym_key_env": "TOY_PSEUDONYM_KEY",
    "columns": {
        "customer_id": {"dtype": "string", "role": "identifier", "pii": "pseudonymize"},
        "age": {"dtype": "integer", "min": 18, "max": 100, "role": "protected", "bands": [30, 50], "pii": "keep"},
        "city": {
            "dtype": "categorical",
            "categories": CITIES,
            "nullable": True,
            "role": "feature",
            "pii": "generalize",
            "generalize": {"groups": {"Germany": ["Berlin", "Hamburg", "Munich"], "France": ["Lyon", "Paris", "Nice"]}},
        },
        "balance": {
            "dtype": "float",
            "min": 0,
            "role": "feature",
            "pii": "generalize",
            "generalize": {"top_code": 5000},
        },
        "segment": {"dtype": "categorical", "categories": ["retail", "business"], "role": "feature", "pii": "keep"},
        "churned": {"dtype": "categorical", "categories": ["no", "yes"], "role": "label", "positive": "yes"},
    },
}

TOY_KEY = {"TOY_PSEUDONYM_KEY": "a-test-key-that-is-long-enough"}


def toy_config(**changes: Any) -> dict[str, Any]:
    """A deep copy of the toy dataset config, with top-level keys replaced."""
    cfg = copy.deepcopy(TOY_CONFIG)
    cfg.update(changes)
    return cfg


def toy_rows(n: int = 200, seed: int = 0) -> list[list[str]]:
    """`n` valid, distinct toy records as strings."""
    rng = random.Random(seed)
    return [
        [
            f"C{i:05d}",
            str(rng.randint(18, 100)),
            rng.choice([*CITIES, "?"]),
            f"{rng.uniform(0, 9000):.2f}",
            rng.choice(["retail", "business"]),
            rng.choice(["no", "no", "yes"]),
        ]
        for i in range(n)
    ]


def write_csv(path: Path, rows: list[list[str]], header: list[str] | None = TOY_COLUMNS, delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        if header is not None:
            writer.writerow(header)
        writer.writerows(rows)
    return path


# The split section that goes with the toy config in a params.yaml.
TOY_SPLIT: dict[str, Any] = {
    "seed": 1,
    "fractions": {"train": 0.6, "val": 0.2, "test": 0.2},
    "stratify": ["churned"],
    "reference_rows": 5000,
}


def write_toy_params(root: Path, **sections: object) -> None:
    """root/params.yaml with the toy `data` and `split` sections, and `sections` added or replaced."""
    import yaml

    params: dict[str, object] = {"data": toy_config(), "split": copy.deepcopy(TOY_SPLIT), **sections}
    (root / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture
def toy_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy dataset's pseudonymisation key in the environment, where the stages read it."""
    for name, value in TOY_KEY.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def toy_root(tmp_path: Path) -> Path:
    """A directory holding raw/toy.csv with 200 valid rows."""
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    return tmp_path


@pytest.fixture
def toy_paths(toy_root: Path) -> Paths:
    return Paths(toy_root)


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (benchmarks/ is scripts, not a package: it goes on sys.path)."""
    folder = REPO / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", folder / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest end-to-end group first, the other groups that read the shared reproduction of the
    pipeline spread through the rest, each group in its own order.

    `make test` hands tests to its workers in this order (`--dist loadgroup --no-loadscope-reorder`):
    one worker starts the pull request and release stories at once and reproduces the pipeline for
    them (tests/e2e/conftest.py), while the others run other tests; by the time they reach the drift
    story and test_pipeline.py, the reproduction is there to read, and the last third evens out the end.
    """

    def group(item: pytest.Item) -> str | None:
        marker = item.get_closest_marker("xdist_group")
        return str(marker.args[0]) if marker else None

    def members(name: str) -> list[pytest.Item]:
        return [item for item in items if group(item) == name]

    readers = ("workflows", "drift-workflow", "pipeline")
    others = [item for item in items if group(item) not in readers]
    third = len(others) // 3
    items[:] = [
        *members("workflows"),
        *others[:third],
        *members("drift-workflow"),
        *others[third : 2 * third],
        *members("pipeline"),
        *others[2 * third :],
    ]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@functools.cache
def _repo_params() -> dict[str, Any]:
    from gitml.config import load_params

    return load_params(REPO / "params.yaml")


def params_section(name: str, **changes: Any) -> dict[str, Any]:
    """A deep copy of one section of the repository's params.yaml (`gates.x` names a subsection),
    with top-level keys replaced."""
    value: Any = _repo_params()
    for part in name.split("."):
        value = value[part]
    assert isinstance(value, dict)
    return {**copy.deepcopy(value), **changes}


# --- Programs run in a subprocess -------------------------------------------------------------------


def tool(name: str) -> Path:
    """A linter installed with the dev extra: beside this interpreter first, then on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return beside
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed beside {sys.executable} nor on PATH: run `make test`", pytrace=False)
    return Path(found)


def run(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """A command's exit status and output; a failure is the caller's to assert on."""
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False)


def git(cwd: Path, *args: str) -> str:
    """git in `cwd` with a scratch identity and no commit signing; its stripped output. Fails the test on an error."""
    done = subprocess.run(["git", *args], cwd=cwd, env=scratch_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


# --- A sample of the bundled data, with the real Hydra config --------------------------------------

# CPU, a few epochs: enough to learn something, quick enough for the suite.
TINY = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=1",
    "train.early_stopping.patience=2",
]
SAMPLE = {"train": 3000, "val": 1000, "test": 1000}


def run_toy_pipeline(repo: Path, root: Path, rows: int, *overrides: str) -> Paths:
    """The toy dataset through ingest, split, train, export and evaluate in `root` (TINY, then
    `overrides`): the stages on a schema that is not Adult's. Needs the `toy_key` fixture."""
    import yaml

    from gitml.cli import main
    from gitml.config import compose_params

    shutil.copytree(repo / "conf", root / "conf")
    (root / "conf" / "data" / "toy.yaml").write_text(yaml.safe_dump(toy_config(), sort_keys=False))
    write_csv(root / "raw" / "toy.csv", toy_rows(rows))
    paths = Paths(root)
    toy = ["data=toy", "split.stratify=[churned]", "split.reference_rows=100", "evaluate.min_group_size=20"]
    compose_params(paths.conf, paths.params, [*TINY, *toy, *overrides])
    for command in ("ingest", "split", "train", "export", "evaluate"):
        assert main(["--root", str(root), command]) == 0, command
    return paths


def make_repo(repo: Path, root: Path, overrides: list[str]) -> Paths:
    """conf/ and data/raw from the repository; params.yaml composed with `overrides`; small splits."""
    import pandas as pd

    from gitml.config import compose_params, load_params
    from gitml.stages import ingest, split

    shutil.copytree(repo / "conf", root / "conf")
    (root / "data").mkdir(parents=True)
    (root / "data" / "raw").symlink_to(repo / "data" / "raw")
    paths = Paths(root)
    compose_params(paths.conf, paths.params, overrides)
    params = load_params(paths.params)
    ingest.run(params, paths)
    split.run(params, paths)
    for name, rows in SAMPLE.items():
        frame = pd.read_parquet(paths.split_file(name))
        # At most SAMPLE's rows: the dataset conf/ selects may be smaller than that already.
        frame = frame.sample(n=min(rows, len(frame)), random_state=0).sort_index()
        frame.to_parquet(paths.split_file(name), index=False)
    return paths


def copy_repo(paths: Paths, parent: Path) -> Paths:
    """A private copy of a scratch repository (the raw data stays a link), under `parent`."""
    parent.mkdir(parents=True, exist_ok=True)
    root = parent / f"repo{len(list(parent.iterdir()))}"
    shutil.copytree(paths.root, root, symlinks=True)
    return Paths(root)


def once_per_run(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder `name`, made by `build(folder)` once per test run, not once per pytest-xdist worker.

    The first worker to ask builds it in the run's temporary folder, which every worker shares;
    the others wait for it and read it. Read, never changed: a test that writes copies it first.
    """
    shared = factory.getbasetemp()
    if shared.name.startswith("popen-gw"):
        shared = shared.parent  # the run's folder, above each worker's own
    folder = shared / name
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / f"{name}.done").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed half-way left
            folder.mkdir()
            build(folder)
            (shared / f"{name}.done").touch()
    return folder


@pytest.fixture(scope="session")
def data_sample(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Paths:
    """The dataset conf/ selects (whichever it is), ingested and split once per test run, each split
    cut to at most SAMPLE's rows; each test copies the result with `fresh_copy`."""
    return Paths(once_per_run(tmp_path_factory, "sample", lambda root: make_repo(repo, root, TINY)))


@pytest.fixture
def fresh_copy(data_sample: Paths, tmp_path: Path) -> Callable[..., Paths]:
    """A private copy of the sample repository, optionally re-composed with more overrides."""
    from gitml.config import compose_params

    def copy(*overrides: str) -> Paths:
        paths = copy_repo(data_sample, tmp_path)
        if overrides:
            compose_params(paths.conf, paths.params, [*TINY, *overrides])
        return paths

    return copy


Trained = tuple[Paths, dict[str, dict[str, Any]]]


def train_export_evaluate(paths: Paths) -> dict[str, dict[str, Any]]:
    """The train, export and evaluate stages run on `paths` with its params.yaml; their reports."""
    from gitml.config import load_params
    from gitml.stages import evaluate, export, train

    params = load_params(paths.params)
    return {stage.__name__.rsplit(".", 1)[1]: stage.run(params, paths) for stage in (train, export, evaluate)}


@pytest.fixture(scope="session")
def trained_sample(data_sample: Paths, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """train -> export -> evaluate on the sample, once for the whole test run: the model bundle and
    the stages' reports. Tests that write into it take a `copy_repo` of it first."""

    def build(root: Path) -> None:
        paths = copy_repo(data_sample, root)
        (root / "reports.json").write_text(json.dumps({"root": paths.root.name, **train_export_evaluate(paths)}))

    root = once_per_run(tmp_path_factory, "trained", build)
    reports = json.loads((root / "reports.json").read_text())
    return Paths(root / reports.pop("root")), reports


def unshifted_source(paths: Paths) -> Path:
    """Rows of the drift reference's population to replay as unshifted traffic: the test split, or,
    where it holds fewer rows than a drift check's smallest window (drift.min_rows; a small
    dataset's 150 test rows), the reference itself. Thousands of draws from a handful of rows are
    those rows' own mix, which differs from the reference by their sampling noise, and a drift
    check of thousands of rows rightly sees it; drawn from the reference they are its population."""
    import pandas as pd

    from gitml.config import load_params

    smallest = load_params(paths.params)["drift"]["min_rows"]
    test = paths.split_file("test")
    return test if len(pd.read_parquet(test)) >= smallest else paths.split_file("reference")
