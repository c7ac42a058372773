"""The GTO side of a release, on real git repositories and the real `gto`: what a merge releases
(`gitml release-plan`), the tag message (`gitml release-notes`) and stage assignment (`gitml assign`).

The repositories hold the real dvc.lock, params.yaml, reports/metrics.json, models/manifest.json and
Kubernetes overlays of this checkout, with their hashes and values changed per version; versions are
registered with the `gto` command as release.yml registers them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import gitml.cli
from gitml.baseline import stage_baseline
from gitml.errors import GitmlError
from gitml.release import lineage, registry
from gitml.release.overlay import NOTHING, set_overlay_version
from gitml.release.registry import read_registry
from tests.conftest import REPO, git, tool

# The model bundle's files: a change of any of their md5s in dvc.lock is a new version (the spec's list).
BUNDLE = ("models/model.onnx", "models/preprocess.json", "models/threshold.json", "models/manifest.json")
DIGEST = "registry.example.com/gitml@sha256:" + "ab" * 32
PR = 12
IDENTITY = {"user.name": "release test", "user.email": "release@gitml.invalid", "commit.gpgsign": "false",
            "tag.gpgsign": "false"}  # fmt: skip


# --- Running things -------------------------------------------------------------------------------


def call(root: Path, *argv: str) -> tuple[int, str]:
    """`gitml ARGV` on root through gitml's command line: (exit status, what it printed)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = gitml.cli.main(["--root", str(root), *argv])
    return status, (out.getvalue() + err.getvalue()).strip()


def ok(root: Path, *argv: str) -> str:
    status, text = call(root, *argv)
    assert status == 0, text
    return text


