"""The Kubernetes overlays: which model version each stage runs, read and set in place.

deploy/k8s/overlays/<stage>/kustomization.yaml names the version twice, and the two must agree:
the image tag (`images: [{name: gitml, newTag: vX}]`) and the label pair
`gitml.dev/model-version: vX`. Setting a version edits just those two values in the file's text,
so its comments and layout stay as written, then parses the file again to confirm both changed.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from gitml.errors import GitmlError
from gitml.paths import Paths

Handler = Callable[[Paths, argparse.Namespace], str]

IMAGE = "gitml"  # the image name the base Deployment uses and every overlay rewrites
NOTHING = "v0.0.0"  # what an overlay names before its stage runs any model (the template ships so)
LABEL = "gitml.dev/model-version"
OVERLAYS = Path("deploy") / "k8s" / "overlays"
KUSTOMIZATION = "kustomization.yaml"
SEMVER = re.compile(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


def parse_version(version: str) -> tuple[int, int, int]:
    """The (major, minor, patch) of a `vX.Y.Z` version, for ordering; anything else is an error."""
    match = SEMVER.fullmatch(version)
    if match is None:
        raise GitmlError(f"{version!r} is not a model version; versions are semver with a leading v, like v1.2.3.")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def stages(root: Path) -> list[str]:
    """The stages that have an overlay, sorted."""
    base = root / OVERLAYS
    if not base.is_dir():
        return []
    return sorted(d.name for d in base.iterdir() if (d / KUSTOMIZATION).is_file())


def overlay_file(root: Path, stage: str) -> Path:
    """deploy/k8s/overlays/<stage>/kustomization.yaml; an unknown stage is an error listing the known ones."""
    path = root / OVERLAYS / stage / KUSTOMIZATION
    if stage in {"", ".", ".."} or "/" in stage or not path.is_file():
        known = ", ".join(stages(root)) or "none"
        raise GitmlError(f"no overlay for stage {stage!r} at {path}; the stages with an overlay are: {known}.")
    return path


@dataclass(frozen=True)
class _Scalar:
    """A scalar value in the overlay's text: what it says and where it is."""

    value: str
    start: int
    end: int
    line: int


@dataclass(frozen=True)
class Overlay:
    """What an overlay says about the model: the image it runs and the version, where each is written."""

    path: Path
    image: str
    tag: _Scalar
    labels: tuple[_Scalar, ...]

    @property
    def version(self) -> str:
        return self.tag.value


