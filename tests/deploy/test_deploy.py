"""deploy/: the image recipe and the Kubernetes overlays pass the linters, and say what the server needs.

The linters (hadolint, kubectl's kustomize, kubernetes-validate, checkov) run offline; no image is
built and no cluster is reached. The assertions on the rendered manifests are the contract between
the server (src/gitml/serve) and the cluster: probes, ports, the prediction log's volume, versions.
"""

from __future__ import annotations

import functools
import json
import posixpath
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, run, tool

DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
OVERLAYS = ["staging", "prod"]
# The oldest Kubernetes minor the manifests are written for (autoscaling/v2, policy/v1 and the
# PDB's unhealthyPodEvictionPolicy are all on by default there); the newest is the tool's default.
OLDEST_KUBERNETES = "1.30.0"
# What the server reads at run time, and nothing else from the repository: the model bundle
# (gitml.bundle) and params.yaml for the server's own settings (its `serve` section).
SERVER_FILES = {
    "params.yaml", "models/model.onnx", "models/preprocess.json", "models/threshold.json", "models/manifest.json",
}  # fmt: skip
VERSION_LABEL = "gitml.dev/model-version"
SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d+")
# A checkov skip reads `CKV_..._<n>=<why>`; the why has to be a sentence, not a placeholder.
SKIP_VALUE = re.compile(r"(?P<check>CKV2?_[A-Z0-9]+_\d+)=(?P<reason>.+)", re.DOTALL)


# --- The Dockerfile, read the way Docker reads it -------------------------------------------------


@dataclass
class Stage:
    """One FROM ... section of a Dockerfile, as (keyword, arguments) pairs."""

    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages of a Dockerfile: comments dropped, backslash continuations joined."""
    stages: list[Stage] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment and blank lines, inside continuations too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            image, _, name = args.partition(" AS ") if " AS " in args else args.partition(" as ")
            stages.append(Stage(image=image.strip(), name=name.strip() or None))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON (exec) form of CMD, ENTRYPOINT or HEALTHCHECK's CMD; fails on the shell form."""
    parsed = json.loads(args)
    assert isinstance(parsed, list), f"not exec form: {args}"
    return [str(a) for a in parsed]


def copy_sources(args: str) -> tuple[dict[str, str], list[str]]:
    """The --flags and the sources of a COPY (its last word is the destination)."""
    words = exec_form(args) if args.startswith("[") else args.split()
    flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1]


@functools.cache
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def final_stage() -> Stage:
    return stages()[-1]


def context_copies() -> list[str]:
    """Every path COPY takes from the build context (not from another stage), normalised."""
    sources = []
    for stage in stages():
        for args in stage.args_of("COPY"):
            flags, paths = copy_sources(args)
            if "from" not in flags:
                sources += [posixpath.normpath(p) for p in paths]
    return sources


# --- .dockerignore, matched the way BuildKit matches it ------------------------------------------


