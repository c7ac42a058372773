"""release.yml, deploy.yml and promote.yml, run by act on this machine: the GitOps loop, offline.

One story, in order (the tests share the stand-in GitHub of tests/e2e/conftest.py and each
builds on the one before): a merge registers v0.1.0 and deploys it to staging; a documentation
merge changes nothing; a retrained model becomes v0.2.0 in staging; promote.yml opens the pull
request that puts v0.2.0 in production and its merge deploys it; a rollback does the same with
v0.1.0; a revert of that rollback ships an image whose model is not the version's, the smoke test
catches it and the Deployment is rolled back.

The outer boundary and its stand-ins (tests/e2e/github/bin/tools.py): GitHub's API (`gh`), the
image registry (`docker`), the cluster (`kubectl`: apply and rollout are recorded; a
port-forward runs the real server on the image's files). Everything else is real: GTO's tags in
the bare origin, DVC pulling from the remote the pipeline pushed to, the gate and the report,
`kubectl kustomize`, and kubernetes-validate on exactly what was applied.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run, tool
from tests.e2e.act import BIN, REPOSITORY, GitHub, PullRequest, Run, open_pull_request, run_workflow
from tests.e2e.conftest import run as run_in

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("workflows")]

KUBECONFIG = "# kubeconfig of the gitml deployer service account (a stand-in)\napiVersion: v1\nkind: Config\n"
SECRETS = {
    "GITML_BOT_TOKEN": "a-bot-token",
    "KUBECONFIG": KUBECONFIG,
    "GITML_REGISTRY_USER": "gitml-robot",
    "GITML_REGISTRY_PASSWORD": "a-registry-password",
}
VARIABLES = {"GITML_DEPLOY": "true"}
OVERLAY = "deploy/k8s/overlays/{}/kustomization.yaml"
VERSION_LABEL = "gitml.dev/model-version"


@dataclass
class Story:
    """What the runs so far left behind, for the next test to build on."""

    gh: GitHub
    numbers: Iterator[int] = field(default_factory=lambda: iter(range(40, 100)))
    runs: dict[str, Run] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)

    @property
    def world(self) -> Path:
        return Path(self.gh.env["GITML_TEST_WORLD"])


@pytest.fixture(scope="module")
def story(github: GitHub) -> Story:
    return Story(github)


def origin_tags(gh: GitHub) -> set[str]:
    return set(gh.git(gh.origin, "tag", "--list").split())


def gto(gh: GitHub, *args: str) -> str:
    """GTO on a fresh clone of origin with its tags: what anyone reading the registry sees."""
    clone = gh.root / "gto-view"
    if clone.exists():
        gh.git(clone, "fetch", "-q", "--tags", "--force", "origin", "+refs/heads/*:refs/remotes/origin/*")
    else:
        gh.git(gh.root, "clone", "-q", str(gh.origin), str(clone))
    done = subprocess.run([str(BIN / "gto"), *args], cwd=clone, capture_output=True, text=True, env=gh.env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def stages(gh: GitHub) -> dict[str, str]:
    """`gto show model --json`'s stage -> version, for the versions GTO has active."""
    shown = json.loads(gto(gh, "show", "model", "--json"))
    found: dict[str, str] = {}
    for version in shown:
        for stage in version.get("stages", []):
            found[stage["stage"]] = version["version"]
    return found


def overlay_version(gh: GitHub, ref: str, stage: str) -> str:
    kustomization = yaml.safe_load(gh.git(gh.origin, "show", f"{ref}:{OVERLAY.format(stage)}"))
    (image,) = kustomization["images"]
    (labels,) = kustomization["labels"]
    assert image["newTag"] == labels["pairs"][VERSION_LABEL], "the overlay's two version lines disagree"
    return str(image["newTag"])


def merge(story: Story, pr: PullRequest, labels: tuple[str, ...] = ()) -> str:
    """GitHub's merge button: a merge commit of the pull request into main, pushed to origin;
    GitHub's API then answers, for that commit, the pull request with its labels."""
    gh = story.gh
    gh.git(gh.seed, "fetch", "-q", "origin")
    gh.git(gh.seed, "checkout", "-q", "-B", "main", "origin/main")
    gh.git(gh.seed, "merge", "-q", "--no-ff", "-m", f"Merge pull request #{pr.number} from {pr.branch}", pr.sha)
    gh.git(gh.seed, "push", "-q", "origin", "main")
    sha = gh.git(gh.seed, "rev-parse", "HEAD")
    answer = story.world / "github" / "commits" / f"{sha}.json"
    answer.parent.mkdir(parents=True, exist_ok=True)
    pulls = [{"number": pr.number, "merged_at": "2026-12-01T12:00:00Z", "labels": [{"name": n} for n in labels]}]
    answer.write_text(json.dumps(pulls))
    return sha


