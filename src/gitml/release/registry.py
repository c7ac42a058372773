"""The `model` artifact in GTO: its versions and stages, what a merge to main releases, and stage assignment.

GTO keeps its registry in git tags, read here through gto's own API so that what gitml says agrees with
`gto show` and `gto history`:
  model@v1.2.0       registers v1.2.0 at a commit; an annotated tag whose message `gitml release-notes`
                     writes, ending in git trailers (Gitml-Commit, Gitml-Verdict, ...)
  model#prod#7       assigns v1.2.0's commit to the stage prod
  model#prod!#8      unassigns it (`gto deprecate model v1.2.0 prod`)
Exactly one version is active per stage: assigning V to a stage assigns it and then unassigns every
other version active there, so `gto show` (which orders assignments by time) and
`gto.api.find_versions_in_stage` (by semver; the gate's champion, gitml.baseline) name the same one.

`gitml release-plan` decides what a merge to main does: register the next version when the model
bundle's md5s in dvc.lock differ from the latest version's (the bump from the pull request's label),
and deploy a stage when its overlay names another version than GTO has there. `gitml assign` sets a stage.

GTO dates a tag by its tagger time, to the second, and orders one version's events in a stage by that
time alone: a re-assignment tagged in the same second as the unassignment before it may sort before
it and leave the version inactive. `assign` waits for the next second where that could happen.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gitml.baseline import ARTIFACT, PROD_STAGE, git_output, head_commit
from gitml.errors import GitmlError
from gitml.paths import MANIFEST, MODEL, PREPROCESS, THRESHOLD, Paths
from gitml.release.overlay import NOTHING, overlay_file, overlay_version, parse_version
from gitml.release.render import write_github_output

Handler = Callable[[Paths, argparse.Namespace], str]

BUMPS = ("major", "minor", "patch")
DEFAULT_BUMP = "minor"
LABEL_PREFIX = "release:"
# The model bundle's files: a merge releases a version when any of their md5s in dvc.lock changed.
MODEL_OUTS = tuple(f"models/{name}" for name in (MODEL, PREPROCESS, THRESHOLD, MANIFEST))
LOCK = "dvc.lock"
STAGING_STAGE = "staging"


def when(date: datetime) -> str:
    """A tag's date for people, in UTC."""
    return date.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_trailers(message: str) -> dict[str, str]:
    """The git trailers at the end of a tag message (`git interpret-trailers --parse`); the last value of a key."""
    done = subprocess.run(
        ["git", "interpret-trailers", "--parse"], input=message + "\n", capture_output=True, text=True, check=False
    )
    trailers: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            trailers[key.strip()] = value.strip()
    return trailers


@dataclass(frozen=True)
class Version:
    """A registered version: its tag model@vX.Y.Z, the commit it names and the tag's message."""

    name: str
    tag: str
    commit: str
    date: datetime  # the tag's date
    message: str
    trailers: dict[str, str]

    @property
    def subject(self) -> str:
        return self.message.splitlines()[0] if self.message else ""

    @property
    def short(self) -> str:
        return self.commit[:7]


@dataclass(frozen=True)
class StageEvent:
    """One assignment (model#S#N) or unassignment (model#S!#N) of a version to a stage."""

    stage: str
    version: str
    tag: str
    date: datetime
    assigned: bool  # False: unassigned


@dataclass(frozen=True)
class Active:
    """A version active in a stage, since its latest assignment."""

    stage: str
    version: str
    since: datetime
    tag: str