def dockerignore_patterns(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per line, as moby's ignorefile.ReadAll and patternmatcher compile them.

    Go filepath.Match syntax: `*` and `?` stop at `/`, `[...]` is a class; `**` spans directories.
    """
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = posixpath.normpath(line[1:].strip() if exception else line)
        if len(pattern) > 1 and pattern.startswith("/"):
            pattern = pattern[1:]
        regex, i = "", 0
        while i < len(pattern):
            ch = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                regex += ".*" if i == len(pattern) else "(.*/)?"
                continue
            if ch == "*":
                regex += "[^/]*"
            elif ch == "?":
                regex += "[^/]"
            elif ch == "\\" and i + 1 < len(pattern):
                i += 1
                regex += re.escape(pattern[i])
            elif ch in "[]^-":
                regex += ch
            else:
                regex += re.escape(ch)
            i += 1
        patterns.append((exception, re.compile(regex)))
    return patterns


def is_ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it or a parent wins."""
    parts = posixpath.normpath(path).split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for exception, regex in patterns:
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not exception
    return ignored


@functools.cache
def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    return dockerignore_patterns(DOCKERIGNORE.read_text())


def dvc_outs() -> set[str]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    outs: set[str] = set()
    for stage in spec["stages"].values():
        for out in stage.get("outs", []):
            outs.add(out if isinstance(out, str) else next(iter(out)))
    return outs


def committed(path: str) -> list[str]:
    listed = run("git", "ls-files", "--", path)
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.splitlines()


def test_dockerignore_matcher_follows_docker() -> None:
    # The examples of Docker's .dockerignore reference, and how `**`, `!` and parent directories behave.
    docs = dockerignore_patterns("*/temp*\n*/*/temp*\ntemp?\n**/*.go\n*.md\n!README*.md\nREADME-secret.md\n")
    assert is_ignored("somedir/temporary.txt", docs)
    assert is_ignored("somedir/temp/file", docs)  # the directory matches, so does everything in it
    assert is_ignored("somedir/subdir/temp.txt", docs)
    assert is_ignored("tempa", docs)
    assert not is_ignored("tempab", docs)
    assert is_ignored("main.go", docs)
    assert is_ignored("a/b/c.go", docs)
    assert is_ignored("CHANGES.md", docs)
    assert not is_ignored("README.md", docs)
    assert is_ignored("README-secret.md", docs)
    assert not is_ignored("src/main.py", docs)
    allow = dockerignore_patterns("*\n!src/\n!models/a.onnx\n/**/__pycache__\n")
    assert not is_ignored("src/pkg/mod.py", allow)
    assert is_ignored("src/pkg/__pycache__/mod.cpython-311.pyc", allow)
    assert not is_ignored("models/a.onnx", allow)
    assert is_ignored("models/a.ckpt", allow)
    assert is_ignored("srcx/mod.py", allow)


def test_every_copy_source_is_in_the_repository() -> None:
    outs = dvc_outs()
    sources = context_copies()
    assert sources, "the Dockerfile copies nothing from the build context"
    for source in sources:
        if source in outs:
            continue  # a DVC output: present after `dvc pull` or `make run`, not in git
        assert committed(source), f"COPY {source}: neither committed nor an out in dvc.yaml"


def test_every_copy_source_passes_the_dockerignore() -> None:
    patterns = ignore_patterns()
    for source in context_copies():
        files = committed(source) or [source]  # a directory: every committed file in it
        let_through = [f for f in files if not is_ignored(f, patterns)]
        assert let_through, f"COPY {source}: .dockerignore leaves it out of the build context"
        assert not [f for f in files if f.endswith(".py") and is_ignored(f, patterns)], source


@pytest.mark.parametrize(
    "path", [".git/HEAD", ".venv/bin/python", "data/raw/adult.data", "models/model.ckpt", "reports/metrics.json",
             "dvclive/metrics.json", "tests/conftest.py", ".env", "src/gitml/__pycache__/cli.cpython-311.pyc",
             "src/gitml.egg-info/PKG-INFO", ".dvc/cache/files/md5/00/0"]
)  # fmt: skip
def test_dockerignore_keeps_the_context_small(path: str) -> None:
    assert is_ignored(path, ignore_patterns())


def test_the_image_holds_exactly_the_files_the_server_reads() -> None:
    final = final_stage()
    copied = set()
    for args in final.args_of("COPY"):
        flags, paths = copy_sources(args)
        if "from" not in flags:
            copied |= {posixpath.normpath(p) for p in paths}
    assert copied == SERVER_FILES
    assert "models/model.ckpt" in dvc_outs(), "the checkpoint moved: check that the image still leaves it out"


def test_the_builder_installs_the_serve_and_logs_extras_only() -> None:
    installs = [
        (stage, args) for stage in stages() for args in stage.args_of("RUN") if re.search(r"\bpip3? install\b", args)
    ]
    assert len(installs) == 1, installs
    stage, line = installs[0]
    assert stage is not final_stage(), "install in a builder stage; the final stage copies the venv"
    # The server, and its log shipper (`gitml ship-logs`, the same image in a sidecar).
    assert re.search(r"""(?<![\w-])['"]?\.\[serve,logs\]['"]?(?!\S)""", line), line
    assert "-c requirements/lock.txt" in line or "--constraint requirements/lock.txt" in line, line
    assert "--no-cache-dir" in line, line
    for forbidden in ("pipeline", "torch", "dev]", " -e ", "--editable"):
        assert forbidden not in line, f"{forbidden!r} in {line}"
    venv = [
        paths for flags, paths in map(copy_sources, final_stage().args_of("COPY")) if flags.get("from") == stage.name
    ]
    assert venv == [["/opt/venv"]], "the final stage copies the venv, and only the venv, from the builder"


def test_the_image_runs_the_server_as_a_numeric_non_root_user() -> None:
    final = final_stage()
    users = final.args_of("USER")
    assert users, "the final stage sets no USER: the server would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), f"USER {users[-1]}: numeric, so Kubernetes' runAsNonRoot can check it"
    assert int(user) != 0
    assert not group or (group.isdigit() and int(group) != 0), users[-1]


def test_the_image_pins_its_base_and_carries_the_versions() -> None:
    for stage in stages():
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", stage.image), stage.image
    assert len({s.image for s in stages()}) == 1, "the venv's interpreter comes from the base: use one base"
    final = final_stage()
    args = {a.split("=")[0] for a in final.args_of("ARG")}
    assert {"MODEL_VERSION", "GIT_SHA"} <= args
    env = " ".join(final.args_of("ENV"))
    for setting in ("GITML_MODEL_VERSION=${MODEL_VERSION}", "GITML_GIT_SHA=${GIT_SHA}", "PYTHONDONTWRITEBYTECODE=1",
                    "PYTHONUNBUFFERED=1", "PATH=/opt/venv/bin:$PATH"):  # fmt: skip
        assert setting in env, setting
    labels = " ".join(final.args_of("LABEL"))
    assert 'org.opencontainers.image.version="${MODEL_VERSION}"' in labels
    assert 'org.opencontainers.image.revision="${GIT_SHA}"' in labels


def server_command() -> list[str]:
    final = final_stage()
    return exec_form(final.args_of("ENTRYPOINT")[-1]) + exec_form(final.args_of("CMD")[-1])


def option(command: list[str], name: str) -> str:
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def test_the_image_starts_the_server_and_checks_its_health() -> None:
    command = server_command()
    assert command[:2] == ["gitml", "serve"], command
    assert option(command, "--host") == "0.0.0.0"
    port = option(command, "--port")
    assert final_stage().args_of("EXPOSE") == [port]
    healthcheck = final_stage().args_of("HEALTHCHECK")
    assert len(healthcheck) == 1
    probe = exec_form(healthcheck[0].split(" CMD ", 1)[1])
    assert probe[0] == "python", "no curl or wget in the slim image"
    assert f"http://127.0.0.1:{port}/health" in probe[-1]


def test_hadolint_pragmas_give_reasons() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#"), f"line {i + 1}: say why in a comment above the pragma"
            assert "hadolint" not in before, f"line {i + 1}: say why in a comment above the pragma"


def hadolint(dockerfile: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """hadolint at the style threshold, with an explicit empty config so no user-level one can hide a finding."""
    config = tmp_path / "hadolint.yaml"
    config.write_text("ignored: []\n")
    return run(tool("hadolint"), "--no-color", "--config", config, "--failure-threshold", "style", dockerfile)


@pytest.mark.slow
def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install fastapi\nCOPY . /app\nCMD python app.py\n")
    result = run(tool("hadolint"), "--no-color", bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3042", "DL3025"):
        assert rule in result.stdout, result.stdout


def checkov(framework: str, target: Path) -> dict[str, Any]:
    """checkov's JSON report on one file, offline (--skip-download), run outside the repository."""
    result = run(
        tool("checkov"), "--framework", framework, "--file", target, "--quiet", "--compact", "--skip-download",
        "--output", "json", cwd=target.parent,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stdout + result.stderr
    report = json.loads(result.stdout)
    if isinstance(report, list):  # one report per framework when several ran
        [report] = [r for r in report if r["check_type"] == framework]
    assert isinstance(report, dict), result.stdout
    return report


def failed_ids(report: dict[str, Any]) -> list[str]:
    return sorted({c["check_id"] for c in report["results"]["failed_checks"]})


def assert_rejected(manifests: Path, checks: list[str]) -> None:
    """kubernetes-validate --strict refuses the file, and checkov fails every one of `checks` on it."""
    assert run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", OLDEST_KUBERNETES, manifests).returncode
    caught = failed_ids(checkov("kubernetes", manifests))
    for check in checks:
        assert check in caught, caught


@pytest.mark.slow
def test_checkov_passes_the_dockerfile(tmp_path: Path) -> None:
    target = tmp_path / "Dockerfile"
    shutil.copy(DOCKERFILE, target)
    report = checkov("dockerfile", target)
    assert report["summary"]["failed"] == 0, failed_ids(report)
    assert report["summary"]["skipped"] == 0
    assert report["summary"]["passed"] > 0


# --- The Kubernetes overlays --------------------------------------------------------------------


@functools.cache
def rendered(overlay: str) -> str:
    """`kubectl kustomize` of one overlay: the YAML `kubectl apply -k` would send."""
    result = run(tool("kubectl"), "kustomize", f"deploy/k8s/overlays/{overlay}")
    assert result.returncode == 0, result.stderr
    return result.stdout


def manifests(overlay: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered(overlay)) if doc]


def one(overlay: str, kind: str) -> dict[str, Any]:
    found = [doc for doc in manifests(overlay) if doc["kind"] == kind]
    assert len(found) == 1, f"{overlay}: {len(found)} {kind}s"
    return found[0]


def pod_spec(overlay: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(overlay, "Deployment")["spec"]["template"]["spec"]
    return spec


def server(overlay: str) -> dict[str, Any]:
    [container] = pod_spec(overlay)["containers"]
    assert isinstance(container, dict)
    return container


def pod_labels(overlay: str) -> dict[str, str]:
    labels: dict[str, str] = one(overlay, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def checkov_skips(overlay: str) -> list[tuple[str, str, str]]:
    """(resource, check id, reason) for every `checkov.io/skipN` annotation in the rendered overlay."""
    skips = []
    for doc in manifests(overlay):
        resource = f"{doc['kind']}/{doc['metadata']['name']}"
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if SKIP_ANNOTATION.fullmatch(key):
                match = SKIP_VALUE.fullmatch(value.strip())
                assert match, f"{resource} {key}: write `CKV_K8S_<n>=<reason>`, got {value!r}"
                skips.append((resource, match["check"], " ".join(match["reason"].split())))
    return skips


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, None], ids=["oldest", "newest"])
def test_overlay_matches_the_kubernetes_schema(overlay: str, version: str | None, tmp_path: Path) -> None:
    built = tmp_path / f"{overlay}.yaml"
    built.write_text(rendered(overlay))
    pinned = ["--kubernetes-version", version] if version else []
    result = run(tool("kubernetes-validate"), "--strict", *pinned, built)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = {doc["kind"] for doc in manifests(overlay)}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert result.stdout.count("passed for resource") == len(manifests(overlay)), result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_finds_nothing(overlay: str, tmp_path: Path) -> None:
    built = tmp_path / f"{overlay}.yaml"
    built.write_text(rendered(overlay))
    report = checkov("kubernetes", built)
    summary = report["summary"]
    assert summary["failed"] == 0, failed_ids(report)
    assert summary["parsing_errors"] == 0
    assert summary["resource_count"] >= len(manifests(overlay))  # checkov also counts the pod template
    assert summary["passed"] > 0
    # Each skip is an annotation with its reason (checked below); no skip comes from anywhere else.
    assert summary["skipped"] == len({(resource, check) for resource, check, _ in checkov_skips(overlay)})


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_checkov_skip_says_why(overlay: str) -> None:
    for resource, check, reason in checkov_skips(overlay):
        assert len(reason.split()) >= 8, f"{resource} {check}: give the reason in a sentence, not {reason!r}"


@pytest.mark.slow
def test_the_validators_catch_a_bad_manifest(tmp_path: Path) -> None:
    docs = manifests("staging")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    del deployment["metadata"]["annotations"]
    spec = deployment["spec"]["template"]["spec"]
    del spec["securityContext"], spec["automountServiceAccountToken"]
    container = spec["containers"][0]
    for key in ("securityContext", "livenessProbe", "readinessProbe", "resources"):
        del container[key]
    container["readinesProbe"] = {"httpGet": {"path": "/ready", "port": "http"}}  # a typo strict mode rejects
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump_all(docs))
    assert_rejected(bad, ["CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_38", "CKV_K8S_43"])


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_check_health_and_readiness_on_the_http_port(overlay: str) -> None:
    container = server(overlay)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(option(server_command(), "--port"))}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    annotations = one(overlay, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(ports["http"])
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_runs_locked_down(overlay: str) -> None:
    spec = pod_spec(overlay)
    assert spec["automountServiceAccountToken"] is False
    account = one(overlay, "ServiceAccount")
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    assert account["automountServiceAccountToken"] is False
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    image_user = final_stage().args_of("USER")[-1].split(":")
    for container in spec["containers"] + spec.get("initContainers", []):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == pod["runAsUser"], "the pod and the container run as one user"
        assert str(context["runAsUser"]) == image_user[0], "the image's USER and the pod agree"
        assert context["runAsGroup"] == pod["runAsGroup"] != 0
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context.get("privileged", False) is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{container['name']}: {kind}"
        assert container["imagePullPolicy"] == "Always"


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_server_runs_the_image_command_and_writes_where_it_may(overlay: str) -> None:
    container = server(overlay)
    command = container.get("command", ["gitml"]) + container["args"]
    assert command == server_command(), "the Deployment and the image start the server the same way"
    volumes = {v["name"]: v for v in pod_spec(overlay)["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # The root filesystem is read-only: the prediction log and /tmp are the only writable paths.
    for path in (option(command, "--log-dir"), "/tmp"):
        assert path in mounts, f"{path} is not mounted: the read-only root filesystem would refuse writes"
        assert not mounts[path].get("readOnly", False)
        assert "subPath" not in mounts[path]
        volume = volumes[mounts[path]["name"]]
        assert "emptyDir" in volume or "persistentVolumeClaim" in volume, volume


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_leaves_the_endpoints_before_it_drains(overlay: str) -> None:
    pause = server(overlay)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep", pause
    grace = pod_spec(overlay)["terminationGracePeriodSeconds"]
    # After the pause: uvicorn's 20 s for in-flight requests (gitml serve), then the log's flush,
    # then the log shipper's last round (stopped after the server, within the same grace period).
    assert grace >= int(pause[1]) + 20 + 10 + 20, f"{grace} s leaves the prediction log no time to flush and ship"


def shipper(overlay: str) -> dict[str, Any]:
    [sidecar] = [c for c in pod_spec(overlay).get("initContainers", []) if c["name"] == "log-shipper"]
    assert isinstance(sidecar, dict)
    return sidecar


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_log_shipper_is_a_native_sidecar_on_the_servers_log_volume(overlay: str) -> None:
    """Started before the server and stopped after it (an init container that restarts Always), it
    ships the files the server closed on SIGTERM; same image, its own command."""
    sidecar, container = shipper(overlay), server(overlay)
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["image"] == container["image"], "one image: the model's version, the shipper's code"
    assert sidecar.get("command", ["gitml"]) == ["gitml"]
    args = sidecar["args"]
    assert args[0] == "ship-logs"
    assert option(args, "--log-dir") == option(server_command(), "--log-dir")
    assert float(option(args, "--watch")) > 0
    assert "--to" not in args  # the URL comes from the environment, so a Secret or an overlay can set it
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["GITML_LOG_STORAGE"]["value"].startswith(("s3://", "gs://"))
    assert env["GITML_LOG_STORAGE"]["value"].endswith("/$(POD_NAMESPACE)")  # staging and prod apart
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert sidecar["envFrom"] == [{"secretRef": {"name": "gitml-log-storage", "optional": True}}]
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    server_mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    log_dir = option(args, "--log-dir")
    assert mounts[log_dir]["name"] == server_mounts[log_dir]["name"]
    assert not mounts[log_dir].get("readOnly", False), "the shipper removes each file it has shipped"
    assert sidecar["securityContext"] == container["securityContext"]
    assert sidecar["resources"]["limits"]["memory"] == sidecar["resources"]["requests"]["memory"]
    assert {p.get("protocol", "TCP") for p in sidecar.get("ports", [])} <= {"TCP"}


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_model_version_is_one_value(overlay: str) -> None:
    deployment = one(overlay, "Deployment")
    version = pod_labels(overlay)[VERSION_LABEL]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", version), f"a GTO semver tag, not {version!r}"
    assert deployment["metadata"]["labels"][VERSION_LABEL] == version
    [env] = [e for e in server(overlay)["env"] if e["name"] == "GITML_MODEL_VERSION"]
    # Read from the pod's own label, so the two cannot drift apart; a literal value must equal it.
    if "valueFrom" in env:
        assert env["valueFrom"] == {"fieldRef": {"fieldPath": f"metadata.labels['{VERSION_LABEL}']"}}
    else:
        assert env["value"] == version
    # The image bakes in the model, so its tag is the model version too.
    image = server(overlay)["image"]
    assert image.rpartition("/")[2].split("@")[0].partition(":")[2] == version, image


@pytest.mark.slow
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_autoscaler_budget_service_and_policy_find_the_pods(overlay: str) -> None:
    deployment = one(overlay, "Deployment")
    labels = pod_labels(overlay)
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    assert VERSION_LABEL not in deployment["spec"]["selector"]["matchLabels"], "selectors are immutable"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count; apply would reset it"
    hpa = one(overlay, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"], "Deployment", deployment["metadata"]["name"],
    )  # fmt: skip
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = one(overlay, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    service = one(overlay, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert selects(service["spec"]["selector"], labels)
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(80, "http")]
    policy = one(overlay, "NetworkPolicy")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["http"]
    # Out: DNS, and HTTPS to the object store the log shipper writes to; nothing else.
    assert sorted((p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]) == [
        (53, "TCP"), (53, "UDP"), (443, "TCP"),
    ]  # fmt: skip
    assert "Egress" in policy["spec"]["policyTypes"]
    for spread in pod_spec(overlay)["topologySpreadConstraints"]:
        assert selects(spread["labelSelector"]["matchLabels"], labels)
    namespaces = {doc["metadata"].get("namespace") for doc in manifests(overlay)}
    assert namespaces == {f"gitml-{overlay}"}


def disruptions_allowed(pdb: dict[str, Any], pods: int) -> int:
    """How many of `pods` healthy pods a PodDisruptionBudget lets an eviction take at once."""
    spec = pdb["spec"]

    def count(value: int | str, round_up: bool) -> int:
        if isinstance(value, int):
            return value
        share = int(value.rstrip("%")) * pods
        return -(-share // 100) if round_up else share // 100

    if "maxUnavailable" in spec:
        return min(pods, count(spec["maxUnavailable"], round_up=True))
    return max(0, pods - count(spec["minAvailable"], round_up=True))


@pytest.mark.slow
def test_prod_is_bigger_and_stricter_than_staging() -> None:
    staging, prod = (server(o) for o in OVERLAYS)
    # One image per version, pushed once (release.yml), under the one name both overlays give.
    assert staging["image"].rsplit(":", 1)[0] == prod["image"].rsplit(":", 1)[0]
    hpa = {o: one(o, "HorizontalPodAutoscaler")["spec"] for o in OVERLAYS}
    assert hpa["prod"]["minReplicas"] > hpa["staging"]["minReplicas"]
    assert hpa["prod"]["maxReplicas"] > hpa["staging"]["maxReplicas"]
    pdb = {o: one(o, "PodDisruptionBudget") for o in OVERLAYS}
    for pods in range(2, hpa["prod"]["maxReplicas"] + 1):
        assert disruptions_allowed(pdb["prod"], pods) <= disruptions_allowed(pdb["staging"], pods), pods
    lowest = hpa["prod"]["minReplicas"]
    assert 1 <= disruptions_allowed(pdb["prod"], lowest) < lowest, "prod must stay up and still let nodes drain"
    assert disruptions_allowed(pdb["prod"], hpa["prod"]["maxReplicas"]) < disruptions_allowed(
        pdb["staging"], hpa["prod"]["maxReplicas"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_argo_cd_application_syncs_its_overlay_into_its_namespace(overlay: str) -> None:
    """deploy/argocd/<env>.yaml: an Application over exactly the overlay deploy.yml renders, in the
    overlay's own namespace, from main; only staging syncs by itself."""
    app = yaml.safe_load((REPO / "deploy" / "argocd" / f"{overlay}.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    source, destination = app["spec"]["source"], app["spec"]["destination"]
    assert source["path"] == f"deploy/k8s/overlays/{overlay}"
    assert (REPO / source["path"] / "kustomization.yaml").is_file()
    assert source["targetRevision"] == "main"
    assert destination["namespace"] == one(overlay, "Deployment")["metadata"]["namespace"]
    automated = app["spec"].get("syncPolicy", {}).get("automated")
    assert (automated is not None) == (overlay == "staging")
    if automated:
        assert automated == {"prune": True, "selfHeal": True}
    # The HorizontalPodAutoscaler owns the replica count; the Deployment writes none.
    (ignored,) = app["spec"]["ignoreDifferences"]
    assert ignored["jsonPointers"] == ["/spec/replicas"]
    assert "replicas" not in one(overlay, "Deployment")["spec"]