def release(story: Story, sha: str, env: dict[str, str] | None = None) -> Run:
    """release.yml for the push of `sha` to main."""
    gh = story.gh
    event = {
        "ref": "refs/heads/main",
        "before": gh.git(gh.seed, "rev-parse", f"{sha}^"),
        "after": sha,
        "head_commit": {"id": sha},
        "repository": {"full_name": REPOSITORY, "default_branch": "main"},
    }
    return run_workflow(gh, "push", "release.yml", event, sha, VARIABLES, SECRETS, env=env)


def promote(story: Story, version: str = "") -> Run:
    """promote.yml, run by hand on main (Actions > promote > Run workflow)."""
    gh = story.gh
    main = gh.git(gh.origin, "rev-parse", "main")
    event = {"inputs": {"version": version}, "ref": "refs/heads/main", "repository": {"full_name": REPOSITORY}}
    return run_workflow(gh, "workflow_dispatch", "promote.yml", event, main, VARIABLES, SECRETS)


def job_ran(run: Run, job: str) -> bool:
    return f"{job}] ⭐ Run Set up job" in run.log or f"/{job}] ⭐ Run Set up job" in run.log


def applied(run: Run) -> list[Path]:
    return sorted(run.record.glob("applied-*.yaml"))


def deployment(path: Path) -> dict[str, Any]:
    (found,) = [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "Deployment"]
    return dict(found)


