"""copier.yml: a project generated from this template under another package name runs its command
and passes its own tests; the workflows' `${{ }}` and every other `{{ }}` reach it untouched; an own
dataset is copied in, drafted and selected; `copier update` brings a later template commit into a
project without touching its data config and params; answers the template cannot apply are refused
with a message that names them.

The template is the repository's last commit (HEAD), committed again into a scratch repository:
commit a change to copier.yml or .copier/ before testing it."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from gitml.scratch import scratch_env
from tests.conftest import REPO, git, toy_rows, write_csv

COPIER_ONLY = ("copier.yml", ".copier", "tests/test_copier.py", "{{ _copier_conf.answers_file }}.jinja")
# A Jinja-looking expression: GitHub's ${{ }}, Prometheus' and Grafana's {{ }}.
EXPRESSION = re.compile(r"\$?\{\{.*?\}\}")
CONFLICT = re.compile(rb"^(<<<<<<<|>>>>>>>) ", re.M)
PACKAGE = "churnmodel"
# A dataset the template bundles, whichever conf/config.yaml selects.
BUNDLED = sorted(REPO.glob("conf/data/*.yaml"))[0].stem


def load_task() -> ModuleType:
    """copier.yml's task script, .copier/apply.py, as a module: its reading of the template."""
    spec = importlib.util.spec_from_file_location("copier_task", REPO / ".copier" / "apply.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TASK = load_task()
# The template's package (the one under src/), which a project names anew; whole words of it.
OLD: str = TASK.template_package()
word = TASK.word


def files(root: Path) -> dict[str, Path]:
    """Every file under `root` by its relative path, outside .git and the virtualenv."""
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not {".git", ".venv", "__pycache__"} & set(p.relative_to(root).parts)
    }


def snapshot(root: Path) -> dict[str, str]:
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files(root).items()}


