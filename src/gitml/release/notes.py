"""What a release says: the message of the version's tag, and the GitHub release's notes.

`gitml release-notes VERSION --out DIR` reads the gated outputs of HEAD (reports/gate.json,
reports/metrics.json, models/manifest.json) and writes
  DIR/tag-message.txt  the message of the tag model@VERSION (`gto register ... -m`): one line with the
                       verdict and the headline metrics, human lines, then git trailers that
                       `gitml lineage` reads back (`git interpret-trailers --parse`):
                         Gitml-Commit        the released commit (full sha)
                         Gitml-Pull-Request  the merged pull request's number (absent when unknown)
                         Gitml-Image         the serving image by digest (absent when none was built)
                         Gitml-Verdict       the gate's verdict, pass or fail
                         Gitml-Bump          the version bump (absent when not given)
  DIR/notes.md         the release's body: the verdict, headline and fairness metrics, lineage.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gitml.baseline import ARTIFACT, head_commit
from gitml.errors import GitmlError
from gitml.outputs import GATE, METRICS, json_object, read_json
from gitml.paths import Paths
from gitml.release.overlay import parse_version
from gitml.release.registry import BUMPS

Handler = Callable[[Paths, argparse.Namespace], str]

COMMIT, PULL_REQUEST, IMAGE, VERDICT, BUMP = (
    "Gitml-Commit", "Gitml-Pull-Request", "Gitml-Image", "Gitml-Verdict", "Gitml-Bump",
)  # fmt: skip
IMAGE_REF = re.compile(r"[^\s@]+@sha256:[0-9a-f]{64}")
# The subject line's gate part: "gate pass (34 of 34 checks)".
GATE_PART = re.compile(r"gate (?P<verdict>\w+) \((?P<passed>\d+) of (?P<checks>\d+) checks\)")


def number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) and not isinstance(value, bool) else "n/a"


@dataclass(frozen=True)
class Release:
    """What the release of one version records, from HEAD's gated outputs and the workflow's arguments."""

    version: str
    commit: str
    verdict: str
    checks: int
    failed: int
    warnings: int
    reason: str
    test: dict[str, Any]
    fairness: dict[str, dict[str, Any]]
    data: dict[str, str]  # split -> sha256, from the manifest
    params_sha256: str | None
    image: str | None
    pull_request: int | None
    bump: str | None

    @property
    def passed(self) -> int:
        return self.checks - self.failed

    def subject(self) -> str:
        from gitml.summary import HEADLINE_SHOWN  # NumPy, through the measures: not at `gitml` start-up

        metrics = ", ".join(f"{name} {number(self.test.get(name))}" for name in HEADLINE_SHOWN if name in self.test)
        gate = f"gate {self.verdict} ({self.passed} of {self.checks} checks)"
        return f"{ARTIFACT} {self.version}: {gate}" + (f"; {metrics}" if metrics else "")

    def trailers(self) -> list[tuple[str, str]]:
        found = [
            (COMMIT, self.commit),
            (PULL_REQUEST, str(self.pull_request) if self.pull_request is not None else None),
            (IMAGE, self.image),
            (VERDICT, self.verdict),
            (BUMP, self.bump),
        ]
        return [(key, value) for key, value in found if value is not None]

    def tag_message(self) -> str:
        pr = f" (pull request #{self.pull_request})" if self.pull_request is not None else ""
        bump = f", a {self.bump} bump" if self.bump else ""
        data = ", ".join(f"{split} {digest[:12]}" for split, digest in sorted(self.data.items()))
        human = [
            f"Released from commit {self.commit[:12]}{pr}{bump}.",
            f"The gate's verdict is {self.verdict}: {self.reason}.",
            f"Image {self.image}." if self.image else "No image was built.",
            f"Data sha256 {data} (models/manifest.json)." if data else "The manifest names no data.",
            f"Trace it with `gitml lineage {self.version}`.",
        ]
        trailers = [f"{key}: {value}" for key, value in self.trailers()]
        return "\n".join([self.subject(), "", *human, "", *trailers]) + "\n"

    def notes(self) -> str:
        from gitml.evaluate.measures import FAIRNESS, HEADLINE  # NumPy: not at `gitml` start-up

        lines = [
            f"## {ARTIFACT} {self.version}",
            "",
            f"Gate: **{self.verdict}**, {self.passed} of {self.checks} checks passed"
            + (f" ({self.warnings} with a warning)" if self.warnings else "")
            + (f": {self.reason}." if self.failed else "."),
            "",
            "### Test metrics",
            "",
            "| metric | value |",
            "|---|---:|",
            *(f"| {m.label} | {number(self.test[m.name])} |" for m in HEADLINE if m.name in self.test),
        ]
        if self.fairness:
            measures = [m for m in FAIRNESS if any(m.name in gaps for gaps in self.fairness.values())]
            lines += [
                "",
                "### Fairness",
                "",
                "| attribute | " + " | ".join(m.label for m in measures) + " |",
                "|---|" + "---:|" * len(measures),
                *(
                    f"| {attribute} | " + " | ".join(number(gaps.get(m.name), 3) for m in measures) + " |"
                    for attribute, gaps in sorted(self.fairness.items())
                ),
            ]
        pr = f"#{self.pull_request}" if self.pull_request is not None else "none known"
        lines += [
            "",
            "### Lineage",
            "",
            f"- commit: `{self.commit}`",
            f"- pull request: {pr}",
        ]
        if self.bump:
            lines.append(f"- version bump: {self.bump}")
        lines.append(f"- image: `{self.image}`" if self.image else "- image: none built")
        lines += [f"- data `{split}`: sha256 `{digest}`" for split, digest in sorted(self.data.items())]
        if self.params_sha256:
            lines.append(f"- params: sha256 `{self.params_sha256}`")
        lines += ["", f"`gitml lineage {self.version}` traces this version from git; `gto show {ARTIFACT}` lists them."]
        return "\n".join(lines) + "\n"


def manifest_data(manifest: Any) -> tuple[dict[str, str], str | None]:
    """The data hashes (split -> sha256) and the params hash of a parsed manifest.json; empty where absent."""
    data = manifest.get("data") if isinstance(manifest, dict) else None
    params = manifest.get("params_sha256") if isinstance(manifest, dict) else None
    hashes = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return hashes, str(params) if isinstance(params, str) else None


def gather(
    paths: Paths, version: str, image: str | None = None, pull_request: int | None = None, bump: str | None = None
) -> Release:
    """The release of HEAD as `version`, from its gate verdict, metrics and manifest."""
    parse_version(version)
    if image is not None and not IMAGE_REF.fullmatch(image):
        raise GitmlError(f"--image {image!r} is not an image by digest; pass NAME@sha256:<64 hex digits>.")
    if bump is not None and bump not in BUMPS:
        raise GitmlError(f"--bump {bump!r} is not a bump; it is one of {', '.join(BUMPS)}.")
    commit = head_commit(paths.root)
    if commit is None:
        raise GitmlError(f"{paths.root} is not a git repository with a commit; a release names the commit it is.")
    gate = GATE.read(paths)
    metrics = METRICS.read(paths)
    manifest = json_object(read_json(paths.manifest, "evaluate"), paths.manifest)
    data, params = manifest_data(manifest)
    counts = gate["counts"]
    return Release(
        version=version,
        commit=commit,
        verdict=gate["verdict"],
        checks=int(counts.get("checks", len(gate["checks"]))),
        failed=int(counts.get("failed", sum(not c.get("passed") for c in gate["checks"]))),
        warnings=int(counts.get("warnings", 0)),
        reason=gate["reason"],
        test=dict(metrics["test"]),
        fairness={k: v for k, v in metrics["fairness"].items() if isinstance(v, dict)},
        data=data,
        params_sha256=params,
        image=image,
        pull_request=pull_request,
        bump=bump,
    )


def write_release_notes(release: Release, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    message, notes = out / "tag-message.txt", out / "notes.md"
    message.write_text(release.tag_message(), encoding="utf-8")
    notes.write_text(release.notes(), encoding="utf-8")
    return message, notes


def cmd_release_notes(paths: Paths, args: argparse.Namespace) -> str:
    release = gather(paths, args.version, args.image, args.pull_request, args.bump)
    message, notes = write_release_notes(release, args.out)
    return f"release-notes: {release.subject()}; wrote {message} and {notes}"


def _release_notes_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("version", help="the version being released, e.g. v1.2.0")
    command.add_argument("--image", metavar="IMAGE@DIGEST", help="the serving image pushed, by digest")
    command.add_argument("--pull-request", type=int, metavar="N", help="the merged pull request's number")
    command.add_argument("--bump", choices=BUMPS, help="the version bump the release made")
    command.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="write tag-message.txt and notes.md here"
    )


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "release-notes": (
        cmd_release_notes,
        "write the version tag's message and the GitHub release's notes from HEAD's gate, metrics and manifest",
        _release_notes_arguments,
    ),
}
