"""Apply a generated project's answers (copier.yml) to the tree copier rendered from this template.

Copier copies every file of the template as it is, except the answers file; this script, copier.yml's
task, does everything the answers change, in the folder copier rendered into (its working directory):

  package name     src/<template's package>/ moves to src/<package>/, and the package's name, as a
                   whole word, becomes the new one in every file the template has: imports,
                   pyproject.toml, the command in the Makefile, dvc.yaml, workflows, docs, tests and
                   deploy/ (data/raw/ is data and stays as it is). Environment variables (GITML_*),
                   metric names (gitml_*) and class names keep theirs. docs/cli.md and, when
                   generating, params.yaml are written again by the project's own code: their long
                   lines wrap differently with a name of another length.
  project name     README.md's title and pyproject.toml's description
  Python version   requires-python, ruff's and mypy's targets, the workflows' python-version and the
                   serving image's base
  runner labels    the training job's runs-on where the TRAINING_RUNNER variable is unset (pr.yml for
                   this repository's branches, retrain.yml); a fork's pull request stays on the hosted one
  DVC remote       the url of .dvc/config's remote, while it is still the template's
  dataset          own: the file copied into data/raw/, its schema drafted into conf/data/<name>.yaml
                   with `<package> draft-schema`, conf/config.yaml selecting it, params.yaml composed;
                   where the package cannot run yet, the commands that do it are printed instead

Copier runs it on copy and on update alike: an update renders the old and the new template version
into temporary folders and the new one over the project, runs this script in all three, and merges
the difference, so every step depends only on the template's files and the answers. What the user
owns (params.yaml, .dvc/config, their dataset's files) is changed only while it is still as the
template made it, and only when generating. A second run leaves the tree as the first left it.
Standard library only: it runs on the Python copier runs on (3.10 or later).
"""

from __future__ import annotations

import argparse
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parents[1]
# What the template has that a project does not (copier.yml's _exclude).
TEMPLATE_ONLY = {".git", ".copier", "copier.yml", "copier.yaml", "tests/test_copier.py"}
PACKAGE_NAME = re.compile(r"^[a-z][a-z0-9]*$")
DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
RUNNER_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
PYTHON_VERSION = re.compile(r"^3\.(\d+)$")
HOSTED = '"ubuntu-latest"'
# Import names that are not the name of the distribution that installs them.
IMPORT_NAMES = {"yaml", "sklearn", "pkg_resources", "google", "attr", "dateutil"}
# Commands the Makefile, the workflows and the docs run: the package's command would shadow them in
# the activated virtualenv.
COMMANDS = {"make", "git", "python", "python3", "pip", "bash", "sh", "docker", "kubectl", "kustomize", "helm", "gh"}
COMMANDS |= {"cml", "act", "tar", "curl", "jq", "openssl", "promtool", "wrk", "argocd", "nvidia-smi"}


class AnswerError(Exception):
    """An answer this template cannot apply: the message names it and says what to give instead."""


# --- The template -----------------------------------------------------------------------------------


def template_package() -> str:
    """The template's import package: the one folder under src/ with an __init__.py."""
    found = sorted(p.name for p in (TEMPLATE / "src").iterdir() if (p / "__init__.py").is_file())
    if len(found) != 1:
        raise SystemExit(f"copier task: expected one package under {TEMPLATE / 'src'}, found {found}")
    return found[0]


def template_files() -> list[str]:
    """Every file of the template that a project gets, relative to the template's root."""
    files = []
    for folder, dirs, names in os.walk(TEMPLATE):
        here = Path(folder).relative_to(TEMPLATE)
        dirs[:] = sorted(d for d in dirs if (here / d).as_posix() not in TEMPLATE_ONLY and d != "__pycache__")
        for name in sorted(names):
            path = (here / name).as_posix()
            if path not in TEMPLATE_ONLY and not name.endswith((".jinja", ".pyc", ".pyo")):
                files.append(path)
    return files


def word(name: str) -> re.Pattern[str]:
    """`name` as a whole word: in `gitml params`, `src/gitml/`, `gitml.cli`, `gitml-staging`; not in
    `GITML_VENV`, `gitml_ready` or `GitmlError`."""
    return re.compile(rf"(?<!\w){re.escape(name)}(?!\w)")


def text_of(path: Path) -> str | None:
    """A file's text, or None for a binary file."""
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def write(path: Path, text: str) -> None:
    """Write `text` where it differs from the file's (as bytes: line endings stay as they are)."""
    if path.read_bytes() != text.encode("utf-8"):
        path.write_bytes(text.encode("utf-8"))


# --- The answers ------------------------------------------------------------------------------------