def _mapping_get(node: yaml.Node, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            return v  # type: ignore[no-any-return]
    return None


def _value(node: yaml.Node | None) -> object:
    return node.value if isinstance(node, yaml.ScalarNode) else None


def _items(node: yaml.Node | None) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value


def _scalar(node: yaml.Node | None, path: Path, what: str) -> _Scalar:
    if not isinstance(node, yaml.ScalarNode) or not isinstance(node.value, str):
        raise GitmlError(f"{path}: {what} is not a plain value; write it as `{what.split('.')[-1]}: vX.Y.Z`.")
    return _Scalar(str(node.value), node.start_mark.index, node.end_mark.index, node.start_mark.line + 1)


def _read(path: Path, text: str) -> Overlay:
    """Find the gitml image's newTag and every gitml.dev/model-version label in the overlay's text."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise GitmlError(f"{path} is not valid YAML: {exc}") from exc
    if root is None:
        raise GitmlError(f"{path} is empty; it should be a kustomization naming the gitml image and its version.")
    image = next((i for i in _items(_mapping_get(root, "images")) if _value(_mapping_get(i, "name")) == IMAGE), None)
    if image is None:
        raise GitmlError(f"{path} has no `images:` entry named {IMAGE}; add one with newName and newTag.")
    name = _mapping_get(image, "newName")
    if name is None:
        raise GitmlError(f"{path}: the {IMAGE} image has no newName; set it to the registry's image, like "
                         f"registry.example.com/{IMAGE}.")  # fmt: skip
    tag_node = _mapping_get(image, "newTag")
    if tag_node is None:
        raise GitmlError(f"{path}: the {IMAGE} image has no newTag; set it to the model version, like v0.1.0.")
    tag = _scalar(tag_node, path, "images.newTag")
    pairs = (_mapping_get(entry, "pairs") for entry in _items(_mapping_get(root, "labels")))
    labels = tuple(
        _scalar(value, path, f"labels.pairs.{LABEL}")
        for mapping in pairs
        if mapping is not None and (value := _mapping_get(mapping, LABEL)) is not None
    )
    if not labels:
        raise GitmlError(f"{path} has no `labels:` pair {LABEL}; add one (with includeTemplates: true) naming "
                         f"the same version as newTag ({tag.value}).")  # fmt: skip
    for label in labels:
        if label.value != tag.value:
            raise GitmlError(
                f"{path} names two versions: newTag {tag.value} (line {tag.line}) and {LABEL} {label.value} "
                f"(line {label.line}); they must be the same: edit the file so both name the version to run."
            )
    return Overlay(path, _scalar(name, path, "images.newName").value, tag, labels)


def read_overlay(root: Path, stage: str) -> Overlay:
    path = overlay_file(root, stage)
    return _read(path, path.read_text(encoding="utf-8"))


def overlay_version(root: Path, stage: str) -> str:
    """The model version the stage's overlay deploys (newTag and the version label agree)."""
    overlay = read_overlay(root, stage)
    if SEMVER.fullmatch(overlay.version) is None:
        raise GitmlError(
            f"{overlay.path} names {overlay.version!r} (line {overlay.tag.line}), not a model version like v1.2.3; "
            f"set one with `gitml overlay {stage} --set VERSION`."
        )
    return overlay.version


def overlay_image(root: Path, stage: str) -> str:
    """The image name (without tag) the stage's overlay deploys, e.g. registry.example.com/gitml."""
    return read_overlay(root, stage).image


def set_overlay_version(root: Path, stage: str, version: str) -> str:
    """Set the stage's overlay to version (newTag and the label, edited in place); returns the old version."""
    parse_version(version)
    path = overlay_file(root, stage)
    text = path.read_text(encoding="utf-8")
    overlay = _read(path, text)
    # Replace from the end so earlier offsets stay valid.
    for scalar in sorted((overlay.tag, *overlay.labels), key=lambda s: s.start, reverse=True):
        text = text[: scalar.start] + version + text[scalar.end :]
    written = _read(path, text)
    parsed = yaml.safe_load(text)
    image = next(i for i in parsed["images"] if i.get("name") == IMAGE)
    label_values = [e["pairs"][LABEL] for e in parsed["labels"] if LABEL in (e.get("pairs") or {})]
    if written.version != version or image["newTag"] != version or set(label_values) != {version}:
        raise GitmlError(f"{path}: setting {version} in place did not give newTag and {LABEL} both {version}; "
                         "edit the two lines by hand.")  # fmt: skip
    path.write_text(text, encoding="utf-8")
    return overlay.version


def cmd_overlay(paths: Paths, args: argparse.Namespace) -> str:
    """Print the overlay's version (or image name); with --set, set its version first."""
    if args.set is not None:
        old = set_overlay_version(paths.root, args.stage, args.set)
        file = overlay_file(paths.root, args.stage)
        if old == args.set:
            return f"overlay {args.stage}: already {args.set} ({file})"
        return f"overlay {args.stage}: {old} -> {args.set} ({file})"
    overlay = read_overlay(paths.root, args.stage)
    return overlay.image if args.image else overlay.version


def _overlay_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("stage", help="the overlay under deploy/k8s/overlays, e.g. staging or prod")
    action = command.add_mutually_exclusive_group()
    action.add_argument("--set", metavar="VERSION", help="set newTag and the version label to VERSION (vX.Y.Z)")
    action.add_argument("--image", action="store_true", help="print the image name (newName) instead of the version")


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "overlay": (cmd_overlay, "print or set the model version a Kubernetes overlay deploys", _overlay_arguments),
}