def assert_applied_is_the_overlay(gh: GitHub, path: Path, ref: str, stage: str, version: str) -> None:
    """What was applied is exactly what the overlay at `ref` renders, names `version`, and is valid."""
    checkout = gh.root / f"render-{stage}"
    if not checkout.exists():
        gh.git(gh.root, "clone", "-q", str(gh.origin), str(checkout))
    gh.git(checkout, "fetch", "-q", "origin", ref)
    gh.git(checkout, "checkout", "-q", "--detach", ref)
    rendered = run(tool("kubectl"), "kustomize", f"deploy/k8s/overlays/{stage}", cwd=checkout)
    assert rendered.returncode == 0, rendered.stderr
    assert path.read_text() == rendered.stdout
    found = deployment(path)
    assert found["metadata"]["labels"][VERSION_LABEL] == version
    assert found["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] == version
    (container,) = found["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f":{version}")
    valid = run(tool("kubernetes-validate"), "--strict", str(path))
    assert valid.returncode == 0, valid.stdout + valid.stderr


def tag_trailers(gh: GitHub, tag: str) -> dict[str, str]:
    message = gh.git(gh.origin, "tag", "--list", "--format=%(contents)", tag)
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"], input=message, capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(": ", 1) for line in parsed.splitlines())


def edit_docs(line: str) -> Any:
    def change(repo: Path) -> None:
        (repo / "README.md").write_text((repo / "README.md").read_text() + f"\n{line}\n")

    return change


def retrain(repo: Path) -> None:
    """What a pull request that retrains holds once its pipeline ran: conf/ changed (another
    training seed), the reproduction's dvc.lock and metrics committed, its outputs pushed to the
    DVC remote (pipeline.yml's `dvc repro` and `dvc push`)."""
    config = repo / "conf" / "config.yaml"
    text = config.read_text()
    seed = yaml.safe_load(text)["train"]["seed"]
    changed = re.sub(r"(?m)^(train:\n(?:  .*\n|\n|#.*\n)*?  seed:) \d+", rf"\g<1> {seed + 1}", text)
    assert changed != text, "no train.seed in conf/config.yaml to change"
    config.write_text(changed)
    run_in(repo, "gitml", "params")
    run_in(repo, "dvc", "repro", "--pull")
    run_in(repo, "dvc", "push")


# --- The story ----------------------------------------------------------------------------------


def test_a_first_merge_registers_v0_1_0_and_deploys_it_to_staging(story: Story) -> None:
    gh = story.gh
    pr = open_pull_request(gh, next(story.numbers), edit_docs("The first release."), "docs: a line")
    sha = merge(story, pr)
    run = release(story, sha)
    story.runs["v0.1.0"] = run
    assert run.returncode == 0, run.log[-6000:]
    assert job_ran(run, "version and release")
    assert job_ran(run, "deploy to staging")
    assert not job_ran(run, "deploy to prod")
    # Nothing was trained: the outputs came from the DVC remote.
    assert "Running stage" not in run.log
    tags = origin_tags(gh)
    assert {"model@v0.1.0", "model#staging#1"} <= tags
    assert not any("#prod" in t for t in tags)
    # The tag carries the verdict, the headline metrics, the merge, the pull request and the image.
    trailers = tag_trailers(gh, "model@v0.1.0")
    assert trailers["Gitml-Verdict"] == "pass"
    assert trailers["Gitml-Commit"] == sha
    assert trailers["Gitml-Pull-Request"] == str(pr.number)
    subject = gh.git(gh.origin, "tag", "--list", "--format=%(contents:subject)", "model@v0.1.0")
    assert subject.startswith("model v0.1.0: gate pass")
    # The image was built from the merge, pushed, and its digest recorded in the tag.
    image = trailers["Gitml-Image"]
    name, digest = image.split("@")
    pushed = story.world / "registry" / name.replace("/", "_") / "v0.1.0"
    assert (pushed / ".digest").read_text() == digest
    built = json.loads((pushed / ".image.json").read_text())["args"]
    assert built == {"MODEL_VERSION": "v0.1.0", "GIT_SHA": sha}
    assert "login" in (run.record / "docker.log").read_text()
    # The GitHub release holds the model card, the verdict and the report.
    assets = story.world / "github" / "releases" / "model@v0.1.0"
    assert json.loads((assets / "gate.json").read_text())["verdict"] == "pass"
    assert (assets / "model_card.md").is_file()
    assert (assets / "report.md").is_file()
    # The staging overlay on main names the version, in the commit that was deployed.
    main = gh.git(gh.origin, "rev-parse", "main")
    assert gh.git(gh.origin, "log", "-1", "--format=%s", main) == "deploy: staging runs model v0.1.0"
    assert gh.git(gh.origin, "rev-parse", "main^") == sha
    assert overlay_version(gh, "main", "staging") == "v0.1.0"
    assert overlay_version(gh, "main", "prod") == "v0.0.0"
    (path,) = applied(run)
    assert_applied_is_the_overlay(gh, path, main, "staging", "v0.1.0")
    assert deployment(path)["metadata"]["namespace"] == "gitml-staging"
    # Every kubectl call that reached the cluster did so with the environment's kubeconfig.
    assert set((run.record / "kubeconfigs.log").read_text().splitlines()) == {KUBECONFIG.splitlines()[0]}
    # The smoke test ran against the served model and passed.
    assert re.search(r"smoke: .*v0\.1\.0", run.log), run.log[-4000:]
    assert "rollout undo" not in (run.record / "kubectl.log").read_text()
    assert stages(gh) == {"staging": "v0.1.0"}
    story.commits["v0.1.0"] = sha


def test_a_merge_that_leaves_the_model_as_it_was_creates_nothing(story: Story) -> None:
    gh = story.gh
    tags = origin_tags(gh)
    pr = open_pull_request(gh, next(story.numbers), edit_docs("More documentation."), "docs: another line")
    sha = merge(story, pr, labels=("release:major",))
    run = release(story, sha)
    assert run.returncode == 0, run.log[-6000:]
    assert job_ran(run, "version and release")
    assert "v0.1.0" in run.log  # the plan names the version the model still is
    assert not job_ran(run, "deploy to staging")
    assert not job_ran(run, "deploy to prod")
    assert origin_tags(gh) == tags
    assert gh.git(gh.origin, "rev-parse", "main") == sha
    assert not list(run.record.glob("applied-*.yaml"))


def test_a_retrained_model_becomes_v0_2_0_in_staging(story: Story) -> None:
    gh = story.gh
    pr = open_pull_request(gh, next(story.numbers), retrain, "train: another seed")
    sha = merge(story, pr, labels=("release:minor",))
    run = release(story, sha)
    story.runs["v0.2.0"] = run
    assert run.returncode == 0, run.log[-6000:]
    assert "Running stage" not in run.log
    tags = origin_tags(gh)
    assert "model@v0.2.0" in tags
    assert tag_trailers(gh, "model@v0.2.0")["Gitml-Bump"] == "minor"
    assert overlay_version(gh, "main", "staging") == "v0.2.0"
    (path,) = applied(run)
    assert_applied_is_the_overlay(gh, path, gh.git(gh.origin, "rev-parse", "main"), "staging", "v0.2.0")
    # One version in staging at a time: v0.1.0 was unassigned there, and the history kept.
    assert stages(gh) == {"staging": "v0.2.0"}
    assert any(t.startswith("model#staging!#") for t in tags)
    story.commits["v0.2.0"] = sha


def open_and_merge_promotion(story: Story, version: str) -> tuple[Run, dict[str, Any], Run]:
    """promote.yml opens the pull request; its merge runs release.yml."""
    gh = story.gh
    pulls = story.world / "github" / "pulls"
    before = set(pulls.glob("*.json")) if pulls.is_dir() else set()
    opened = promote(story, version)
    assert opened.returncode == 0, opened.log[-6000:]
    (new,) = set(pulls.glob("*.json")) - before
    pull = json.loads(new.read_text())
    assert pull["base"] == "main"
    # The pull request changes the prod overlay and nothing else.
    changed = gh.git(gh.origin, "diff", "--name-only", "main", pull["head_sha"]).splitlines()
    assert changed == [OVERLAY.format("prod")]
    assert overlay_version(gh, pull["head_sha"], "prod") == (version or overlay_version(gh, "main", "staging"))
    pr = PullRequest(pull["number"], pull["head"], pull["head_sha"], REPOSITORY)
    sha = merge(story, pr)
    return opened, pull, release(story, sha)


def test_promotion_is_a_pull_request_whose_merge_deploys_production(story: Story) -> None:
    gh = story.gh
    opened, pull, merged = open_and_merge_promotion(story, "")
    assert pull["title"].startswith("Promote model v0.2.0 to production")
    body = pull["body"]
    assert "v0.2.0" in body
    # The version's model card and verdict (from its release), and staging's live figures.
    card = (story.world / "github" / "releases" / "model@v0.2.0" / "model_card.md").read_text()
    assert card.splitlines()[0] in body
    assert "pass" in body
    assert "requests" in body.lower()
    assert "staging" in (opened.record / "kubectl.log").read_text()
    # The merge deployed production and recorded it; no new version.
    assert merged.returncode == 0, merged.log[-6000:]
    assert job_ran(merged, "deploy to prod")
    assert not job_ran(merged, "deploy to staging")
    (path,) = applied(merged)
    assert_applied_is_the_overlay(gh, path, gh.git(gh.origin, "rev-parse", "main"), "prod", "v0.2.0")
    assert deployment(path)["metadata"]["namespace"] == "gitml-prod"
    assert stages(gh) == {"staging": "v0.2.0", "prod": "v0.2.0"}
    assert "model@v0.3.0" not in origin_tags(gh)


def test_rollback_is_the_same_with_an_earlier_version(story: Story) -> None:
    gh = story.gh
    prod_tags = {t for t in origin_tags(gh) if "#prod#" in t}
    _, pull, merged = open_and_merge_promotion(story, "v0.1.0")
    assert pull["title"].startswith("Roll back production to model v0.1.0")
    assert merged.returncode == 0, merged.log[-6000:]
    (path,) = applied(merged)
    assert_applied_is_the_overlay(gh, path, gh.git(gh.origin, "rev-parse", "main"), "prod", "v0.1.0")
    # A new assignment: the history only grows, and GTO agrees with the overlays.
    assert prod_tags < {t for t in origin_tags(gh) if "#prod#" in t}
    assert stages(gh) == {"staging": "v0.2.0", "prod": "v0.1.0"}
    assert overlay_version(gh, "main", "prod") == "v0.1.0"
    story.commits["rollback"] = gh.git(gh.origin, "rev-parse", "main")


def test_a_failed_smoke_test_rolls_the_deployment_back(story: Story) -> None:
    """Reverting the rollback (a person's pull request) ships v0.2.0 again, but the image serves
    another model under v0.2.0's name: the probe's score differs, and the Deployment goes back."""
    gh = story.gh
    tags = origin_tags(gh)

    # The revert: `git revert` of the rollback's merge, on a branch, as a pull request.
    pr_number = next(story.numbers)
    gh.git(gh.seed, "fetch", "-q", "origin")
    gh.git(gh.seed, "checkout", "-q", "-B", f"revert-{pr_number}", "origin/main")
    gh.git(gh.seed, "revert", "--no-edit", "-m", "1", story.commits["rollback"])
    head = gh.git(gh.seed, "rev-parse", "HEAD")
    gh.git(gh.seed, "push", "-q", "origin", f"HEAD:refs/heads/revert-{pr_number}")
    pr = PullRequest(pr_number, f"revert-{pr_number}", head, REPOSITORY)
    sha = merge(story, pr)
    assert overlay_version(gh, sha, "prod") == "v0.2.0"
    run = release(story, sha, env={"GITML_TEST_FAULT": "stale-image"})
    assert job_ran(run, "deploy to prod")
    assert run.returncode != 0
    kubectl = (run.record / "kubectl.log").read_text()
    assert "rollout undo deployment/gitml --namespace gitml-prod" in kubectl
    assert "score" in run.log
    # Nothing recorded: GTO still has v0.1.0 in production, which the cluster runs again.
    assert origin_tags(gh) == tags
    assert stages(gh) == {"staging": "v0.2.0", "prod": "v0.1.0"}
    state = json.loads((story.world / "cluster" / "gitml-prod" / "gitml.json").read_text())
    assert state["revisions"][-1]["image"].endswith(":v0.1.0")


def test_lineage_traces_each_version_from_git_alone(story: Story) -> None:
    """`gitml lineage` in a fresh clone with the tags: where v0.2.0 came from and where it ran."""
    gh = story.gh
    gto(gh, "show", "model")  # brings the clone up to date
    clone = gh.root / "gto-view"
    gh.git(clone, "checkout", "-q", "--detach", "origin/main")
    done = subprocess.run([str(BIN / "gitml"), "lineage", "v0.2.0"], cwd=clone, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    trailers = tag_trailers(gh, "model@v0.2.0")
    assert trailers["Gitml-Commit"] in text
    assert f"#{trailers['Gitml-Pull-Request']}" in text
    assert trailers["Gitml-Image"] in text
    assert "train.seed" in text  # the one param the retraining changed since v0.1.0
    assert "pass" in text
    assert re.search(r"deployed\s+staging\s+since \d{4}-\d\d-\d\d", text), text
    assert re.search(r"past stages\s+prod", text), text  # v0.2.0 ran in prod until the rollback
    unknown = subprocess.run([str(BIN / "gitml"), "lineage", "v9.9.9"], cwd=clone, capture_output=True, text=True)
    assert unknown.returncode == 1
    assert "v0.1.0, v0.2.0" in unknown.stderr


def test_a_staging_overlay_gto_does_not_match_is_deployed_by_the_next_merge(story: Story) -> None:
    """A pull request that sets the staging overlay (to try v0.1.0 there again): its merge releases
    nothing and deploys staging with the version the overlay names; an overlay whose deployment failed
    before is deployed again by the same rule."""
    gh = story.gh
    versions = {t for t in origin_tags(gh) if "@" in t}

    def staging_back_to_v0_1_0(repo: Path) -> None:
        path = repo / OVERLAY.format("staging")
        path.write_text(path.read_text().replace("v0.2.0", "v0.1.0"))

    pr = open_pull_request(gh, next(story.numbers), staging_back_to_v0_1_0, "staging: v0.1.0 again")
    sha = merge(story, pr)
    run = release(story, sha)
    assert run.returncode == 0, run.log[-6000:]
    assert "staging: deploy v0.1.0" in run.log
    assert job_ran(run, "deploy to staging")
    # Production is tried again too: its overlay still names v0.2.0, whose deployment failed before;
    # this time the image serves the right model, and GTO follows.
    assert "prod: deploy v0.2.0" in run.log
    assert job_ran(run, "deploy to prod")
    by_namespace = {deployment(path)["metadata"]["namespace"]: path for path in applied(run)}
    assert set(by_namespace) == {"gitml-staging", "gitml-prod"}
    assert_applied_is_the_overlay(gh, by_namespace["gitml-staging"], sha, "staging", "v0.1.0")
    assert_applied_is_the_overlay(gh, by_namespace["gitml-prod"], sha, "prod", "v0.2.0")
    assert {t for t in origin_tags(gh) if "@" in t} == versions
    assert stages(gh) == {"staging": "v0.1.0", "prod": "v0.2.0"}


def test_a_merge_whose_outputs_the_remote_lacks_registers_nothing(story: Story) -> None:
    """A pull request whose model never reached the DVC remote (its pipeline never pushed): the
    release pulls, finds it missing and stops, naming the fix; nothing is trained, tagged or deployed."""
    gh = story.gh
    tags = origin_tags(gh)

    def unpushed_model(repo: Path) -> None:
        lock = repo / "dvc.lock"
        text = lock.read_text()
        entry = re.search(r"path: models/threshold.json\n\s+hash: md5\n\s+md5: ([0-9a-f]{32})", text)
        assert entry is not None, "no models/threshold.json in dvc.lock"
        lock.write_text(text.replace(entry.group(1), "f" * 32))

    pr = open_pull_request(gh, next(story.numbers), unpushed_model, "evaluate: a threshold never pushed")
    run = release(story, merge(story, pr))
    assert job_ran(run, "version and release")
    assert run.returncode != 0
    assert "Outputs missing from the DVC remote" in run.log
    assert "dvc push" in run.log
    assert "Running stage" not in run.log
    assert origin_tags(gh) == tags
    assert not job_ran(run, "deploy to staging")
