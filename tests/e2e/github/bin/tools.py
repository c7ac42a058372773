"""Stand-ins for what the workflows reach beyond this machine: GitHub's API (`gh`, and CML's
pull requests), an image registry (`docker`) and a Kubernetes cluster (`kubectl`).

Each keeps its state under $GITML_TEST_WORLD, which outlives a workflow run as GitHub, the
registry and the cluster do, and logs every call to $GITML_TEST_RECORD (one folder per run):
  gh       `api repos/R/commits/SHA/pulls` answers what the test merged (github/commits/SHA.json);
           `release create` keeps the release and its assets (github/releases/TAG/);
           `release download` hands them back; `pr create` keeps the pull request (github/pulls/N.json);
           `label create` keeps a label (github/labels.json; an existing one only with --force);
           `issue list --label L --state open` answers the issues with that label (--json fields,
           --jq through jq); `issue create` keeps the issue (github/issues/N.json; its labels must
           exist); `issue comment N` adds the comment to it; `workflow run W` records the dispatch
           (github/dispatches/N.json: workflow, ref, inputs), for a W with a workflow_dispatch trigger.
           Issues and pull requests share one sequence of numbers, as on GitHub.
  cml      `pr create` does what CML does with git (a branch from the checked-out commit, the changed
           paths among those given committed on it, pushed to origin), then keeps the pull request as
           `gh pr create` does, with the token it was opened with (REPO_TOKEN)
  docker   `build` copies what deploy/Dockerfile's context lets through (.dockerignore is an
           allow-list) with the build arguments; `push` stores it under registry/ with a digest
           of its content; `inspect` answers the digest; `login` is recorded
  kubectl  `kustomize` runs the real kubectl ($GITML_TEST_KUBECTL); `apply -f` keeps the file and
           makes each Deployment's image its new revision (cluster/NAMESPACE/NAME.json);
           `rollout status` succeeds; `rollout undo` returns to the previous revision;
           `port-forward service/...` runs the pod: `gitml serve` on the image's files, on the
           local port, with the pod template's version label as GITML_MODEL_VERSION (what the
           Deployment's downward API gives it) and the image's GIT_SHA.
GITML_TEST_FAULT=stale-image makes the pod serve the previous revision's model under the new
image's version: an image built from the wrong files, which only the smoke test's score catches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

WORLD = Path(os.environ["GITML_TEST_WORLD"])
VERSION_LABEL = "gitml.dev/model-version"
RECORD = Path(os.environ["GITML_TEST_RECORD"])


def log(tool: str, args: list[str]) -> None:
    RECORD.mkdir(parents=True, exist_ok=True)
    with (RECORD / f"{tool}.log").open("a") as out:
        out.write(" ".join(args) + "\n")


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def option(args: list[str], *names: str, default: str | None = None) -> str | None:
    """The value of `--name value` or `--name=value`."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return default


def options(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == name]


def remote_ref(ref: str) -> str:
    """The sha `ref` has in origin, or "" when origin has no such ref."""
    listed = subprocess.run(["git", "ls-remote", "origin", ref], capture_output=True, text=True, check=False)
    return listed.stdout.split()[0] if listed.stdout.strip() else ""


def positional(args: list[str], valued: set[str]) -> list[str]:
    """Arguments that are neither options nor their values."""
    found, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in valued
        else:
            found.append(arg)
    return found


# --- gh ---------------------------------------------------------------------------------------


def next_number(github: Path) -> int:
    """The next issue or pull request number: GitHub numbers both in one sequence."""
    taken = [int(p.stem) for kind in ("issues", "pulls") for p in (github / kind).glob("*.json")]
    return max(taken, default=99) + 1


def keep_pull(github: Path, head: str, base: str, title: str | None, body: str, **more: Any) -> str:
    """A pull request from `head` (which must be in origin) into `base`; its URL."""
    head_sha = remote_ref(f"refs/heads/{head}")
    if not head_sha:
        fail(f"pull request create failed: head branch {head} is not in the remote")
    number = next_number(github)
    pulls = github / "pulls"
    pulls.mkdir(parents=True, exist_ok=True)
    pull = {"number": number, "base": base, "head": head, "head_sha": head_sha, "title": title, "body": body, **more}
    (pulls / f"{number}.json").write_text(json.dumps(pull))
    return f"https://github.com/{os.environ.get('GITHUB_REPOSITORY', 'owner/repo')}/pull/{number}"