@dataclass(frozen=True)
class Registry:
    """What GTO's tags say about one artifact: registered versions (semver order), active stages, stage events."""

    artifact: str
    versions: tuple[Version, ...]  # lowest version first
    active: tuple[Active, ...]  # by stage, then date
    events: tuple[StageEvent, ...]  # oldest first, as `gto history --ascending` lists them

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.versions]

    @property
    def latest(self) -> Version | None:
        """The highest registered version."""
        return self.versions[-1] if self.versions else None

    def find(self, name: str) -> Version | None:
        return next((v for v in self.versions if v.name == name), None)

    def listing(self) -> str:
        """The registered versions for an error message."""
        if not self.versions:
            return (
                f"no version of {self.artifact} is registered here (a merge to main registers them; a clone needs "
                "the tags: `git fetch --tags`)"
            )
        return f"the registered versions of {self.artifact}: {', '.join(self.names)} (`gto show {self.artifact}`)"

    def get(self, name: str) -> Version:
        """The registered version `name`; an error listing the registered ones if there is none."""
        found = self.find(name)
        if found is None:
            raise GitmlError(f"{self.artifact} {name} is not a registered version; {self.listing()}.")
        return found

    def previous(self, name: str) -> Version | None:
        """The registered version just below `name`."""
        names = self.names
        index = names.index(name) if name in names else len(names)
        return self.versions[index - 1] if index > 0 else None

    def in_stage(self, stage: str) -> tuple[Active, ...]:
        return tuple(a for a in self.active if a.stage == stage)

    def stages_of(self, name: str) -> tuple[Active, ...]:
        return tuple(a for a in self.active if a.version == name)

    def history(self, version: str | None = None, stage: str | None = None) -> tuple[StageEvent, ...]:
        return tuple(
            e for e in self.events if (version is None or e.version == version) and (stage is None or e.stage == stage)
        )


def read_registry(root: Path, artifact: str = ARTIFACT) -> Registry:
    """The artifact's registered versions and stages, as GTO reads the repository's tags."""
    if git_output(root, "rev-parse", "--git-dir") is None:
        raise GitmlError(f"{root} is not a git repository: GTO's registry lives in its git tags.")
    from gto.constants import VersionSort
    from gto.exceptions import GTOException
    from gto.registry import GitRegistry

    try:
        with GitRegistry.from_url(str(root)) as reg:
            state = reg.get_state()
    except GTOException as exc:
        raise GitmlError(f"GTO could not read the tags of {root}: {exc}") from exc
    found = state.artifacts.get(artifact)
    if found is None:
        return Registry(artifact, (), (), ())
    versions: list[Version] = []
    active: list[Active] = []
    events: list[StageEvent] = []
    # Registered and not deregistered, as `gto show` lists them.
    for v in found.get_versions(active_only=True, sort=VersionSort.SemVer, ascending=True):
        registration = v.registrations[-1]
        message = str(registration.message)
        versions.append(
            Version(
                str(v.version),
                str(registration.tag),
                str(v.commit_hexsha),
                registration.created_at,
                message,
                parse_trailers(message),
            )
        )
        for vstage in v.stages.values():
            events += [StageEvent(vstage.stage, v.version, e.tag, e.created_at, True) for e in vstage.assignments]
            events += [StageEvent(vstage.stage, v.version, e.tag, e.created_at, False) for e in vstage.unassignments]
            if vstage.is_active:
                latest = vstage.get_events()[0]  # the assignment GTO counts as the one in effect
                active.append(Active(str(vstage.stage), str(v.version), latest.created_at, str(latest.ref)))
    # gto history's order: by time, then assignments before unassignments.
    events.sort(key=lambda e: (e.date, not e.assigned))
    active.sort(key=lambda a: (a.stage, a.since))
    return Registry(artifact, tuple(versions), tuple(active), tuple(events))


# What a merge to main releases.


def bump_from_labels(labels: Iterable[str]) -> str:
    """The version bump a pull request asks for with a label release:major|minor|patch; none: minor."""
    asked = sorted({label.strip() for label in labels if label.strip().startswith(LABEL_PREFIX)})
    unknown = [label for label in asked if label[len(LABEL_PREFIX) :] not in BUMPS]
    allowed = ", ".join(LABEL_PREFIX + b for b in BUMPS)
    if unknown:
        raise GitmlError(
            f"unknown release label {', '.join(unknown)}; a pull request asks for a bump with one of {allowed} "
            f"(none: {DEFAULT_BUMP})."
        )
    if len(asked) > 1:
        both = ", ".join(asked[:-1]) + " and " + asked[-1]
        raise GitmlError(f"the pull request has the labels {both}, which ask for different bumps; keep one of them.")
    return asked[0][len(LABEL_PREFIX) :] if asked else DEFAULT_BUMP


def next_version(previous: str | None, bump: str) -> str:
    """The version after `previous` (vX.Y.Z) for a bump; from nothing: v1.0.0, v0.1.0 or v0.0.1."""
    if bump not in BUMPS:
        raise GitmlError(f"unknown bump {bump!r}; it is one of {', '.join(BUMPS)}.")
    major, minor, patch = parse_version(previous) if previous is not None else (0, 0, 0)
    if bump == "major":
        return f"v{major + 1}.0.0"
    if bump == "minor":
        return f"v{major}.{minor + 1}.0"
    return f"v{major}.{minor}.{patch + 1}"


