"""deploy/runners/: the GPU runner scale set's values, its manifests and image, checked offline.

There is no Helm here and no cluster: the values are held to the keys ARC's chart accepts (read
from the chart and kept below), and the runner pod template, wrapped into a Pod, goes through the
same validators as deploy/k8s (kubernetes-validate --strict, checkov) with the plain manifests.
"""

from __future__ import annotations

import copy
import functools
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, run, tool
from tests.deploy.test_deploy import (
    OLDEST_KUBERNETES,
    SKIP_ANNOTATION,
    SKIP_VALUE,
    assert_rejected,
    checkov,
    failed_ids,
    hadolint,
    parse_dockerfile,
)

RUNNERS = REPO / "deploy" / "runners"
VALUES = RUNNERS / "gpu-values.yaml"
RUNNER_DOCKERFILE = RUNNERS / "Dockerfile"
README = RUNNERS / "README.md"

# ARC's runner scale set chart, the version gpu-values.yaml is written for and the README installs.
CHART_VERSION = "0.14.2"
# The runner version that chart's release ships (RUNNER_VERSION in ARC's Makefile at the tag
# gha-runner-scale-set-0.14.2): the runner image's tag.
RUNNER_VERSION = "2.334.0"
# The top-level keys of charts/gha-runner-scale-set/values.yaml at the tag gha-runner-scale-set-0.14.2
# of actions/actions-runner-controller, set or commented out there, plus `nameOverride`, which
# only its templates read. Helm ignores any other key without a word: a misspelt `minRunner`
# would leave the default. Read the new values.yaml when you bump CHART_VERSION.
CHART_KEYS = {
    "githubConfigUrl",
    "scaleSetLabels",
    "githubConfigSecret",
    "proxy",
    "maxRunners",
    "minRunners",
    "runnerGroup",
    "runnerScaleSetName",
    "githubServerTLS",
    "keyVault",
    "containerMode",
    "listenerTemplate",
    "listenerMetrics",
    "template",
    "controllerServiceAccount",
    "namespaceOverride",
    "annotations",
    "labels",
    "resourceMeta",
    "nameOverride",
}
GPU = "nvidia.com/gpu"
WORK_DIR = "/home/runner/_work"  # where the runner checks out and runs the job
CHART_REF = re.compile(r"oci://\S+/(?P<chart>gha-runner-scale-set(?:-controller)?)$")
PIPELINE = REPO / ".github" / "workflows" / "pipeline.yml"
# How pipeline.yml tells a GPU runner from its `runs-on` input, to check the driver first.
GPU_RUNNER_TEST = re.compile(r"contains\(inputs\.runs-on, '(?P<word>[^']+)'\)")


@functools.cache
def values() -> dict[str, Any]:
    loaded = yaml.safe_load(VALUES.read_text())
    assert isinstance(loaded, dict), f"{VALUES} is not a mapping"
    return loaded


def unknown_keys(candidate: dict[str, Any]) -> set[str]:
    return set(candidate) - CHART_KEYS


def as_pod(chart_values: dict[str, Any]) -> dict[str, Any]:
    """The runner pod ARC starts from `template` (default container mode): what the cluster admits."""
    template = chart_values["template"]
    metadata = {"name": f"{chart_values['runnerScaleSetName']}-runner", **copy.deepcopy(template.get("metadata", {}))}
    spec = copy.deepcopy(template["spec"])
    spec.setdefault("restartPolicy", "Never")  # the chart's default
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


@functools.cache
def rendered_manifests() -> str:
    result = run(tool("kubectl"), "kustomize", "deploy/runners")
    assert result.returncode == 0, result.stderr
    return result.stdout


def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(rendered_manifests()) if doc]


def one(kind: str) -> dict[str, Any]:
    [found] = [doc for doc in manifests() if doc["kind"] == kind]
    return found


def runner_pod() -> dict[str, Any]:
    pod = as_pod(values())
    pod["metadata"]["namespace"] = one("Namespace")["metadata"]["name"]
    return pod