def labels_file(github: Path) -> Path:
    return github / "labels.json"


def issues(github: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((github / "issues").glob("*.json"), key=lambda p: int(p.stem))]


def body_of(rest: list[str]) -> str:
    body_file = option(rest, "--body-file", "-F")
    if body_file is not None:
        return sys.stdin.read() if body_file == "-" else Path(body_file).read_text()
    return option(rest, "--body", "-b", default="") or ""


def gh_issue(github: Path, args: list[str]) -> None:
    repository = os.environ.get("GITHUB_REPOSITORY", "owner/repo")
    rest = args[2:]
    if args[1] == "list":
        wanted = options(rest, "--label") + options(rest, "-l")
        state = option(rest, "--state", "-s", default="open")
        found = [
            i
            for i in issues(github)
            if (state == "all" or i["state"] == state) and all(label in i["labels"] for label in wanted)
        ]
        found.sort(key=lambda i: -int(i["number"]))  # newest first, as gh lists them
        limit = int(option(rest, "--limit", "-L", default="30") or "30")
        fields = (option(rest, "--json") or "number,title").split(",")
        answer = json.dumps([{f: i.get(f) for f in fields} for i in found[:limit]])
        jq = option(rest, "--jq", "-q")
        if jq is None:
            print(answer)
            return
        done = subprocess.run(["jq", "-r", jq], input=answer, capture_output=True, text=True, check=False)
        if done.returncode:
            fail(f"gh issue list --jq: {done.stderr}")
        print(done.stdout, end="")
        return
    if args[1] == "create":
        known = json.loads(labels_file(github).read_text()) if labels_file(github).is_file() else {}
        wanted = options(rest, "--label") + options(rest, "-l")
        for label in wanted:
            if label not in known:
                fail(f"could not add label: '{label}' not found")
        number = next_number(github)
        (github / "issues").mkdir(parents=True, exist_ok=True)
        issue = {
            "number": number,
            "title": option(rest, "--title", "-t"),
            "labels": wanted,
            "state": "open",
            "body": body_of(rest),
            "comments": [],
        }
        (github / "issues" / f"{number}.json").write_text(json.dumps(issue))
        print(f"https://github.com/{repository}/issues/{number}")
        return
    if args[1] == "comment":
        (which,) = positional(rest, {"--body-file", "-F", "--body", "-b"})
        path = github / "issues" / f"{which}.json"
        if not path.is_file():
            fail(f"GraphQL: Could not resolve to an issue or pull request with the number of {which}.")
        issue = json.loads(path.read_text())
        issue["comments"].append(body_of(rest))
        path.write_text(json.dumps(issue))
        print(f"https://github.com/{repository}/issues/{which}#issuecomment-{len(issue['comments'])}")
        return
    fail(f"gh: the stand-in does not do issue {args[1]}")


def gh_workflow_run(github: Path, args: list[str]) -> None:
    rest = args[2:]
    (workflow,) = positional(rest, {"--ref", "-r", "-f", "--raw-field", "-F", "--field"})
    path = Path(".github") / "workflows" / workflow
    if not path.is_file():
        fail(f"could not find any workflows named {workflow}")
    spec = yaml.safe_load(path.read_text())
    triggers = spec.get("on", spec.get(True)) or {}
    if "workflow_dispatch" not in triggers:
        fail(f"HTTP 422: Workflow does not have 'workflow_dispatch' trigger ({workflow})")
    declared = triggers["workflow_dispatch"] or {}
    inputs = dict(pair.split("=", 1) for pair in options(rest, "-f") + options(rest, "--raw-field"))
    unknown = sorted(set(inputs) - set(declared.get("inputs") or {}))
    if unknown:
        fail(f"HTTP 422: Unexpected inputs provided: {unknown}")
    dispatches = github / "dispatches"
    dispatches.mkdir(parents=True, exist_ok=True)
    number = len(list(dispatches.glob("*.json"))) + 1
    dispatch = {"workflow": workflow, "ref": option(rest, "--ref", "-r"), "inputs": inputs}
    (dispatches / f"{number}.json").write_text(json.dumps(dispatch))
    print(f"✓ Created workflow_dispatch event for {workflow} at {dispatch['ref']}")