def model_md5s(lock_text: str | None) -> dict[str, str]:
    """The md5 dvc.lock records for each of the model bundle's files it names."""
    try:
        lock = yaml.safe_load(lock_text) if lock_text else None
    except yaml.YAMLError:
        lock = None
    stages = lock.get("stages") if isinstance(lock, dict) else None
    found: dict[str, str] = {}
    for stage in stages.values() if isinstance(stages, dict) else ():
        for out in (stage.get("outs") or []) if isinstance(stage, dict) else ():
            if isinstance(out, dict) and out.get("path") in MODEL_OUTS and out.get("md5"):
                found[str(out["path"])] = str(out["md5"])
    return found


@dataclass(frozen=True)
class ModelChange:
    """Whether the model at HEAD differs from the latest registered version's."""

    changed: bool
    previous: Version | None
    differing: tuple[str, ...]  # the MODEL_OUTS whose md5 differs
    reason: str


def model_change(root: Path, registry: Registry) -> ModelChange:
    """Compare the model bundle's md5s in dvc.lock at HEAD with those at the latest version's commit."""
    head = model_md5s(git_output(root, "show", f"HEAD:{LOCK}"))
    missing = [path for path in MODEL_OUTS if path not in head]
    if missing:
        raise GitmlError(
            f"{LOCK} at HEAD records no md5 for {', '.join(missing)}: the model's outputs are not committed. "
            "Run the pipeline (`dvc repro`), commit dvc.lock and `dvc push`."
        )
    latest = registry.latest
    if latest is None:
        return ModelChange(True, None, MODEL_OUTS, f"no version of {registry.artifact} is registered yet")
    if git_output(root, "cat-file", "-e", f"{latest.commit}^{{commit}}") is None:
        raise GitmlError(
            f"the commit {latest.short} of {latest.tag} is not in this clone; fetch the history with the tags "
            "(`git fetch --tags --unshallow`, or actions/checkout with fetch-depth: 0)."
        )
    before = model_md5s(git_output(root, "show", f"{latest.commit}:{LOCK}"))
    differing = tuple(path for path in MODEL_OUTS if before.get(path) != head[path])
    names = ", ".join(Path(p).name for p in (differing or MODEL_OUTS))
    if differing:
        why = f"the model changed since {latest.name} (commit {latest.short}): {names} differ in {LOCK}"
        return ModelChange(True, latest, differing, why)
    why = f"the model equals {latest.name} (commit {latest.short}): {LOCK} has the same {names}"
    return ModelChange(False, latest, (), why)


@dataclass(frozen=True)
class PullRequest:
    number: int | None
    labels: tuple[str, ...]


def merged_pull_request(pulls: Any, commit: str | None) -> PullRequest:
    """The merged pull request among GitHub's answer to GET /repos/{repo}/commits/{sha}/pulls; none if none."""
    merged = [p for p in pulls if isinstance(p, dict) and p.get("merged_at")] if isinstance(pulls, list) else []
    chosen = next((p for p in merged if commit and p.get("merge_commit_sha") == commit), merged[0] if merged else None)
    if chosen is None:
        return PullRequest(None, ())
    number = chosen.get("number")
    labels = tuple(str(label.get("name", "")) for label in chosen.get("labels") or [] if isinstance(label, dict))
    return PullRequest(number if isinstance(number, int) else None, labels)


@dataclass(frozen=True)
class Deployment:
    """Whether a stage is to be deployed: its overlay names another version than GTO has active there."""

    stage: str
    deploy: bool
    version: str  # the version the stage's overlay names
    reason: str


