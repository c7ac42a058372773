"""Where a model version came from and where it runs, from git alone.

`gitml lineage VERSION` reads the tag model@VERSION (its commit, and the trailers `gitml release-notes`
wrote: pull request, gate verdict, image), the files committed at that commit (`git show`:
models/manifest.json, params.yaml, reports/metrics.json) and GTO's stage tags. Any clone that has the
tags (`git fetch --tags`) can answer it; no DVC remote, cluster or GitHub is asked.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from gitml.baseline import git_output, parse_json
from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.release.notes import COMMIT as COMMIT_TRAILER
from gitml.release.notes import GATE_PART, IMAGE, PULL_REQUEST, VERDICT, manifest_data, number
from gitml.release.registry import Registry, Version, read_registry, version_argument, when

Handler = Callable[[Paths, argparse.Namespace], str]

WIDTH = 13  # the section names' column
ABSENT = object()  # a params key one side lacks


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (train.lr); lists and scalars are values."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def params_diff(old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every key that differs; ABSENT where a side lacks it."""
    before, after = flatten(old), flatten(new)
    return [
        (key, before.get(key, ABSENT), after.get(key, ABSENT))
        for key in sorted(before.keys() | after.keys())
        if before.get(key, ABSENT) != after.get(key, ABSENT)
    ]


def shown(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


class Section:
    """Lines under aligned section names."""

    def __init__(self, title: str) -> None:
        self.lines = [title]

    def add(self, name: str, *rows: str) -> None:
        for i, row in enumerate(rows or ("",)):
            self.lines.append(f"  {(name if i == 0 else ''):<{WIDTH}}{row}".rstrip())

    def text(self) -> str:
        return "\n".join(self.lines)


def _at(root: Path, commit: str, path: str) -> str | None:
    return git_output(root, "show", f"{commit}:{path}")


def _yaml(text: str | None) -> Any:
    try:
        return yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _metrics(root: Path, commit: str) -> dict[str, Any]:
    return _dict(parse_json(_at(root, commit, "reports/metrics.json")))


def _stage_rows(registry: Registry, version: Version) -> tuple[list[str], list[str]]:
    """Where the version is active now (stage, since), and its past periods in stages."""
    current = [
        f"{a.stage:<9} since {when(a.since)} (tag {a.tag})"
        for a in sorted(registry.stages_of(version.name), key=lambda a: a.stage)
    ]
    past: list[str] = []
    opened: dict[str, tuple[str, str]] = {}  # stage -> (date, tag) of the assignment that opened a period
    for event in registry.history(version.name):
        if event.assigned:
            opened.setdefault(event.stage, (when(event.date), event.tag))
        elif event.stage in opened:
            start, tag = opened.pop(event.stage)
            past.append(f"{event.stage:<9} {start} -> {when(event.date)} (tags {tag}, {event.tag})")
    return current, past


def lineage(root: Path, name: str) -> str:
    """The lineage of a registered version, as aligned sections for people."""
    from gitml.evaluate.measures import HEADLINE, label  # NumPy: not at `gitml` start-up
    from gitml.summary import FAIRNESS_SHOWN

    registry = read_registry(root)
    version = registry.get(name)
    if git_output(root, "cat-file", "-e", f"{version.commit}^{{commit}}") is None:
        raise GitmlError(
            f"the commit {version.short} of {version.tag} is not in this clone; fetch the history "
            "(`git fetch --tags --unshallow`)."
        )
    previous = registry.previous(name)
    trailers = version.trailers
    out = Section(f"{registry.artifact} {version.name}")

    subject = (git_output(root, "log", "-1", "--format=%s", version.commit) or "").strip()
    out.add("commit", f"{version.commit}  {subject}".rstrip())
    named = trailers.get(COMMIT_TRAILER)
    if named and named != version.commit:
        out.add("", f"(the tag message names commit {named})")
    pr = trailers.get(PULL_REQUEST)
    out.add("pull request", f"#{pr}" if pr else "none recorded")
    after = f", after {previous.name}" if previous else ", the first version"
    out.add("registered", f"{when(version.date)} (tag {version.tag}){after}")

    gate = GATE_PART.search(version.subject)
    verdict = trailers.get(VERDICT) or (gate["verdict"] if gate else None)
    counts = f" ({gate['passed']} of {gate['checks']} checks)" if gate else ""
    out.add("gate", f"{verdict}{counts}" if verdict else "not recorded in the tag message")
    out.add("image", trailers.get(IMAGE) or "none recorded (no image was built)")

    data, params_sha = manifest_data(parse_json(_at(root, version.commit, "models/manifest.json")))
    width = max((len(split) for split in data), default=0)
    rows = [f"{split:<{width}}  sha256 {digest}" for split, digest in sorted(data.items())]
    out.add("data", *(rows or ["models/manifest.json names no data at this commit"]))

    rows = [f"sha256 {params_sha} (models/manifest.json)"] if params_sha else []
    params = _yaml(_at(root, version.commit, "params.yaml"))
    if previous is None:
        rows.append("the first version: nothing to compare with")
    else:
        changes = params_diff(_yaml(_at(root, previous.commit, "params.yaml")), params)
        if not changes:
            rows.append(f"params.yaml is the same as {previous.name}'s")
        else:
            key_width = max(len(key) for key, _, _ in changes)
            keys = f"{len(changes)} key{'s differ' if len(changes) > 1 else ' differs'}"
            rows.append(f"{keys} from {previous.name} in params.yaml (old -> new):")
            rows += [f"  {key:<{key_width}}  {shown(old)} -> {shown(new)}" for key, old, new in changes]
    out.add("params", *rows)

    metrics = _metrics(root, version.commit)
    test = _dict(metrics.get("test"))
    before = _dict(_metrics(root, previous.commit).get("test")) if previous else {}
    measures = [m for m in HEADLINE if m.name in test]
    label_width = max((len(m.label) for m in measures), default=0)
    rows = []
    for m in measures:
        old = f"  ({previous.name} {number(before.get(m.name))})" if previous and before else ""
        rows.append(f"{m.label:<{label_width}}  {number(test[m.name])}{old}")
    out.add("metrics", *(rows or ["reports/metrics.json is not committed at this commit"]))

    fairness = _dict(metrics.get("fairness"))
    attr_width = max((len(a) for a in fairness), default=0)
    rows = [
        f"{attribute:<{attr_width}}  "
        + " | ".join(f"{label(m)} {number(gaps.get(m), digits)}" for m, digits in FAIRNESS_SHOWN)
        for attribute, gaps in sorted(fairness.items())
        if isinstance(gaps, dict)
    ]
    out.add("fairness", *(rows or ["none recorded"]))

    current, past = _stage_rows(registry, version)
    out.add("deployed", *(current or ["in no stage now"]))
    out.add("past stages", *(past or ["none"]))
    return out.text()


def cmd_lineage(paths: Paths, args: argparse.Namespace) -> str:
    return lineage(paths.root, version_argument(args.version))


def _lineage_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("version", help="a registered version, e.g. v1.2.0 (`gto show model` lists them)")


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "lineage": (
        cmd_lineage,
        "where a model version came from (commit, pull request, data, params, metrics, gate, image) and where it runs",
        _lineage_arguments,
    ),
}