def gh(args: list[str]) -> None:
    if not os.environ.get("GH_TOKEN"):
        fail("gh: no GH_TOKEN")
    github = WORLD / "github"
    if args[:1] == ["api"]:
        parts = args[1].split("/")
        if len(parts) == 6 and parts[3] == "commits" and parts[5] == "pulls":
            answer = github / "commits" / f"{parts[4]}.json"
            print(answer.read_text() if answer.is_file() else "[]")
            return
        fail(f"gh api: the stand-in does not answer {args[1]}")
    if args[:2] == ["release", "create"]:
        rest = args[2:]
        tag, *assets = positional(rest, {"--title", "--notes-file"})
        if "--verify-tag" in rest and not remote_ref(f"refs/tags/{tag}"):
            fail(f"gh release create: tag {tag} does not exist in the remote")
        target = github / "releases" / tag
        if target.exists():
            fail(f"gh release create: a release with tag {tag} already exists")
        target.mkdir(parents=True)
        for asset in assets:
            shutil.copy2(asset, target / Path(asset).name)
        notes = option(rest, "--notes-file")
        release = {"tag": tag, "title": option(rest, "--title"), "notes": Path(notes).read_text() if notes else ""}
        (target / "release.json").write_text(json.dumps(release))
        print(f"https://github.com/{os.environ.get('GITHUB_REPOSITORY', 'owner/repo')}/releases/tag/{tag}")
        return
    if args[:2] == ["release", "download"]:
        rest = args[2:]
        (tag,) = positional(rest, {"--dir", "--pattern", "-p", "-D"})
        source = github / "releases" / tag
        if not source.is_dir():
            fail(f"release not found: {tag}")
        directory = Path(option(rest, "--dir", "-D", default=".") or ".")
        directory.mkdir(parents=True, exist_ok=True)
        for pattern in options(rest, "--pattern") + options(rest, "-p"):
            matched = list(source.glob(pattern))
            if not matched:
                fail(f"no assets match the file pattern {pattern}")
            for path in matched:
                shutil.copy2(path, directory / path.name)
        return
    if args[:2] == ["pr", "create"]:
        rest = args[2:]
        head, base = option(rest, "--head", "-H") or "", option(rest, "--base", "-B") or ""
        print(keep_pull(github, head, base, option(rest, "--title", "-t"), body_of(rest)))
        return
    if args[:2] == ["label", "create"]:
        rest = args[2:]
        (name,) = positional(rest, {"--color", "-c", "--description", "-d"})
        path = labels_file(github)
        known = json.loads(path.read_text()) if path.is_file() else {}
        if name in known and "--force" not in rest:
            fail(f'label with name "{name}" already exists; use `--force` to update its color and description')
        known[name] = {"color": option(rest, "--color", "-c"), "description": option(rest, "--description", "-d")}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(known))
        return
    if args[:1] == ["issue"] and len(args) > 1:
        gh_issue(github, args)
        return
    if args[:2] == ["workflow", "run"]:
        gh_workflow_run(github, args)
        return
    fail(f"gh: the stand-in does not do {' '.join(args[:2])}")