@dataclass(frozen=True)
class Plan:
    """What a merge to main does: release a version, and which stages are to be deployed."""

    release: bool
    version: str  # the version to register; "" without a release
    previous: str  # the latest registered version; "" when none
    bump: str
    reason: str
    staging: Deployment  # an overlay naming another version than GTO's (release.yml also deploys each release)
    prod: Deployment
    pull_request: int | None

    @property
    def promote(self) -> bool:
        return self.prod.deploy

    @property
    def prod_version(self) -> str:
        return self.prod.version

    @property
    def prod_reason(self) -> str:
        return self.prod.reason

    def outputs(self) -> dict[str, str]:
        return {
            "release": str(self.release).lower(),
            "version": self.version,
            "previous": self.previous,
            "bump": self.bump,
            "reason": self.reason,
            "promote": str(self.prod.deploy).lower(),
            "prod-version": self.prod.version,
            "redeploy-staging": str(self.staging.deploy and not self.release).lower(),
            "staging-version": self.staging.version,
            "pull-request": "" if self.pull_request is None else str(self.pull_request),
        }

    def line(self) -> str:
        pr = f"pull request #{self.pull_request}" if self.pull_request is not None else ""
        if self.release:
            start = f"from {self.previous}" if self.previous else "the first version"
            head = f"release model {self.version} ({self.bump} bump, {start}{', ' + pr if pr else ''}): {self.reason}"
            staging = f"gets {self.version}"
        else:
            head = f"no release{f' ({pr})' if pr else ''}: {self.reason}"
            staging = self.staging.reason
        return f"release-plan: {head}; staging: {staging}; prod: {self.prod.reason}"


def stage_deployment(root: Path, registry: Registry, stage: str) -> Deployment:
    """Whether `stage` is to be deployed: its overlay names another version than GTO has active there (a
    merged promotion or rollback, a revert, or a deployment that failed and left GTO where it was). The
    overlay's NOTHING (v0.0.0, as the template ships) deploys nothing; any other version the registry lacks
    is an error: release.yml and promote.yml's pull requests set the overlays to registered versions.
    """
    wanted = overlay_version(root, stage)
    active = tuple(a.version for a in registry.in_stage(stage))
    gto = f"GTO has {', '.join(active)} in {stage}" if active else f"GTO has no version in {stage}"
    if wanted == NOTHING:
        return Deployment(
            stage, False, wanted, f"the {stage} overlay names {NOTHING}: {stage} runs no model yet ({gto})"
        )
    if active == (wanted,):
        return Deployment(
            stage, False, wanted, f"the overlay names {wanted}, which GTO has in {stage}; nothing to deploy"
        )
    if registry.find(wanted) is not None:
        return Deployment(stage, True, wanted, f"deploy {wanted}, which the overlay names ({gto})")
    raise GitmlError(
        f"the {stage} overlay ({overlay_file(root, stage).relative_to(root)}) names {wanted}, which is not a "
        f"registered version; {registry.listing()}. Set it to a registered version in a pull request "
        "(promote.yml opens one for prod)."
    )


def plan_release(root: Path, labels: Iterable[str], pull_request: int | None = None) -> Plan:
    """What merging HEAD releases: the next version (by the labels' bump) when the model bundle's md5s in dvc.lock
    differ from the latest registered version's, nothing when they are the same; and which stages are to be deployed.
    """
    registry = read_registry(root)
    bump = bump_from_labels(labels)
    change = model_change(root, registry)
    previous = registry.latest.name if registry.latest else ""
    version = next_version(previous or None, bump) if change.changed else ""
    staging, prod = (stage_deployment(root, registry, stage) for stage in (STAGING_STAGE, PROD_STAGE))
    return Plan(change.changed, version, previous, bump, change.reason, staging, prod, pull_request)