def runner_container(pod: dict[str, Any]) -> dict[str, Any]:
    [container] = [c for c in pod["spec"]["containers"] if c["name"] == "runner"]
    assert isinstance(container, dict)
    return container


def write_all(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


# --- The values file ------------------------------------------------------------------------------


def test_values_use_only_keys_the_chart_reads() -> None:
    assert not unknown_keys(values()), f"not keys of gha-runner-scale-set {CHART_VERSION}: {unknown_keys(values())}"
    assert unknown_keys({**values(), "minRunner": 0}) == {"minRunner"}
    assert CHART_VERSION in VALUES.read_text().split("\n", 1)[0], "the header names the chart version"


def test_the_scale_set_is_ephemeral_scales_to_zero_and_is_kept_to_this_repository() -> None:
    chart_values = values()
    name = chart_values["runnerScaleSetName"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,44}", name), "the chart fails on names past 45 characters"
    assert chart_values["minRunners"] == 0, "an idle GPU runner holds a GPU node"
    assert chart_values["maxRunners"] >= 1
    # Scale sets are ephemeral by design; the container modes that would weaken the pod are off.
    assert "containerMode" not in chart_values, "dind needs a privileged container, kubernetes mode loses the GPU"
    # Credentials live in a Kubernetes secret made by hand, never inline in this file.
    assert isinstance(chart_values["githubConfigSecret"], str), "name a secret; do not put credentials here"
    url = chart_values["githubConfigUrl"].rstrip("/")
    owner_and_repository = url.split("://", 1)[1].split("/")[1:]
    if len(owner_and_repository) == 1:  # an organization: its runner group limits the repositories
        assert chart_values.get("runnerGroup") not in (None, "", "default", "Default"), (
            "an organization's default group serves every repository; use a group limited to this one"
        )
    else:  # a repository: only it can use the runners, and runner groups do not apply
        assert len(owner_and_repository) == 2, url
        assert chart_values.get("runnerGroup") in (None, "default", "Default")


def test_the_pipeline_knows_the_scale_set_for_a_gpu_runner() -> None:
    # The scale set's name is the whole of `runs-on`: pipeline.yml runs its NVIDIA driver check
    # when `runs-on` contains a word, which the name must then contain too.
    words = GPU_RUNNER_TEST.findall(PIPELINE.read_text()) if PIPELINE.is_file() else []
    if not words:
        pytest.skip("pipeline.yml does not tell GPU runners by their labels")
    name = values()["runnerScaleSetName"]
    assert any(word in name for word in words), f"{name!r} hides the GPU from pipeline.yml ({words})"


def test_the_pod_requests_a_gpu_on_the_gpu_pool() -> None:
    pod = as_pod(values())
    container = runner_container(pod)
    limits = container["resources"]["limits"]
    assert int(limits[GPU]) >= 1
    requested = container["resources"].get("requests", {}).get(GPU)
    assert requested is None or requested == limits[GPU], "Kubernetes wants an extended resource's request = limit"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    spec = pod["spec"]
    assert spec.get("nodeSelector") or spec.get("affinity", {}).get("nodeAffinity"), "pick the GPU node pool"
    tolerated = {t.get("key") for t in spec.get("tolerations", [])}
    assert GPU in tolerated, "GPU pools are tainted nvidia.com/gpu; without a toleration the pod never lands"


def test_the_pod_is_as_locked_down_as_a_runner_allows() -> None:
    pod = as_pod(values())
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"] + spec.get("initContainers", []):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] != 0
        assert context["allowPrivilegeEscalation"] is False
        assert context.get("privileged", False) is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    for volume in spec["volumes"]:
        assert set(volume) == {"name", "emptyDir"}, f"{volume['name']}: the pod keeps nothing past its job"
        assert "sizeLimit" in volume["emptyDir"], volume["name"]
    mounts = {m["mountPath"]: m["name"] for m in runner_container(pod)["volumeMounts"]}
    assert WORK_DIR in mounts, "the job's checkout, virtualenv and caches go on the size-limited work volume"


def test_the_image_and_the_pod_run_the_same_runner() -> None:
    [stage] = parse_dockerfile(RUNNER_DOCKERFILE.read_text())
    assert stage.image.endswith(f"/actions-runner:{RUNNER_VERSION}"), stage.image
    container = runner_container(as_pod(values()))
    assert container["image"].rpartition(":")[2] == RUNNER_VERSION, container["image"]
    user, _, group = stage.args_of("USER")[-1].partition(":")
    context = container["securityContext"]
    assert (int(user), int(group)) == (context["runAsUser"], context["runAsGroup"])


# --- The validators ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, None], ids=["oldest", "newest"])
def test_the_pod_and_the_manifests_match_the_kubernetes_schema(version: str | None, tmp_path: Path) -> None:
    docs = [runner_pod(), *manifests()]
    target = write_all(tmp_path / "runners.yaml", docs)
    pinned = ["--kubernetes-version", version] if version else []
    result = run(tool("kubernetes-validate"), "--strict", *pinned, target)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed for resource") == len(docs), result.stdout
    assert {"Namespace", "NetworkPolicy"} <= {doc["kind"] for doc in manifests()}


def pod_skips() -> list[tuple[str, str]]:
    """(check id, reason) of every `checkov.io/skipN` annotation on the pod template."""
    skips = []
    for key, value in (values()["template"].get("metadata", {}).get("annotations") or {}).items():
        if SKIP_ANNOTATION.fullmatch(key):
            match = SKIP_VALUE.fullmatch(value.strip())
            assert match, f"{key}: write `CKV_K8S_<n>=<reason>`, got {value!r}"
            skips.append((match["check"], " ".join(match["reason"].split())))
    return skips


def test_every_skip_says_why() -> None:
    assert pod_skips(), "the pod template carries its checkov skips"
    for check, reason in pod_skips():
        assert len(reason.split()) >= 8, f"{check}: give the reason in a sentence, not {reason!r}"


@pytest.mark.slow
def test_checkov_finds_nothing(tmp_path: Path) -> None:
    # Together, so that checkov sees the NetworkPolicy that selects the pod (CKV2_K8S_6).
    report = checkov("kubernetes", write_all(tmp_path / "runners.yaml", [runner_pod(), *manifests()]))
    summary = report["summary"]
    assert summary["failed"] == 0, failed_ids(report)
    assert summary["parsing_errors"] == 0
    assert summary["passed"] > 0
    assert summary["skipped"] == len(pod_skips()), "every skip is an annotation with its reason"


@pytest.mark.slow
def test_the_validators_catch_a_bad_pod(tmp_path: Path) -> None:
    bad = copy.deepcopy(values())
    spec = bad["template"]["spec"]
    del spec["securityContext"], spec["automountServiceAccountToken"]
    container = runner_container(as_pod(bad))
    [index] = [i for i, c in enumerate(spec["containers"]) if c["name"] == "runner"]
    spec["containers"][index] = {k: v for k, v in container.items() if k not in ("securityContext", "resources")}
    spec["containers"][index]["volumeMount"] = spec["containers"][index].pop("volumeMounts")  # strict rejects it
    target = write_all(tmp_path / "bad.yaml", [as_pod(bad)])
    assert_rejected(target, ["CKV_K8S_11", "CKV_K8S_13", "CKV_K8S_20", "CKV_K8S_23", "CKV_K8S_28", "CKV2_K8S_6"])


@pytest.mark.slow
def test_the_runner_image_passes_the_linters(tmp_path: Path) -> None:
    result = hadolint(RUNNER_DOCKERFILE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    target = tmp_path / "Dockerfile"
    target.write_text(RUNNER_DOCKERFILE.read_text())
    report = checkov("dockerfile", target)
    assert report["summary"]["failed"] == 0, failed_ids(report)
    skips = re.findall(r"^# checkov:skip=(\S+?):(.+)$", RUNNER_DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert report["summary"]["skipped"] == len(skips)
    for check, reason in skips:
        assert len(reason.split()) >= 8, f"{check}: give the reason in a sentence, not {reason!r}"


# --- The plain manifests -----------------------------------------------------------------------


def test_the_network_policy_holds_the_runner_pods() -> None:
    pod = runner_pod()
    policy = one("NetworkPolicy")
    assert policy["metadata"]["namespace"] == pod["metadata"]["namespace"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector
    assert all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items()), "the policy selects the runners"
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["spec"]["ingress"] == [], "a runner serves nothing"
    blocks = [peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule.get("to", []) if "ipBlock" in peer]
    for block in blocks:
        assert "169.254.0.0/16" in block.get("except", []), "the cloud metadata endpoint holds the node's credentials"


def test_the_namespace_enforces_the_restricted_pod_security_standard() -> None:
    labels = one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


# --- The README ----------------------------------------------------------------------------------

FENCE = re.compile(r"^ *```(?P<lang>\w*)\n(?P<body>.*?)^ *```", re.MULTILINE | re.DOTALL)
FILE_OPTIONS = {"-f", "--filename", "--values", "-k", "--kustomize"}


def shell_commands(markdown: str) -> list[list[str]]:
    """The commands of a markdown's bash blocks, as words: comments dropped, continuations joined."""
    commands = []
    for block in FENCE.finditer(markdown):
        if block["lang"] not in ("bash", "sh", "shell"):
            continue
        for line in block["body"].replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words)
    return commands


def named_paths(words: list[str], root: Path) -> list[str]:
    """Words of a command that name a path in the repository: they start at one of its top-level
    entries (`deploy/...`), or follow an option that takes a file (`--values x.yaml`)."""
    top = {p.name for p in root.iterdir()}
    paths = []
    for i, word in enumerate(words):
        value = word.split("=", 1)[1] if word.startswith("-") and "=" in word else word
        after_file_option = i > 0 and words[i - 1] in FILE_OPTIONS
        if "://" in value or value.startswith(("-", "/", "~", "$")):
            continue
        if after_file_option or (value.split("/", 1)[0] in top and "/" in value):
            paths.append(value)
    return paths


def test_named_paths_finds_files_in_commands(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    words = shlex.split("helm install x --values deploy/runners/gpu-values.yml oci://h/c --set a=b ./config.sh")
    assert named_paths(words, tmp_path) == ["deploy/runners/gpu-values.yml"]
    assert named_paths(["kubectl", "apply", "-k", "deploy/runners"], tmp_path) == ["deploy/runners"]


def test_every_file_the_readme_names_in_a_command_exists() -> None:
    commands = shell_commands(README.read_text())
    named = [path for words in commands for path in named_paths(words, REPO)]
    assert VALUES.relative_to(REPO).as_posix() in named, "the README installs with the values file"
    for path in named:
        assert (REPO / path).exists(), f"deploy/runners/README.md names {path}, which does not exist"


def test_the_readme_installs_the_charts_the_values_are_written_for() -> None:
    installs = [w for w in shell_commands(README.read_text()) if w[:2] == ["helm", "install"]]
    charts = set()
    for words in installs:
        [chart] = [m["chart"] for w in words if (m := CHART_REF.fullmatch(w))]
        charts.add(chart)
        assert words[words.index("--version") + 1] == CHART_VERSION, words
        if chart == "gha-runner-scale-set":
            assert words[words.index("--values") + 1] == VALUES.relative_to(REPO).as_posix()
            assert words[words.index("--namespace") + 1] == one("Namespace")["metadata"]["name"]
    assert charts == {"gha-runner-scale-set-controller", "gha-runner-scale-set"}


def test_the_readme_tells_the_pipeline_the_scale_sets_name() -> None:
    variables = [w for w in shell_commands(README.read_text()) if w[:4] == ["gh", "variable", "set", "TRAINING_RUNNER"]]
    labels = [yaml.safe_load(w[w.index("--body") + 1]) for w in variables]
    assert [values()["runnerScaleSetName"]] in labels, labels
    assert any("self-hosted" in group and "gpu" in group for group in labels), "and a plain runner's labels"