# --- cml pr create ----------------------------------------------------------------------------


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        fail(f"cml: git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


def cml(args: list[str]) -> None:
    """`cml pr create [options] PATHSPEC...`: CML's own steps (src/cml.js, prCreate) with git, then
    the pull request through the API, which is kept here."""
    if args[:2] != ["pr", "create"]:
        fail(f"cml: the stand-in does not do {' '.join(args[:2])}")
    token = os.environ.get("REPO_TOKEN", "")
    if not token:
        fail("cml: no REPO_TOKEN")
    rest = args[2:]
    valued = {
        "--branch",
        "--title",
        "--body",
        "--message",
        "--target-branch",
        "--remote",
        "--user-email",
        "--user-name",
    }
    paths = positional(rest, valued)
    remote = option(rest, "--remote", default="origin") or "origin"
    changed = git("status", "--porcelain", "--untracked-files=all", "--", *paths)
    if not changed:
        print("Input files are not affected. Nothing to do.", file=sys.stderr)
        return
    sha = git("rev-parse", "HEAD")
    target = option(rest, "--target-branch") or os.environ.get("GITHUB_REF_NAME", "main")
    if not remote_ref(f"refs/heads/{target}"):
        fail("The target branch does not exist.")
    source = option(rest, "--branch") or f"{target}-cml-pr-{sha[:8]}"
    github = WORLD / "github"
    if remote_ref(f"refs/heads/{source}"):
        for path in sorted((github / "pulls").glob("*.json")):
            pull = json.loads(path.read_text())
            if pull["head"] == source and pull["base"] == target:
                print(f"::warning::Branch {source} already exists", file=sys.stderr)
                print(f"https://github.com/{os.environ.get('GITHUB_REPOSITORY', 'owner/repo')}/pull/{pull['number']}")
                return
        fail(f"cml: branch {source} exists with no pull request")
    name = option(rest, "--user-name", default="Olivaw[bot]") or ""
    email = option(rest, "--user-email", default="olivaw@iterative.ai") or ""
    git("checkout", "-q", "-b", source)
    git("add", "--", *paths)
    message = option(rest, "--message") or f"CML PR for {sha[:8]} [skip ci]"
    git(
        "-c",
        f"user.name={name}",
        "-c",
        f"user.email={email}",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "-m",
        message,
    )
    git("push", "-q", "--set-upstream", remote, source)
    body = option(rest, "--body") or f"Automated commits for {sha} created by CML."
    print(keep_pull(github, source, target, option(rest, "--title"), body, opened_with=token))


# --- docker -----------------------------------------------------------------------------------


def image_dir(reference: str) -> Path:
    name, tag = reference.rsplit(":", 1)
    return WORLD / "registry" / name.replace("/", "_") / tag


def docker(args: list[str]) -> None:
    if args[:1] == ["login"]:
        if "--password-stdin" in args and not sys.stdin.read():
            fail("docker login: empty password on stdin")
        print("Login Succeeded")
        return
    if args[:1] == ["build"]:
        rest = args[1:]
        (context,) = positional(rest, {"-f", "--file", "--build-arg", "-t", "--tag"})
        tag = option(rest, "--tag", "-t")
        dockerfile = Path(option(rest, "-f", "--file", default="Dockerfile") or "Dockerfile")
        if tag is None or not dockerfile.is_file():
            fail("docker build: needs --tag and an existing Dockerfile")
        assert tag is not None
        built = WORLD / "builds" / tag.replace("/", "_")
        shutil.rmtree(built, ignore_errors=True)
        root = Path(context)
        for line in (root / ".dockerignore").read_text().splitlines():
            if line.startswith("!"):
                source = root / line[1:].rstrip("/")
                if source.is_file():
                    (built / line[1:]).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, built / line[1:])
                elif source.is_dir():
                    shutil.copytree(source, built / line[1:].rstrip("/"), ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    fail(f"docker build: {line[1:]} is not in the build context (COPY would fail)")
        build_args = dict(a.split("=", 1) for a in options(rest, "--build-arg"))
        (built / ".image.json").write_text(json.dumps({"tag": tag, "args": build_args}))
        print(f"naming to {tag} done")
        return
    if args[:1] == ["push"]:
        reference = args[1]
        built = WORLD / "builds" / reference.replace("/", "_")
        if not built.is_dir():
            fail(f"An image does not exist locally with the tag: {reference}")
        digest = hashlib.sha256()
        for path in sorted(p for p in built.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(built)).encode() + b"\0" + path.read_bytes())
        target = image_dir(reference)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(built, target)
        (target / ".digest").write_text(f"sha256:{digest.hexdigest()}")
        print(f"{reference.rsplit(':', 1)[1]}: digest: sha256:{digest.hexdigest()} size: 1234")
        return
    if args[:1] == ["inspect"]:
        reference = args[-1]
        target = image_dir(reference)
        if not (target / ".digest").is_file():
            fail(f"Error: No such object: {reference}")
        print(f"{reference.rsplit(':', 1)[0]}@{(target / '.digest').read_text()}")
        return
    fail(f"docker: the stand-in does not do {args[:1]}")


# --- kubectl ----------------------------------------------------------------------------------