def cmd_release_plan(paths: Paths, args: argparse.Namespace) -> str:
    pull = PullRequest(None, ())
    if args.pulls is not None:
        try:
            pulls = json.loads(args.pulls.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise GitmlError(f"{args.pulls}: cannot read GitHub's list of pull requests ({exc}).") from exc
        pull = merged_pull_request(pulls, head_commit(paths.root))
    labels = pull.labels if args.labels is None else tuple(s for s in args.labels.split(",") if s.strip())
    number = pull.number if args.pull_request is None else args.pull_request
    plan = plan_release(paths.root, labels, number)
    if args.github_output is not None:
        write_github_output(args.github_output, plan.outputs())
    return plan.line()


def _release_plan_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--labels", help="the merged pull request's labels, comma-separated (release:minor, ...)")
    command.add_argument("--pull-request", type=int, metavar="N", help="the merged pull request's number")
    command.add_argument(
        "--pulls",
        type=Path,
        metavar="FILE",
        help="GitHub's answer to GET /repos/{repo}/commits/{sha}/pulls: the merged pull request's number and labels "
        "(--labels and --pull-request override them)",
    )
    command.add_argument(
        "--github-output",
        type=Path,
        metavar="FILE",
        help="append release, version, previous, bump, reason, promote, prod-version, redeploy-staging, "
        "staging-version, pull-request ($GITHUB_OUTPUT)",
    )


# Assigning a stage.


def _wait_past(last: datetime | None) -> None:
    """Wait until a tag made now is dated after `last`: GTO compares tag times to the second."""
    if last is None:
        return
    wait = last.timestamp() + 1 - time.time()
    if 0 < wait <= 1.5:
        time.sleep(wait)


def _latest_event(registry: Registry, version: str, stage: str) -> StageEvent | None:
    events = registry.history(version, stage)
    return events[-1] if events else None


def push_tags(root: Path, tags: list[str]) -> None:
    """Push tags to origin in one `git push`: the git command line, so the credentials a workflow gives git
    (a `http.<server>.extraheader` through GIT_CONFIG_*) apply; a tag origin has elsewhere is refused."""
    refspecs = [f"refs/tags/{tag}:refs/tags/{tag}" for tag in tags]
    done = subprocess.run(["git", "push", "--quiet", "origin", *refspecs], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise GitmlError(
            f"pushing {', '.join(tags)} to origin failed ({done.stderr.strip()}); if origin has other tags of those "
            "names, fetch them (`git fetch --tags`) and assign again; else check the remote and its credentials, "
            "then run the same `gitml assign` again (it creates no tag twice)."
        )


def assign(root: Path, stage: str, version: str, push: bool = False, artifact: str = ARTIFACT) -> list[str]:
    """Make `version` the one version active in `stage`: assign it unless it is, then unassign every other one.

    Running it again changes nothing. Returns a line per thing done.
    """
    import gto.api
    from gto.exceptions import GTOException

    registry = read_registry(root, artifact)
    registry.get(version)
    active = [a.version for a in registry.in_stage(stage)]
    done: list[str] = []
    try:
        if version not in active:
            last = _latest_event(registry, version, stage)
            _wait_past(last.date if last else None)
            event = gto.api.assign(str(root), artifact, stage, version=version)
            done.append(f"assigned {stage} to {artifact} {version} (tag {event.tag})")
        for other in active:
            if other == version:
                continue
            last = _latest_event(registry, other, stage)
            _wait_past(last.date if last else None)
            event = gto.api.unassign(str(root), artifact, version=other, stage=stage)
            done.append(f"unassigned {stage} from {artifact} {other} (tag {event.tag})")
    except GTOException as exc:
        raise GitmlError(f"GTO could not assign {stage} to {artifact} {version}: {exc}") from exc
    after = read_registry(root, artifact)
    now = after.in_stage(stage)
    if [a.version for a in now] != [version]:
        shown = ", ".join(f"{a.version} (tag {a.tag}, {when(a.since)})" for a in now) or "none"
        raise GitmlError(
            f"after assigning, GTO has {shown} active in {stage}, not {version} alone; GTO orders tags by their "
            "dates: check the clock and the tags' dates (`gto history model`)."
        )
    if not done:
        done.append(f"{artifact} {version} is already the one version in {stage} (since {when(now[0].since)}, "
                    f"tag {now[0].tag}); no tag created")  # fmt: skip
    if push:
        # The latest tag of every version in the stage: what was just made, or a rerun after a failed push.
        tags = sorted({e.tag for e in (_latest_event(after, v, stage) for v in after.names) if e is not None})
        push_tags(root, tags)
        done.append(f"pushed {len(tags)} tag{'s' if len(tags) != 1 else ''} of {stage} to origin")
    return done


def version_argument(text: str) -> str:
    """A version as a command line names it: v1.2.0 (or 1.2.0); anything else is an error."""
    version = f"v{text}" if text[:1].isdigit() else text
    parse_version(version)
    return version


def cmd_assign(paths: Paths, args: argparse.Namespace) -> str:
    version = version_argument(args.version)
    return "assign: " + "; ".join(assign(paths.root, args.stage, version, push=args.push))


def _assign_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("stage", help="the stage, e.g. staging or prod")
    command.add_argument("version", help="a registered version, e.g. v1.2.0")
    command.add_argument("--push", action="store_true", help="push the stage's tags to origin")


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "release-plan": (
        cmd_release_plan,
        "decide what a merge to main releases: the next version if the model changed, and prod's deployment",
        _release_plan_arguments,
    ),
    "assign": (
        cmd_assign,
        "make a version the one active in a GTO stage (assign it, unassign the others); idempotent",
        _assign_arguments,
    ),
}