def check_package(name: str) -> None:
    if not PACKAGE_NAME.match(name):
        raise AnswerError(
            f"package_name {name!r}: use lower-case letters and digits, starting with a letter (e.g. churnmodel); "
            "it also names the command, the image, the Kubernetes resources and their namespaces, where '_' and "
            "upper case are not allowed"
        )
    lock = (TEMPLATE / "requirements" / "lock.txt").read_text(encoding="utf-8")
    locked = {re.sub(r"[-.]", "_", line.split("==")[0].strip().lower()) for line in lock.splitlines() if "==" in line}
    project = {p.name.lower() for p in TEMPLATE.iterdir()} | {p.stem.lower() for p in TEMPLATE.iterdir()}
    clash = (
        "a Python keyword" if keyword.iskeyword(name) or keyword.issoftkeyword(name)
        else "a module of Python's standard library" if name in sys.stdlib_module_names | {"test"}
        else "the import name of a dependency" if name in locked | IMPORT_NAMES
        else "a command the project runs" if name in COMMANDS
        else "a folder or file at the project's root" if name in project
        else None
    )  # fmt: skip
    if clash:
        raise AnswerError(f"package_name {name!r} is {clash}: choose another name, e.g. {name}model")


def python_minor(version: str) -> int:
    match = PYTHON_VERSION.match(version)
    if match is None or int(match[1]) < 11:
        raise AnswerError(f"python_version {version!r}: give a minor release of Python 3.11 or later, e.g. 3.11")
    return int(match[1])


def runs_on(labels: str) -> str:
    """`self-hosted, gpu` -> `["self-hosted","gpu"]`, `ubuntu-latest` -> `"ubuntu-latest"`: runs-on as JSON."""
    names = [label.strip() for label in labels.split(",") if label.strip()]
    if not names or not all(RUNNER_LABEL.match(label) for label in names):
        raise AnswerError(
            f"runner_labels {labels!r}: give runner labels separated by commas, e.g. ubuntu-latest or "
            "self-hosted, gpu (letters, digits, '.', '_' and '-')"
        )
    return json.dumps(names[0] if len(names) == 1 else names, separators=(",", ":"))