def state_file(namespace: str, name: str) -> Path:
    return WORLD / "cluster" / namespace / f"{name}.json"


def read_state(namespace: str, name: str) -> dict[str, Any]:
    path = state_file(namespace, name)
    state: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"revisions": []}
    return state


def write_state(namespace: str, name: str, state: dict[str, Any]) -> None:
    path = state_file(namespace, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state))


def credentials() -> str:
    config = os.environ.get("KUBECONFIG", "")
    if not config or not Path(config).is_file():
        fail("error: no kubeconfig: KUBECONFIG names no file")
    return Path(config).read_text()


def kubectl(args: list[str]) -> None:
    if args[:1] == ["kustomize"]:
        os.execv(os.environ["GITML_TEST_KUBECTL"], ["kubectl", *args])
    namespace = option(args, "--namespace", "-n", default="default") or "default"
    kubeconfig = credentials()
    with (RECORD / "kubeconfigs.log").open("a") as out:
        out.write(kubeconfig.strip().splitlines()[0] + "\n")
    if args[:1] == ["apply"]:
        rendered = Path(option(args, "-f", "--filename") or "")
        # Named by time: two deploy jobs of one run may apply at once.
        shutil.copy2(rendered, RECORD / f"applied-{time.time_ns()}-{os.getpid()}.yaml")
        for doc in yaml.safe_load_all(rendered.read_text()):
            meta = doc["metadata"]
            print(f"{doc['kind'].lower()}/{meta['name']} configured")
            if doc["kind"] == "Deployment":
                template = doc["spec"]["template"]
                (container, *_) = template["spec"]["containers"]
                state = read_state(meta["namespace"], meta["name"])
                labels = template["metadata"].get("labels", {})
                state["revisions"].append({"image": container["image"], "version": labels.get(VERSION_LABEL, "")})
                write_state(meta["namespace"], meta["name"], state)
        return
    targets = positional(args[2:], {"--namespace", "-n"})
    name = targets[0].partition("/")[2] if targets else ""
    if args[:2] == ["rollout", "status"]:
        if not read_state(namespace, name)["revisions"]:
            fail(f'Error from server (NotFound): deployments.apps "{name}" not found')
        print(f'deployment "{name}" successfully rolled out')
        return
    if args[:2] == ["rollout", "undo"]:
        state = read_state(namespace, name)
        if len(state["revisions"]) < 2:
            fail(f"error: no rollout history found for deployment {name!r}")
        state["revisions"].pop()
        write_state(namespace, name, state)
        print(f"deployment.apps/{name} rolled back")
        return
    if args[:1] == ["port-forward"]:
        target, ports = positional(args[1:], {"--namespace", "-n"})
        local = ports.split(":")[0]
        deployments = sorted((WORLD / "cluster" / namespace).glob("*.json"))
        if not deployments:
            fail(f"error: no pods behind {target} in namespace {namespace}")
        revisions = json.loads(deployments[0].read_text())["revisions"]
        image = image_dir(revisions[-1]["image"])
        files = image
        if os.environ.get("GITML_TEST_FAULT") == "stale-image" and len(revisions) > 1:
            files = image_dir(revisions[-2]["image"])
        built = json.loads((image / ".image.json").read_text())["args"]
        # deployment.yaml hands the pod template's version label to the server (the downward API).
        env = {**os.environ, "GITML_MODEL_VERSION": revisions[-1]["version"], "GITML_GIT_SHA": built["GIT_SHA"]}
        logs = WORLD / "pod-logs" / namespace
        logs.mkdir(parents=True, exist_ok=True)
        serve = [sys.executable, "-m", "gitml.cli", "--root", str(files), "serve"]
        serve += ["--host", "127.0.0.1", "--port", local, "--log-dir", str(logs)]
        print(f"Forwarding from 127.0.0.1:{local} -> {ports.split(':')[1]}", flush=True)
        os.execve(sys.executable, serve, env)
    fail(f"kubectl: the stand-in does not do {' '.join(args[:2])}")


if __name__ == "__main__":
    tool, *arguments = sys.argv[1:]
    log(tool, arguments)
    {"gh": gh, "docker": docker, "kubectl": kubectl, "cml": cml}[tool](arguments)