def copier(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The copier command line, run by this interpreter: its tasks run on this interpreter too."""
    command = [sys.executable, "-m", "copier", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=scratch_env(), capture_output=True, text=True, check=False)


def generate(template: Path, commit: str, destination: Path, answers: Mapping[str, str]) -> None:
    data = [arg for key, value in answers.items() for arg in ("--data", f"{key}={value}")]
    args = ["copy", "--trust", "--quiet", "--defaults", "--vcs-ref", commit, *data, str(template), str(destination)]
    done = copier(*args, cwd=template)
    assert done.returncode == 0, done.stderr


def apply_args(answers: Mapping[str, str]) -> list[str]:
    """copier.yml's task command line for `answers` (the defaults filled in as copier fills them)."""
    full = {
        "project_name": "My model", "python_version": "3.11", "runner_labels": "ubuntu-latest",
        "dataset": "example", "dataset_file": "", "dataset_label": "", "dataset_positive": "", "dataset_name": "",
        **answers,
    }  # fmt: skip
    full.setdefault("dvc_remote_url", f"../../{full['package_name']}-dvc-remote")
    options = {
        "package": "package_name", "project-name": "project_name", "python": "python_version",
        "runner-labels": "runner_labels", "dvc-remote": "dvc_remote_url", "dataset": "dataset",
        "dataset-file": "dataset_file", "dataset-label": "dataset_label", "dataset-positive": "dataset_positive",
        "dataset-name": "dataset_name",
    }  # fmt: skip
    return [f"--{option}={full[key]}" for option, key in options.items()]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The repository's HEAD as the only commit of a scratch repository, and that commit."""
    root = tmp_path_factory.mktemp("template")
    archive = root.parent / "template.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", archive, "HEAD"], cwd=REPO, check=True)
    subprocess.run(["tar", "-xf", archive, "-C", root], check=True)
    archive.unlink()
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "template")
    return root, git(root, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def example_project(template: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled example under another package name, installed into its own virtualenv.

    The virtualenv has no packages of its own: a .pth file puts this environment's site-packages on
    its path (a venv's --system-site-packages are its base interpreter's, not a parent venv's), and
    the project goes in editable, without dependencies or downloads."""
    root, commit = template
    project = tmp_path_factory.mktemp("generated") / "churn-model"
    generate(root, commit, project, {"project_name": "Churn model", "package_name": PACKAGE})
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", project / ".venv"], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(project / ".venv")}))
    (site / "test-environment.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = ["-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-build-isolation", "-e", "."]
    done = subprocess.run([project / ".venv" / "bin" / "python", *install], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return project


def project_env(project: Path) -> dict[str, str]:
    """The project's virtualenv first on PATH; nothing of this test run's pytest or coverage."""
    env = {k: v for k, v in scratch_env().items() if not k.startswith(("PYTEST_", "COV_CORE_", "COVERAGE_"))}
    return {**env, "PATH": f"{project / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"}


# --- Generating: the bundled example under another name ---------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("copier")
def test_the_package_takes_the_new_name_everywhere(example_project: Path) -> None:
    assert (example_project / "src" / PACKAGE / "__init__.py").is_file()
    assert not (example_project / "src" / OLD).exists()
    leftovers = [
        name
        for name, path in files(example_project).items()
        if not name.startswith("data/raw/")
        and (content := TASK.text_of(path)) is not None
        and word(OLD).search(content)
    ]
    assert leftovers == [], f"{OLD} is still named in {leftovers}"
    pyproject = tomllib.loads((example_project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == PACKAGE
    assert pyproject["project"]["scripts"] == {PACKAGE: f"{PACKAGE}.cli:main"}
    assert (example_project / "README.md").read_text().splitlines()[0] == "# Churn model"
    for name in COPIER_ONLY:
        assert not (example_project / name).exists(), f"{name} is the template's own"


@pytest.mark.slow
@pytest.mark.xdist_group("copier")
def test_only_the_answers_file_is_rendered(template: tuple[Path, str], example_project: Path) -> None:
    root, _ = template
    generated = files(example_project)
    renamed = {word(OLD).sub(PACKAGE, name): path for name, path in files(root).items()}
    workflows = [name for name in renamed if name.startswith(".github/workflows/")]
    assert workflows
    for name in workflows:  # byte for byte, but for the package's name
        expected = word(OLD).sub(PACKAGE, renamed[name].read_text())
        assert generated[name].read_text() == expected, name
    seen = 0
    for name, path in renamed.items():
        content = TASK.text_of(path)
        if content is None or name.startswith(COPIER_ONLY) or name.startswith("data/raw/"):
            continue
        expressions = EXPRESSION.findall(word(OLD).sub(PACKAGE, content))
        assert EXPRESSION.findall(generated[name].read_text()) == expressions, name
        seen += len(expressions)
    assert seen > 100  # the workflows' ${{ }} and the alert rules' {{ }}
    answers = yaml.safe_load((example_project / ".copier-answers.yml").read_text())
    assert answers["package_name"] == PACKAGE
    assert answers["project_name"] == "Churn model"
    assert answers["_src_path"] == str(root)
    assert answers["_commit"]


@pytest.mark.slow
@pytest.mark.xdist_group("copier")
def test_the_generated_project_runs_and_passes_its_own_tests(example_project: Path, tmp_path: Path) -> None:
    env = project_env(example_project)
    command = example_project / ".venv" / "bin" / PACKAGE
    done = subprocess.run([command, "params", "--check"], cwd=example_project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    # The config, the docs (links, the command's subcommands, make targets, the command reference)
    # and the data schema.
    tests = ["tests/test_config.py", "tests/test_docs.py", "tests/test_cli_reference.py", "tests/data"]
    pytest_args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-cov", "--basetemp", str(tmp_path / "t")]
    python = example_project / ".venv" / "bin" / "python"
    done = subprocess.run([python, *pytest_args, *tests], cwd=example_project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


# --- Generating with an own dataset, and updating ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("copier")
def test_an_own_dataset_is_drafted_and_an_update_keeps_it(template: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = template
    source = write_csv(tmp_path / "downloads" / "churn.csv", toy_rows(300))
    # A template of its own, to commit a later version to.
    later = tmp_path / "template"
    git(tmp_path, "clone", "-q", str(root), str(later))
    first = git(later, "rev-parse", "HEAD")
    answers = {
        "project_name": "Churn", "package_name": "churn", "python_version": "3.12",
        "runner_labels": "self-hosted, gpu", "dvc_remote_url": "s3://my-bucket/churn",
        "dataset": "own", "dataset_file": str(source), "dataset_label": "churned", "dataset_name": "churn",
    }  # fmt: skip
    project = tmp_path / "churn"
    generate(later, first, project, answers)

    # The data is in, its schema drafted and selected, params.yaml composed from it.
    assert (project / "data" / "raw" / "churn.csv").read_bytes() == source.read_bytes()
    schema = yaml.safe_load((project / "conf" / "data" / "churn.yaml").read_text())
    assert schema["name"] == "churn"
    assert schema["raw"]["files"][0] == {"path": "data/raw/churn.csv"}  # then where `collect` writes
    assert schema["columns"]["churned"]["role"] == "label"
    defaults = yaml.safe_load((project / "conf" / "config.yaml").read_text())["defaults"]
    assert {"data": "churn"} in defaults
    assert yaml.safe_load((project / "params.yaml").read_text())["data"]["name"] == "churn"
    # Python, the training runner and the DVC remote.
    assert tomllib.loads((project / "pyproject.toml").read_text())["project"]["requires-python"] == ">=3.12,<3.13"
    workflows = project / ".github" / "workflows"
    test_job = yaml.safe_load((workflows / "test.yml").read_text())["jobs"]["test"]
    assert test_job["strategy"]["matrix"]["python-version"] == ["3.12.0", "3.12"]
    for workflow in workflows.glob("*.yml"):
        assert not re.search(r'python-version: "3\.11"', workflow.read_text()), workflow.name
    pr = yaml.safe_load((workflows / "pr.yml").read_text())["jobs"]["pipeline"]["with"]["runs-on"]
    assert '(vars.TRAINING_RUNNER || \'["self-hosted","gpu"]\') || \'"ubuntu-latest"\' }}' in pr  # forks: hosted
    retrain = yaml.safe_load((workflows / "retrain.yml").read_text())["jobs"]["retrain"]["runs-on"]
    assert retrain == '${{ fromJSON(vars.TRAINING_RUNNER || \'["self-hosted","gpu"]\') }}'
    assert re.search(r"(?m)^\s*url = s3://my-bucket/churn$", (project / ".dvc" / "config").read_text())

    # The task again, as copier runs it: nothing changes.
    before = snapshot(project)
    task = [sys.executable, str(later / ".copier" / "apply.py"), *apply_args(answers)]
    done = subprocess.run(task, cwd=project, env=scratch_env(), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert snapshot(project) == before

    # The user's project: committed, then their data config and params changed.
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "generated")
    for name in ("conf/data/churn.yaml", "params.yaml"):
        path = project / name
        path.write_text(path.read_text().replace("max_quarantined_fraction: 0.01", "max_quarantined_fraction: 0.05"))
    git(project, "commit", "-q", "-a", "-m", "our data config")
    ours = {name: (project / name).read_bytes() for name in ("conf/data/churn.yaml", "params.yaml", ".dvc/config")}

    # A later template: a changed workflow, a line added to the package, a new page naming the command.
    with (later / ".github" / "workflows" / "pr.yml").open("a") as fh:
        fh.write("# A later template's line.\n")
    with (later / "src" / OLD / "cli.py").open("a") as fh:
        fh.write(f"# Added later: {OLD}.cli\n")
    (later / "docs" / "later.md").write_text(f"# Later\n\n`{OLD} summary` prints what the pipeline made.\n")
    git(later, "add", "-A")
    git(later, "commit", "-q", "-m", "later")
    second = git(later, "rev-parse", "HEAD")
    source.unlink()  # the data file is long gone from where it was when the project was generated

    done = copier("update", "--trust", "--quiet", "--defaults", "--vcs-ref", second, cwd=project)
    assert done.returncode == 0, done.stderr
    assert (project / ".github" / "workflows" / "pr.yml").read_text().endswith("# A later template's line.\n")
    assert (project / "src" / "churn" / "cli.py").read_text().endswith("# Added later: churn.cli\n")
    assert "`churn summary`" in (project / "docs" / "later.md").read_text()
    assert not (project / "src" / OLD).exists()
    assert '\'["self-hosted","gpu"]\'' in (project / ".github" / "workflows" / "pr.yml").read_text()
    assert {name: (project / name).read_bytes() for name in ours} == ours
    assert (project / "data" / "raw" / "churn.csv").is_file()
    merged = files(project)
    assert not [name for name in merged if name.endswith(".rej")]
    assert not [name for name, path in merged.items() if CONFLICT.search(path.read_bytes())]
    changed = {line.split()[-1] for line in git(project, "status", "--porcelain").splitlines()}
    assert changed == {".copier-answers.yml", ".github/workflows/pr.yml", "src/churn/cli.py", "docs/later.md"}


# --- Answers the template cannot apply ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("copier")
def test_copier_asks_again_for_a_package_name_that_is_not_one(template: tuple[Path, str], tmp_path: Path) -> None:
    root, commit = template
    args = ["copy", "--trust", "--quiet", "--defaults", "--vcs-ref", commit, "--data", "package_name=Churn_Model"]
    done = copier(*args, root, tmp_path / "project", cwd=root)
    assert done.returncode != 0
    assert "Validation error for question 'package_name'" in done.stderr
    assert "'Churn_Model': use lower-case letters and digits" in done.stderr
    assert not (tmp_path / "project").exists()


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"package_name": "pandas"}, "package_name 'pandas' is the import name of a dependency"),
        ({"package_name": "json"}, "package_name 'json' is a module of Python's standard library"),
        ({"package_name": "class"}, "package_name 'class' is a Python keyword"),
        ({"package_name": "conf"}, "package_name 'conf' is a folder or file at the project's root"),
        ({"package_name": "make"}, "package_name 'make' is a command the project runs"),
        ({"package_name": "my_model"}, "package_name 'my_model': use lower-case letters and digits"),
        ({"runner_labels": "self hosted"}, "runner_labels 'self hosted': give runner labels separated by commas"),
        ({"python_version": "3.10"}, "python_version '3.10': give a minor release of Python 3.11 or later"),
        (
            {"dataset": "own", "dataset_file": "churn.csv", "dataset_label": "churned", "dataset_name": "churn"},
            "dataset_file 'churn.csv': give your data file's absolute path",
        ),
        (
            {"dataset": "own", "dataset_file": "/no/churn.csv", "dataset_label": "churned", "dataset_name": "churn"},
            "dataset_file '/no/churn.csv': no such file",
        ),
        (
            {"dataset": "own", "dataset_file": "/no/churn.csv", "dataset_label": "", "dataset_name": "churn"},
            "dataset_label is empty: name the column to predict",
        ),
        (
            {"dataset": "own", "dataset_file": "/no/churn.csv", "dataset_label": "churned", "dataset_name": BUNDLED},
            f"dataset_name {BUNDLED!r} is a bundled dataset's: choose another name",
        ),
    ],
)
def test_the_task_refuses_answers_it_cannot_apply(tmp_path: Path, answers: dict[str, str], message: str) -> None:
    """Checked before anything is changed: the folder the task runs in stays empty."""
    task = [sys.executable, str(REPO / ".copier" / "apply.py"), *apply_args({"package_name": PACKAGE, **answers})]
    done = subprocess.run(task, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith(f"copier task: {message}"), done.stderr
    assert list(tmp_path.iterdir()) == []