class Dataset:
    """The answers about the project's own data, and where its files go."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.source = Path(args.dataset_file).expanduser()
        self.name: str = args.dataset_name
        self.label: str = args.dataset_label
        self.positive: str = args.dataset_positive
        if not args.dataset_file or not self.source.is_absolute():
            raise AnswerError(f"dataset_file {args.dataset_file!r}: give your data file's absolute path")
        if not DATASET_NAME.match(self.name):
            raise AnswerError(
                f"dataset_name {self.name!r}: use lower-case letters, digits and '_', starting with a letter"
            )
        if not self.label.strip():
            raise AnswerError("dataset_label is empty: name the column to predict")
        self.raw = Path("data/raw") / self.source.name
        self.schema = Path("conf/data") / f"{self.name}.yaml"

    def check_new(self) -> None:
        """When generating: the file is there, and neither its name nor the dataset's is one the
        template bundles. (On an update the project's own files are never replaced.)"""
        if (TEMPLATE / self.schema).is_file():
            raise AnswerError(f"dataset_name {self.name!r} is a bundled dataset's: choose another name")
        if (TEMPLATE / self.raw).exists():
            raise AnswerError(f"{self.raw} is a bundled file: rename your data file, then generate again")
        if not self.raw.exists() and not self.source.is_file():
            raise AnswerError(f"dataset_file {str(self.source)!r}: no such file")

    def draft_args(self) -> list[str]:
        positive = ["--positive", self.positive] if self.positive else []
        names = ["--label", self.label, "--name", self.name, *positive, "--out", self.schema.as_posix()]
        return ["draft-schema", self.raw.as_posix(), *names]


# --- The steps --------------------------------------------------------------------------------------


def rename_package(old: str, new: str) -> None:
    """Move the template's files out of src/<old>/ into src/<new>/, and rename the package in each."""
    if old == new:
        return
    pattern = word(old)
    emptied = set()
    for before in template_files():
        after = Path("/".join(new if part == old else part for part in before.split("/")))
        if after != Path(before) and Path(before).is_file():
            after.parent.mkdir(parents=True, exist_ok=True)
            Path(before).replace(after)
            emptied.add(Path(before).parent)
        if before.startswith("data/raw/") or not after.is_file() or after.is_symlink():
            continue
        text = text_of(after)
        if text is not None:
            write(after, pattern.sub(new, text))
    for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        shutil.rmtree(folder / "__pycache__", ignore_errors=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def refresh_cli_reference(minor: int) -> str | None:
    """docs/cli.md, written from the command's parser by docs/cli_reference.py, wraps lines that name
    the command: written again after a rename, by this Python where it is the project's release
    (argparse's help differs between releases); else the step to run, if any."""
    script = Path("docs/cli_reference.py")
    if not script.is_file():
        return None
    if sys.version_info[:2] != (3, minor):
        return f"write docs/cli.md for the new name: `.venv/bin/python {script}`"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"copier task: {script} failed:\n{done.stdout}{done.stderr}")
    return None


def set_project_name(project: str) -> None:
    """README.md's title and pyproject.toml's description name the project."""
    readme = Path("README.md")
    if readme.is_file():
        write(readme, re.sub(r"\A# .*", lambda _: f"# {project}", readme.read_text(encoding="utf-8"), count=1))
    pyproject = Path("pyproject.toml")
    description = json.dumps(f"{project}: one tabular model, run the GitOps way.", ensure_ascii=False)
    text = pyproject.read_text(encoding="utf-8")
    write(pyproject, re.sub(r"(?m)^description = .*$", lambda _: f"description = {description}", text, count=1))


def set_python(new: int) -> str | None:
    """requires-python, the tools' targets, the workflows' python-version and the serving image's base
    go to Python 3.<new>; the step this leaves to the user, if any."""
    pyproject = Path("pyproject.toml")
    text = pyproject.read_text(encoding="utf-8")
    declared = re.search(r'(?m)^requires-python = ">=3\.(\d+),<3\.(\d+)"$', text)
    if declared is None:
        raise SystemExit('copier task: pyproject.toml has no line requires-python = ">=3.N,<3.M" to set')
    old, upper = int(declared[1]), int(declared[2])
    if old == new:
        return None
    minors = {old: new, upper: new + 1}
    # 3.11 and 3.11.0 (test.yml's lowest release), and the upper bound in comments; not v3.11, a tag.
    release = re.compile(r"(?<![\w.])3\.(\d+)(?!\d)")
    for workflow in sorted(Path(".github/workflows").glob("*.y*ml")):
        text_before = workflow.read_text(encoding="utf-8")
        write(workflow, release.sub(lambda m: f"3.{minors.get(int(m[1]), int(m[1]))}", text_before))
    # python:3.11.14-slim-trixie -> python:3.12-slim-trixie: the patch release was the old minor's.
    base = re.compile(rf"\bpython:3\.{old}(?:\.\d+)?-")
    for dockerfile in sorted(Path("deploy").rglob("Dockerfile")):
        write(dockerfile, base.sub(f"python:3.{new}-", dockerfile.read_text(encoding="utf-8")))
    # pyproject.toml last: it is what says which version the tree is at.
    text = text.replace(declared[0], f'requires-python = ">=3.{new},<3.{new + 1}"')
    text = re.sub(r'(?m)^target-version = "py3\d+"$', f'target-version = "py3{new}"', text)
    text = re.sub(r'(?m)^python_version = "3\.\d+"$', f'python_version = "3.{new}"', text)
    write(pyproject, text)
    return (
        f"requirements/lock.txt was resolved on Python 3.{old}: resolve it on 3.{new}, `make lock PYTHON=python3.{new}`"
    )


def set_runner(labels: str) -> None:
    """The training job's runs-on where the TRAINING_RUNNER variable is unset (labels: JSON)."""
    if labels == HOSTED:
        return
    pr = Path(".github/workflows/pr.yml")
    if pr.is_file():
        # A fork's pull request stays on the hosted runner: only this repository's branches get the labels.
        text = pr.read_text(encoding="utf-8").replace(
            f"github.repository && vars.TRAINING_RUNNER || '{HOSTED}'",
            f"github.repository && (vars.TRAINING_RUNNER || '{labels}') || '{HOSTED}'",
        )
        text = re.sub(
            rf"(?m)^(#\s+variable TRAINING_RUNNER\s+runs-on as JSON; default ){HOSTED},.*$",
            lambda m: f"{m[1]}{labels} (a fork's pull request: {HOSTED})",
            text,
        )
        write(pr, text)
    retrain = Path(".github/workflows/retrain.yml")
    if retrain.is_file():
        # Its runner, and whether the job is on a GPU runner (its driver check).
        text = retrain.read_text(encoding="utf-8").replace(
            f"vars.TRAINING_RUNNER || '{HOSTED}'", f"vars.TRAINING_RUNNER || '{labels}'"
        )
        write(retrain, text.replace("contains(vars.TRAINING_RUNNER,", f"contains(vars.TRAINING_RUNNER || '{labels}',"))


def set_remote(url: str, old: str, new: str) -> None:
    """The url of .dvc/config's remote, while it is the template's."""
    config = Path(".dvc/config")
    if not config.is_file():
        return
    setting = re.compile(r"(?m)^([ \t]*url[ \t]*=[ \t]*)(.*?)[ \t]*$")
    template = (TEMPLATE / ".dvc" / "config").read_text(encoding="utf-8")
    template_urls = {word(old).sub(new, m[2]) for m in setting.finditer(template)}
    text = config.read_text(encoding="utf-8")
    write(config, setting.sub(lambda m: f"{m[1]}{url}" if m[2] in template_urls else m[0], text))


def package_python(package: str) -> str | None:
    """A Python that runs the project's package from src/ with the pipeline's dependencies: the
    project's .venv, or the one copier runs on."""
    probe = f"import sys; sys.path.insert(0, 'src'); import {package}.cli, {package}.data.draft, hydra"
    for python in (Path(".venv/bin/python"), Path(sys.executable)):
        if python.is_file() and subprocess.run([python, "-c", probe], capture_output=True, check=False).returncode == 0:
            return str(python)
    return None


def run_package(python: str, package: str, args: list[str]) -> None:
    boot = f"import sys; sys.path.insert(0, 'src'); from {package}.cli import main; sys.exit(main(sys.argv[1:]))"
    if subprocess.run([python, "-c", boot, *args], check=False).returncode:
        raise AnswerError(f"`{package} {' '.join(args)}` failed: its message is above")


def select_dataset(data: Dataset) -> None:
    """conf/config.yaml selects the project's own dataset (its card and settings follow `data`)."""
    config = Path("conf/config.yaml")
    text = config.read_text(encoding="utf-8")
    write(config, re.sub(r"(?m)^(\s*-\s*data:\s*)[\w.-]+", lambda m: f"{m[1]}{data.name}", text, count=1))


def first_files(data: Dataset | None, package: str, old: str) -> list[str]:
    """When generating: the own dataset's file copied in and its schema drafted, and params.yaml
    composed from conf/ by the project's own command (a new dataset is a new section; a longer or
    shorter package name rewraps long lines). The steps left to the user where the package cannot
    run yet (copier's Python without the pipeline's dependencies)."""
    steps = []
    if data is not None:
        if not data.raw.exists():
            data.raw.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(data.source, data.raw)
        hooks = Path(".pre-commit-config.yaml")
        hook = re.search(r"--maxkb=(\d+)", hooks.read_text(encoding="utf-8") if hooks.is_file() else "")
        limit = int(hook[1]) if hook else 1024
        if data.raw.stat().st_size > limit * 1024:
            steps.append(f"{data.raw} is over the {limit} KB the pre-commit hook lets into git: `dvc add {data.raw}`")
    draft = data.draft_args() if data is not None and not data.schema.exists() else None
    template_params = word(old).sub(package, (TEMPLATE / "params.yaml").read_text(encoding="utf-8"))
    pristine = Path("params.yaml").read_text(encoding="utf-8") == template_params
    compose = pristine and (data is not None or package != old)
    if draft is None and not compose:
        return steps
    python = package_python(package)
    if python is None:
        steps.append("install the project: `make install`")
        if draft is not None:
            steps.append(f"draft the schema: `{' '.join([f'.venv/bin/{package}', *draft])}`")
        return [*steps, "compose params.yaml: `make params`"] if compose else steps
    if draft is not None:
        run_package(python, package, draft)
    if compose:
        run_package(python, package, ["params"])
    if data is not None:
        steps.append(f"review {data.schema} (types, ranges, categories, roles, PII), then `make params`")
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Apply a generated project's answers (copier.yml's task).")
    for option in ("package", "project-name", "python", "runner-labels", "dvc-remote"):
        parser.add_argument(f"--{option}", required=True)
    parser.add_argument("--dataset", choices=["example", "own"], required=True)
    for option in ("dataset-file", "dataset-label", "dataset-positive", "dataset-name"):
        parser.add_argument(f"--{option}", default="")
    args = parser.parse_args(argv)
    # Copier tells its tasks: "copy" when generating, "update" in each of the three trees of an update.
    generating = os.environ.get("COPIER_OPERATION", "copy") == "copy"
    old = template_package()
    try:
        check_package(args.package)
        minor = python_minor(args.python)
        labels = runs_on(args.runner_labels)
        data = Dataset(args) if args.dataset == "own" else None
        if data is not None and generating:
            data.check_new()
        rename_package(old, args.package)
        set_project_name(args.project_name)
        steps = [step for step in [set_python(minor)] if step]
        if args.package != old:
            steps += [step for step in [refresh_cli_reference(minor)] if step]
        set_runner(labels)
        set_remote(args.dvc_remote, old, args.package)
        if data is not None:
            select_dataset(data)
        if generating:
            steps += first_files(data, args.package, old)
    except AnswerError as exc:
        print(f"copier task: {exc}", file=sys.stderr)
        return 1
    if generating and steps:
        print("\nNext steps:", *(f"  - {step}" for step in steps), sep="\n", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
