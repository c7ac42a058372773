"""Working together: CODEOWNERS, the pull request template, the issue forms and the README's
branch-protection settings stay true to the repository they describe.

A renamed folder must not silently lose its owners, the pull request checklist must name every
kind of check the gate makes, and the required checks the README lists must be checks the
workflows report.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, run, tool

GITHUB = REPO / ".github"
CODEOWNERS = GITHUB / "CODEOWNERS"
PR_TEMPLATE = GITHUB / "pull_request_template.md"
ISSUE_TEMPLATES = GITHUB / "ISSUE_TEMPLATE"
WORKFLOWS = GITHUB / "workflows"
GATES = REPO / "src" / "gitml" / "gates"
STAGES = REPO / "src" / "gitml" / "stages"
README = REPO / "docs" / "deployment.md"
README_SECTION = "## Working together: owners, reviews, branch protection"

# Paths whose changes need their own owners' review, one per concern; the catch-all does not count.
# Lowering a fairness limit (conf/gates/) or changing the data schema (conf/data/) is a decision.
OWNED_BY_A_CONCERN = [
    "conf/data/",
    "data/raw/",
    "src/gitml/data/",
    "conf/model/",
    "conf/trainer/",
    "src/gitml/model/",
    "conf/gates/",
    "src/gitml/gates/",
    "deploy/",
    ".github/workflows/",
]
OWNER = re.compile(r"@[A-Za-z0-9][A-Za-z0-9-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?|[^@\s]+@[^@\s]+\.[^@\s]+")


# --- CODEOWNERS, matched the way GitHub matches it ---------------------------------------------


@dataclass(frozen=True)
class Rule:
    pattern: str
    owners: tuple[str, ...]
    line: int
    regex: re.Pattern[str]
    children_only: bool  # `dir/*`: files directly in dir, not in its subdirectories
    directories_only: bool  # `dir/`: a directory (and so everything in it)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A CODEOWNERS pattern as a regex over a path: .gitignore's rules, less `!`, `[...]` and `\\`."""
    anchored = pattern.startswith("/") or "/" in pattern.rstrip("/")
    body = pattern.strip("/")
    regex, i = "", 0
    while i < len(body):
        if body.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif body.startswith("/**", i) and i + 3 == len(body):
            regex, i = regex + "/.*", i + 3
        elif body.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif body[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif body[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(body[i]), i + 1
    return re.compile(("" if anchored else "(?:.*/)?") + regex)


def parse_codeowners(text: str) -> list[Rule]:
    rules = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not line:
            continue
        pattern, *owners = line.split()
        rules.append(
            Rule(
                pattern=pattern,
                owners=tuple(owners),
                line=number,
                regex=pattern_regex(pattern),
                children_only=pattern.endswith("/*"),
                directories_only=pattern.endswith("/"),
            )
        )
    return rules


def rule_matches(rule: Rule, path: str) -> bool:
    """Whether `rule` covers the file `path`: the file itself, or (but for `dir/*`) a folder above it."""
    if rule.children_only:
        return bool(rule.regex.fullmatch(path))
    parts = path.split("/")
    for end in range(1, len(parts) + 1):
        is_directory = end < len(parts)
        if rule.directories_only and not is_directory:
            continue
        if rule.regex.fullmatch("/".join(parts[:end])):
            return True
    return False


def owning_rule(rules: list[Rule], path: str) -> Rule | None:
    """The last rule that matches: the one GitHub applies."""
    matching = [rule for rule in rules if rule_matches(rule, path)]
    return matching[-1] if matching else None


@functools.cache
def repository_files() -> list[str]:
    """Committed files and new ones git does not ignore (what a fresh clone has, once committed)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [path for path in listed.stdout.splitlines() if (REPO / path).exists()]


@functools.cache
def rules() -> list[Rule]:
    return parse_codeowners(CODEOWNERS.read_text())


def test_the_matcher_follows_githubs_examples() -> None:
    # The examples of GitHub's CODEOWNERS documentation.
    def owns(pattern: str, path: str) -> bool:
        [rule] = parse_codeowners(f"{pattern} @octo-org/owners")
        return rule_matches(rule, path)

    assert owns("*", "any/file.txt")
    assert owns("*.js", "app/index.js")
    assert owns("*.js", "index.js")
    assert not owns("*.js", "index.ts")
    assert owns("*.go", "src/main.go")
    assert owns("/build/logs/", "build/logs/today.txt")
    assert owns("/build/logs/", "build/logs/deep/today.txt")
    assert not owns("/build/logs/", "src/build/logs/today.txt")
    assert owns("docs/*", "docs/getting-started.md")
    assert not owns("docs/*", "docs/build-app/troubleshooting.md")
    assert owns("apps/", "apps/web/index.js")
    assert owns("apps/", "src/apps/web/index.js")
    assert owns("/docs/", "docs/index.md")
    assert not owns("/docs/", "src/docs/index.md")
    assert owns("/scripts/", "scripts/build.sh")
    assert owns("**/logs", "build/logs/a.txt")
    assert owns("**/logs", "deeply/nested/logs/a.txt")
    assert owns("/apps/github", "apps/github/main.js")
    assert not owns("/apps/github", "apps/githubber/main.js")
    assert not owns("/conf/data/", "conf/data")  # a file of that name is not the folder
    # The last match wins.
    parsed = parse_codeowners("* @org/all\n/conf/gates/ @org/fairness\n")
    assert owning_rule(parsed, "conf/gates/default.yaml") == parsed[1]
    assert owning_rule(parsed, "conf/model/mlp.yaml") == parsed[0]


def test_codeowners_uses_only_what_github_understands() -> None:
    assert rules(), "no rules in .github/CODEOWNERS"
    assert CODEOWNERS.stat().st_size < 3 * 1024 * 1024, "GitHub ignores a CODEOWNERS file of 3 MB or more"
    for rule in rules():
        where = f"CODEOWNERS line {rule.line} ({rule.pattern})"
        assert not rule.pattern.startswith("!"), f"{where}: GitHub has no negation"
        assert not set(rule.pattern) & {"[", "\\"}, f"{where}: no character ranges or escapes"
        assert rule.owners, f"{where}: no owner"
        for owner in rule.owners:
            assert OWNER.fullmatch(owner), f"{where}: {owner!r} is not @user, @org/team or an e-mail address"


def test_every_codeowners_pattern_matches_a_path() -> None:
    # A pattern matching nothing is a folder renamed or removed: its owners no longer review it.
    files = repository_files()
    for rule in rules():
        assert any(rule_matches(rule, path) for path in files), (
            f"CODEOWNERS line {rule.line}: {rule.pattern} matches nothing in the repository"
        )


def test_each_concern_has_its_own_owners() -> None:
    catch_all = [rule for rule in rules() if rule.pattern in ("*", "/*", "**", "/**")]
    files = repository_files()
    for folder in OWNED_BY_A_CONCERN:
        inside = [path for path in files if path.startswith(folder)]
        assert inside, f"{folder} has no files: update OWNED_BY_A_CONCERN with the folder's new name"
        for path in inside:
            rule = owning_rule(rules(), path)
            assert rule not in [None, *catch_all], f"{path} has no owners of its own in CODEOWNERS"


# --- The pull request template --------------------------------------------------------------------


def gate_check_kinds() -> set[str]:
    """The `kind` of every Check that src/gitml/gates/ and the gate stage build, read from their source."""
    kinds = set()
    for module in [*GATES.glob("*.py"), STAGES / "gate.py"]:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Check":
                arguments = {k.arg: k.value for k in node.keywords}
                kind = arguments.get("kind", node.args[1] if len(node.args) > 1 else None)
                assert isinstance(kind, ast.Constant), f"{module.name}:{node.lineno}: a Check's kind is a literal"
                kinds.add(str(kind.value))
    return kinds


def deepchecks_suites() -> list[str]:
    """SUITES in src/gitml/stages/deepchecks.py, read without importing Deepchecks."""
    for node in ast.parse((STAGES / "deepchecks.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SUITES" for t in node.targets):
            suites = ast.literal_eval(node.value)
            assert isinstance(suites, tuple)
            return [str(s) for s in suites]
    raise AssertionError("src/gitml/stages/deepchecks.py has no SUITES")


def words(text: str) -> str:
    return " ".join(re.sub(r"[-_*`]", " ", text.lower()).split())


def checklist(markdown: str) -> list[str]:
    """The task-list items of a markdown file, continuation lines joined."""
    items: list[str] = []
    for line in markdown.splitlines():
        if re.match(r"\s*- \[[ xX]\] ", line):
            items.append(line.split("] ", 1)[1])
        elif items and line.startswith("      ") and line.strip():
            items[-1] += " " + line.strip()
    return items


def test_the_pr_checklist_names_every_kind_of_gate_check() -> None:
    kinds = gate_check_kinds()
    assert {"deepchecks", "fairness", "champion"} <= kinds, kinds  # the reader still finds them
    items = [words(item) for item in checklist(PR_TEMPLATE.read_text())]
    for kind in kinds:
        assert any(kind in item for item in items), f"the pull request checklist does not mention {kind} checks"
    deepchecks = " ".join(item for item in items if "deepchecks" in item)
    for suite in deepchecks_suites():
        assert words(suite) in deepchecks, f"the Deepchecks item does not name the {suite} suite"
    text = " ".join(items)
    for anchor in ("dvc.lock", "conf/gates/"):
        assert anchor in text, f"the checklist does not name {anchor}"


def test_the_checklist_reader_sees_a_missing_kind() -> None:
    items = [words(i) for i in checklist("- [ ] **Deepchecks**: ok\n- [ ] Fairness:\n      limits hold\nOther\n")]
    assert items == ["deepchecks : ok", "fairness: limits hold"]
    assert not any("champion" in item for item in items)


# --- The issue forms ------------------------------------------------------------------------------


def issue_forms() -> list[Path]:
    return sorted(p for p in ISSUE_TEMPLATES.glob("*.y*ml") if p.stem != "config")


def form(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ISSUE_TEMPLATES / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def field_ids(loaded: dict[str, Any]) -> list[str]:
    return [str(item["id"]) for item in loaded["body"] if "id" in item]


@pytest.mark.slow
def test_the_issue_forms_match_githubs_schemas() -> None:
    forms = issue_forms()
    assert {p.name for p in forms} >= {"data-change.yml", "drift-alert.yml"}
    checker = tool("check-jsonschema")
    result = run(checker, "--builtin-schema", "vendor.github-issue-forms", *forms)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(checker, "--builtin-schema", "vendor.github-issue-config", ISSUE_TEMPLATES / "config.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_schema_check_catches_a_bad_form(tmp_path: Path) -> None:
    bad = form("drift-alert.yml")
    bad["body"][1]["attributes"].pop("options")  # a dropdown without options
    target = tmp_path / "bad.yml"
    target.write_text(yaml.safe_dump(bad))
    assert run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-issue-forms", target).returncode


def test_the_drift_alert_carries_what_the_drift_workflow_reports() -> None:
    drift = form("drift-alert.yml")
    assert "drift" in drift["labels"]
    assert {"window", "features", "accuracy", "fairness", "report"} <= set(field_ids(drift))
    assert form("data-change.yml")["labels"], "data changes are labelled for the data owners"
    for path in issue_forms():
        ids = field_ids(form(path.name))
        assert len(ids) == len(set(ids)), f"{path.name}: field ids repeat"


# --- Branch protection in the README --------------------------------------------------------------


def reported_checks(workflow: Path) -> set[str]:
    """The check names a pull_request workflow reports: job names with the matrix expanded, and
    `caller / callee` for a job that calls a reusable workflow of this repository."""
    spec = yaml.safe_load(workflow.read_text())
    triggers = spec.get("on", spec.get(True))  # YAML 1.1 reads a bare `on` as True
    if "pull_request" not in (triggers if isinstance(triggers, dict | list) else [triggers]):
        return set()
    names = set()
    for job_id, job in spec["jobs"].items():
        if str(job.get("uses", "")).startswith("./"):
            callee = yaml.safe_load((REPO / job["uses"].split("@")[0]).read_text())
            caller = job.get("name", job_id)
            names |= {
                f"{caller} / {name}"
                for inner_id, inner in callee["jobs"].items()
                for name in job_names(inner_id, inner)
            }
        else:
            names |= job_names(job_id, job)
    return names


def job_names(job_id: str, job: dict[str, Any]) -> set[str]:
    name = str(job.get("name", job_id))
    matrix = {k: v for k, v in (job.get("strategy", {}).get("matrix") or {}).items() if isinstance(v, list)}
    if not matrix:
        return {name}
    names = set()
    for combination in itertools.product(*matrix.values()):
        expanded = name
        for key, value in zip(matrix, combination, strict=True):
            expanded = re.sub(r"\$\{\{\s*matrix\." + re.escape(key) + r"\s*\}\}", str(value), expanded)
        names.add(expanded)
    return names


def readme_section() -> str:
    text = README.read_text()
    assert README_SECTION in text, f"README.md has no section {README_SECTION!r}"
    return text.split(README_SECTION, 1)[1].split("\n## ", 1)[0]


def test_reported_checks_reads_matrices_and_reusable_workflows(tmp_path: Path) -> None:
    job = {"name": "test (py ${{ matrix.py }})", "strategy": {"matrix": {"py": ["3.11", "3.12"]}}}
    assert job_names("test", job) == {"test (py 3.11)", "test (py 3.12)"}
    assert job_names("lint", {}) == {"lint"}


def test_the_required_checks_in_the_readme_are_checks_the_workflows_report() -> None:
    [row] = [line for line in readme_section().splitlines() if line.startswith("| Require status checks")]
    required = re.findall(r"`([^`]+)`", row)
    assert required, row
    reported = set().union(*(reported_checks(w) for w in WORKFLOWS.glob("*.y*ml")))
    for check in required:
        assert check in reported, f"the README requires {check!r}; the workflows report {sorted(reported)}"


def test_the_readme_asks_for_code_owners_on_the_gates_and_the_data() -> None:
    section = readme_section()
    for setting in ("Require review from Code Owners", "Require approval for all outside collaborators"):
        assert setting in section, setting
    for folder in ("conf/gates/", "conf/data/"):
        assert f"`{folder}`" in section, folder
    assert "deploy/runners/README.md" in section