def gto(root: Path, *args: str) -> str:
    done = subprocess.run([str(tool("gto")), *args], cwd=root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"gto {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def tags(root: Path) -> set[str]:
    return set(git(root, "tag", "--list").split())


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


# --- Repositories ---------------------------------------------------------------------------------


def fake_hash(seed: str, n: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


def changed_leaf(params: dict[str, Any]) -> str:
    """The dotted key of the first number params.yaml holds outside its dataset section."""
    flat = lineage.flatten(params)
    return next(k for k, v in flat.items() if not k.startswith("data.") and type(v) in (int, float))


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        data = data[part]
    data[last] = value


def write_state(root: Path, seed: int, model: bool = True, ckpt_only: bool = False) -> dict[str, Any]:
    """The committed files of one version, from this checkout's, with hashes and values changed by `seed`.

    model=False keeps the model bundle's md5s in dvc.lock; ckpt_only changes just models/model.ckpt's."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())
    if (root / "dvc.lock").is_file():
        lock = yaml.safe_load((root / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if (model and not ckpt_only and out["path"] in BUNDLE) or (
                ckpt_only and out["path"] == "models/model.ckpt"
            ):
                out["md5"] = fake_hash(f"{seed}{out['path']}", 32)
    (root / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    key = changed_leaf(params)
    value = lineage.flatten(params)[key] + seed
    set_dotted(params, key, value)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    metrics = json.loads((REPO / "reports" / "metrics.json").read_text())
    metrics["test"] = {k: round(v * (1 - seed / 100), 6) for k, v in metrics["test"].items()}
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "metrics.json").write_text(json.dumps(metrics, indent=2))

    manifest = json.loads((REPO / "models" / "manifest.json").read_text())
    manifest["data"] = {split: fake_hash(f"{seed}{split}", 64) for split in manifest["data"]}
    (root / "models").mkdir(exist_ok=True)
    (root / "models" / "manifest.json").write_text(json.dumps(manifest, indent=2))

    checks = [{"name": f"check/{i}", "passed": True, "warning": i == 0} for i in range(5 + seed)]
    gate = {"verdict": "pass", "reason": f"all {len(checks)} checks passed (1 with a warning)", "champion": {},
            "checks": checks, "counts": {"checks": len(checks), "failed": 0, "warnings": 1}}  # fmt: skip
    (root / "reports" / "gate.json").write_text(json.dumps(gate))
    return {"key": key, "value": value, "metrics": metrics, "manifest": manifest, "gate": gate}


def commit(root: Path, message: str) -> str:
    git(root, "add", "dvc.lock", "params.yaml", "reports/metrics.json", "models/manifest.json", "deploy")
    git(root, "commit", "-qm", message)
    return git(root, "rev-parse", "HEAD")


def build_unreleased(root: Path) -> dict[str, Any]:
    """A repository with one pipeline run committed, both overlays naming v0.0.0 (nothing released, as
    the template ships them), an origin, no tags."""
    origin = root.parent / f"{root.name}-origin.git"
    git(root.parent, "init", "-q", "--bare", str(origin))
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for key, value in IDENTITY.items():
        git(root, "config", key, value)
    git(root, "remote", "add", "origin", str(origin))
    shutil.copytree(REPO / "deploy" / "k8s", root / "deploy" / "k8s")
    for stage in ("staging", "prod"):
        set_overlay_version(root, stage, NOTHING)
    state = write_state(root, 1)
    state["commit"] = commit(root, "first model")
    return state


def release(root: Path, version: str, *options: str) -> str:
    """What release.yml does: the tag message, then `gto register` with it."""
    out = root.parent / f"{root.name}-release-{version}"
    ok(root, "release-notes", version, "--out", str(out), *options)
    gto(root, "register", "model", "HEAD", "--version", version, "--message", (out / "tag-message.txt").read_text())
    return (out / "tag-message.txt").read_text()


def build_released(root: Path) -> dict[str, Any]:
    """v0.1.0 registered at the first commit, v0.2.0 (a new model, params and metrics) at the second, then
    a commit that leaves the model as v0.2.0 has it."""
    first = build_unreleased(root)
    first["message"] = release(root, "v0.1.0", "--bump", "minor")
    second = write_state(root, 2)
    second["commit"] = commit(root, "second model")
    second["message"] = release(root, "v0.2.0", "--image", DIGEST, "--pull-request", str(PR), "--bump", "minor")
    write_state(root, 2, model=False)
    (root / "README.md").write_text("docs\n")
    git(root, "add", "README.md")
    git(root, "commit", "-qm", "docs only")
    return {"v0.1.0": first, "v0.2.0": second}


def clone(source: Path, parent: Path) -> Path:
    """A private copy of a test repository, with its own origin."""
    parent.mkdir(parents=True, exist_ok=True)
    root = parent / f"repo{len(list(parent.iterdir()))}"
    shutil.copytree(source, root)
    origin = parent / f"{root.name}-origin.git"
    git(parent, "init", "-q", "--bare", str(origin))
    git(root, "remote", "set-url", "origin", str(origin))
    return root


@pytest.fixture(scope="module")
def unreleased(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("unreleased") / "repo"
    return root, build_unreleased(root)


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("released") / "repo"
    return root, build_released(root)


@pytest.fixture
def copy_of(tmp_path: Path):
    return lambda source: clone(source, tmp_path)


# --- Bumps and versions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "bump"),
    [([], "minor"), (["bug", "release:patch"], "patch"), (["release:major", "release:major"], "major")],
)
def test_the_bump_comes_from_the_release_label(labels: list[str], bump: str) -> None:
    assert registry.bump_from_labels(labels) == bump


def test_two_release_labels_are_an_error_naming_both() -> None:
    with pytest.raises(GitmlError, match=r"release:major and release:patch"):
        registry.bump_from_labels(["release:patch", "documentation", "release:major"])
    with pytest.raises(GitmlError, match=r"release:huge"):
        registry.bump_from_labels(["release:huge"])


@pytest.mark.parametrize(
    ("previous", "bump", "expected"),
    [(None, "minor", "v0.1.0"), (None, "patch", "v0.0.1"), (None, "major", "v1.0.0"),
     ("v1.2.3", "patch", "v1.2.4"), ("v1.2.3", "minor", "v1.3.0"), ("v1.2.3", "major", "v2.0.0")],
)  # fmt: skip
def test_next_version(previous: str | None, bump: str, expected: str) -> None:
    assert registry.next_version(previous, bump) == expected


# --- release-plan ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "version"), [("", "v0.1.0"), ("release:patch", "v0.0.1"), ("release:major", "v1.0.0")]
)
def test_the_first_release(unreleased: tuple[Path, dict[str, Any]], tmp_path: Path, labels: str, version: str) -> None:
    root, _ = unreleased
    out = tmp_path / "github-output"
    line = ok(root, "release-plan", "--labels", labels, "--pull-request", "7", "--github-output", str(out))
    got = outputs(out)
    assert got["release"] == "true"
    assert got["version"] == version
    assert got["previous"] == ""
    assert "no version of model is registered" in got["reason"]
    assert version in line
    assert "#7" in line
    # The overlays name v0.0.0, as the template ships them: no release deploys production until a
    # promotion pull request names a version.
    assert got["prod-version"] == "v0.0.0"
    assert got["promote"] == "false"


def test_conflicting_labels_fail_the_plan(unreleased: tuple[Path, dict[str, Any]]) -> None:
    status, text = call(unreleased[0], "release-plan", "--labels", "release:minor,release:patch")
    assert status == 1
    assert "release:minor and release:patch" in text


def test_the_merged_pull_request_from_githubs_answer(unreleased: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, _ = unreleased
    head = git(root, "rev-parse", "HEAD")
    pulls = [
        {"number": 3, "merged_at": None, "labels": [{"name": "release:major"}]},
        {"number": 9, "merged_at": "2026-01-01T00:00:00Z", "merge_commit_sha": head,
         "labels": [{"name": "release:patch"}, {"name": "docs"}]},
    ]  # fmt: skip
    (tmp_path / "pulls.json").write_text(json.dumps(pulls))
    out = tmp_path / "github-output"
    ok(root, "release-plan", "--pulls", str(tmp_path / "pulls.json"), "--github-output", str(out))
    got = outputs(out)
    assert (got["pull-request"], got["bump"], got["version"]) == ("9", "patch", "v0.0.1")


def test_a_head_without_the_models_outputs_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    git(root, "add", "dvc.lock")
    git(root, "commit", "-qm", "no pipeline run yet")
    status, text = call(root, "release-plan")
    assert status == 1
    for path in BUNDLE:
        assert path in text


def test_no_model_change_releases_nothing(released: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, versions = released
    out = tmp_path / "github-output"
    line = ok(root, "release-plan", "--labels", "release:major", "--github-output", str(out))
    got = outputs(out)
    assert got["release"] == "false"
    assert got["version"] == ""
    assert got["previous"] == "v0.2.0"
    assert "equals v0.2.0" in got["reason"]
    assert versions["v0.2.0"]["commit"][:7] in got["reason"]
    assert line.startswith("release-plan: no release")


def test_a_checkpoint_alone_is_no_new_model(released: tuple[Path, dict[str, Any]], copy_of) -> None:
    root = copy_of(released[0])
    write_state(root, 2, model=False, ckpt_only=True)
    commit(root, "retrained: same bundle")
    assert registry.plan_release(root, []).release is False


@pytest.mark.parametrize(
    ("labels", "version"), [("", "v0.3.0"), ("release:patch", "v0.2.1"), ("release:major", "v1.0.0")]
)
def test_a_model_change_is_the_next_version(
    released: tuple[Path, dict[str, Any]], copy_of, tmp_path: Path, labels: str, version: str
) -> None:
    root = copy_of(released[0])
    write_state(root, 3)
    commit(root, "third model")
    out = tmp_path / "github-output"
    ok(root, "release-plan", "--labels", labels, "--github-output", str(out))
    got = outputs(out)
    assert (got["release"], got["version"], got["previous"]) == ("true", version, "v0.2.0")
    for path in BUNDLE:
        assert Path(path).name in got["reason"]


def test_promote_when_the_prod_overlay_names_another_version(released: tuple[Path, dict[str, Any]], copy_of) -> None:
    root = copy_of(released[0])
    plan = registry.plan_release(root, [])
    assert (plan.promote, plan.prod_version) == (False, NOTHING)  # no promotion yet: nothing to deploy
    set_overlay_version(root, "prod", "v0.1.0")
    commit(root, "promote v0.1.0")
    plan = registry.plan_release(root, [])
    assert (plan.promote, plan.prod_version) == (True, "v0.1.0")  # GTO has nothing in prod yet
    ok(root, "assign", "prod", "v0.1.0")
    assert registry.plan_release(root, []).promote is False
    set_overlay_version(root, "prod", "v0.2.0")
    commit(root, "promote v0.2.0")
    plan = registry.plan_release(root, [])
    assert (plan.promote, plan.prod_version) == (True, "v0.2.0")
    assert "v0.1.0" in plan.prod_reason


def test_a_staging_overlay_gto_does_not_have_there_is_deployed_again(
    released: tuple[Path, dict[str, Any]], copy_of, tmp_path: Path
) -> None:
    """The staging overlay names a version GTO does not have in staging (its deployment failed, or a pull
    request set it): a merge that releases nothing deploys staging again; once GTO agrees, nothing."""
    root = copy_of(released[0])
    set_overlay_version(root, "staging", "v0.2.0")
    commit(root, "staging runs v0.2.0")
    out = tmp_path / "github-output"
    line = ok(root, "release-plan", "--github-output", str(out))
    got = outputs(out)
    assert (got["release"], got["redeploy-staging"], got["staging-version"]) == ("false", "true", "v0.2.0")
    assert "staging: deploy v0.2.0" in line
    ok(root, "assign", "staging", "v0.2.0")
    plan = registry.plan_release(root, [])
    assert (plan.staging.deploy, plan.staging.version) == (False, "v0.2.0")
    set_overlay_version(root, "staging", "v0.7.0")
    commit(root, "a version nobody registered")
    status, text = call(root, "release-plan")
    assert status == 1
    assert "staging overlay" in text
    assert "v0.7.0" in text


def test_an_unregistered_prod_version_is_an_error(released: tuple[Path, dict[str, Any]], copy_of) -> None:
    root = copy_of(released[0])
    set_overlay_version(root, "prod", "v0.9.0")
    status, text = call(root, "release-plan")
    assert status == 1
    assert "v0.9.0" in text
    assert "v0.1.0, v0.2.0" in text


# --- The registry as GTO has it ------------------------------------------------------------------


def test_versions_and_their_tag_messages(released: tuple[Path, dict[str, Any]]) -> None:
    root, versions = released
    found = read_registry(root)
    shown = json.loads(gto(root, "show", "model", "--json"))
    assert found.names == ["v0.1.0", "v0.2.0"] == sorted(v["version"] for v in shown)
    second = found.get("v0.2.0")
    assert second.tag == "model@v0.2.0"
    assert second.commit == versions["v0.2.0"]["commit"]
    assert second.trailers == {
        "Gitml-Commit": versions["v0.2.0"]["commit"],
        "Gitml-Pull-Request": str(PR),
        "Gitml-Image": DIGEST,
        "Gitml-Verdict": "pass",
        "Gitml-Bump": "minor",
    }
    first = found.get("v0.1.0")
    assert "Gitml-Image" not in first.trailers
    assert "Gitml-Pull-Request" not in first.trailers
    by_version = {v["version"]: v for v in shown}
    for version in found.versions:
        assert version.date.isoformat() == by_version[version.name]["created_at"]
    assert found.latest is second
    assert found.previous("v0.2.0") is first
    assert found.previous("v0.1.0") is None
    with pytest.raises(GitmlError, match=r"v0\.1\.0, v0\.2\.0"):
        found.get("v7.0.0")


def test_the_tag_message(released: tuple[Path, dict[str, Any]]) -> None:
    _, versions = released
    state = versions["v0.2.0"]
    subject, blank, *rest = state["message"].splitlines()
    gate = state["gate"]["counts"]
    assert subject.startswith(f"model v0.2.0: gate pass ({gate['checks']} of {gate['checks']} checks); ")
    test = state["metrics"]["test"]
    assert f"auroc {test['auroc']:.4f}, accuracy {test['accuracy']:.4f}" in subject
    assert blank == ""
    assert rest[-5:] == [
        f"Gitml-Commit: {state['commit']}",
        f"Gitml-Pull-Request: {PR}",
        f"Gitml-Image: {DIGEST}",
        "Gitml-Verdict: pass",
        "Gitml-Bump: minor",
    ]


def test_the_release_notes(released: tuple[Path, dict[str, Any]]) -> None:
    root, versions = released
    text = (root.parent / f"{root.name}-release-v0.2.0" / "notes.md").read_text()
    state = versions["v0.2.0"]
    assert "Gate: **pass**" in text
    assert f"{state['gate']['counts']['checks']} checks passed" in text
    assert f"| AUROC | {state['metrics']['test']['auroc']:.4f} |" in text
    for attribute in state["metrics"]["fairness"]:
        assert f"| {attribute} |" in text
    for digest in state["manifest"]["data"].values():
        assert digest in text
    assert DIGEST in text
    assert f"#{PR}" in text
    assert state["commit"] in text


def test_release_notes_refuse_a_malformed_image(released: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    status, text = call(released[0], "release-notes", "v0.3.0", "--image", "gitml:latest", "--out", str(tmp_path))
    assert status == 1
    assert "sha256" in text


# --- assign ---------------------------------------------------------------------------------------


def test_assign_twice_changes_nothing(released: tuple[Path, dict[str, Any]], copy_of) -> None:
    root = copy_of(released[0])
    ok(root, "assign", "staging", "v0.1.0")
    before = tags(root)
    line = ok(root, "assign", "staging", "v0.2.0", "--push")
    made = tags(root) - before
    assert len(made) == 2
    assert "unassigned staging from model v0.1.0" in line
    again = ok(root, "assign", "staging", "v0.2.0", "--push")
    assert tags(root) - before == made
    assert "already the one version in staging" in again
    pushed = git(root, "ls-remote", "--tags", "origin")
    for tag in made:
        assert f"refs/tags/{tag}" in pushed
    status, text = call(root, "assign", "staging", "v5.0.0")
    assert status == 1
    assert "v0.1.0, v0.2.0" in text


def prod_state(root: Path) -> list[str]:
    """The version(s) in prod, checked to agree: gitml's registry, `gto show`, find_versions_in_stage, the gate's
    champion (gitml.baseline)."""
    from gto.api import find_versions_in_stage

    ours = [a.version for a in read_registry(root).in_stage("prod")]
    shown = json.loads(gto(root, "show", "model", "--json"))
    gto_show = sorted(v["version"] for v in shown if any(s["stage"] == "prod" for s in v["stages"]))
    found = find_versions_in_stage(str(root), "model", "prod")
    found_versions = [v.version for v in (found if isinstance(found, list) else [found] if found else [])]
    champion = stage_baseline(root)
    assert ours == gto_show == found_versions, (ours, gto_show, found_versions)
    assert (champion.version if champion else None) == (ours[0] if ours else None)
    return ours


def test_promote_then_roll_back(released: tuple[Path, dict[str, Any]], copy_of) -> None:
    root = copy_of(released[0])
    assert prod_state(root) == []
    seen: set[str] = set()
    for version in ("v0.1.0", "v0.2.0", "v0.1.0"):
        ok(root, "assign", "prod", version)
        assert prod_state(root) == [version]
        assert seen <= tags(root)  # append-only: no tag removed
        seen = tags(root)
    history = [(e.version, e.assigned) for e in read_registry(root).history(stage="prod")]
    assert history == [
        ("v0.1.0", True), ("v0.2.0", True), ("v0.1.0", False), ("v0.1.0", True), ("v0.2.0", False)
    ]  # fmt: skip
    gto_history = json.loads(gto(root, "history", "model", "--json"))
    assert sorted(e["ref"] for e in gto_history if e["stage"] == "prod") == sorted(
        e.tag for e in read_registry(root).history(stage="prod")
    )


def test_a_rollback_within_the_second_still_counts(released: tuple[Path, dict[str, Any]], copy_of) -> None:
    """GTO orders a version's tags in a stage by their dates, to the second: assign waits where a tie could
    leave the version it re-assigns inactive."""
    root = copy_of(released[0])
    for version in ("v0.1.0", "v0.2.0", "v0.1.0"):
        registry.assign(root, "prod", version)
    assert prod_state(root) == ["v0.1.0"]
