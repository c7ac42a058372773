"""The deploy job's smoke test: is the server at URL up, serving the version just deployed, scoring as tested?

`gitml smoke URL --version V` waits for /ready to answer 200, checks that /version names V, and
posts the manifest's probe record to /predict: the score must equal the one the evaluate stage
recorded for that record (models/manifest.json `probe`), so the image, the bundle in it and the
runtime together score as the gated model did. The standard library and gitml's core only: the
deploy job installs the release extra (gitml and GTO), no server and no PyTorch.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.release.overlay import parse_version

if TYPE_CHECKING:
    from gitml.bundle import Probe

Handler = Callable[[Paths, argparse.Namespace], str]

TOLERANCE = 1e-6  # the largest difference between the served and the recorded probe score
POLL = 0.5  # seconds between two /ready requests
REQUEST_TIMEOUT = 10.0  # seconds one request may take
ARTIFACT = "model"  # the GTO artifact: its versions are tags model@vX.Y.Z
MANIFEST = "models/manifest.json"


def parse_probe(manifest: Any, where: str) -> Probe:
    """The probe of a parsed manifest.json, which is checked whole as every reader of the bundle checks it."""
    from gitml.bundle import Manifest  # NumPy: not at `gitml` start-up

    return Manifest.parse(manifest, where).probe


def read_probe(path: Path) -> Probe:
    """The probe of a manifest.json file."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GitmlError(f"{path}: not found; pass the model bundle's manifest.json with --manifest.") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GitmlError(f"{path}: cannot be read as JSON ({exc}).") from exc
    return parse_probe(manifest, str(path))


def tagged_probe(root: Path, version: str) -> Probe:
    """The probe of models/manifest.json at the version's tag (model@V), read with git."""
    ref = f"{ARTIFACT}@{version}"
    done = subprocess.run(["git", "show", f"{ref}:{MANIFEST}"], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GitmlError(
            f"cannot read {MANIFEST} at {ref} ({done.stderr.strip()}); is {version} a registered version "
            "(`gto show model`) and are the tags fetched (`git fetch --tags`)? Or pass --manifest FILE."
        )
    try:
        manifest = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise GitmlError(f"{ref}:{MANIFEST} is not valid JSON ({exc}).") from exc
    return parse_probe(manifest, f"{ref}:{MANIFEST}")


@dataclass(frozen=True)
class Answer:
    status: int
    body: str

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except json.JSONDecodeError:
            return None

    def brief(self) -> str:
        body = " ".join(self.body.split())
        return f"HTTP {self.status}: {body[:300] or '(empty body)'}"


def request(url: str, body: Any = None, timeout: float = REQUEST_TIMEOUT) -> Answer:
    """GET url (or POST body as JSON): its status and body, whatever the status. OSError if no answer came."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers = {"accept": "application/json", **({"content-type": "application/json"} if data else {})}
    req = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return Answer(response.status, response.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode("utf-8", "replace"))
    except http.client.HTTPException as exc:  # a malformed answer
        raise OSError(f"{type(exc).__name__}: {exc}") from exc


def _reason(exc: OSError) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return str(reason) or type(reason).__name__


def wait_ready(base: str, timeout: float, poll: float = POLL) -> str:
    """Ask /ready every `poll` seconds until it answers 200; an error naming the last answer after `timeout`."""
    url = f"{base}/ready"
    started = time.monotonic()
    deadline = started + timeout
    tries = 0
    while True:
        tries += 1
        try:
            answer = request(url, timeout=max(0.1, min(REQUEST_TIMEOUT, deadline - time.monotonic())))
            if answer.status == 200:
                return f"smoke: {url} answered 200 after {time.monotonic() - started:.1f} s"
            last = answer.brief()
        except OSError as exc:
            last = f"no answer ({_reason(exc)})"
        left = deadline - time.monotonic()
        if left <= 0:
            raise GitmlError(
                f"{url} did not answer 200 within {timeout:g} s ({tries} tries); the last answer: {last}. "
                "Check the pods (`kubectl get pods`, `kubectl logs`) and the URL."
            )
        time.sleep(min(poll, left))


def check_version(base: str, version: str) -> str:
    """/version names the version deployed."""
    url = f"{base}/version"
    try:
        answer = request(url)
    except OSError as exc:
        raise GitmlError(f"{url}: no answer ({_reason(exc)}); expected model_version {version}.") from exc
    body = answer.json()
    if answer.status != 200 or not isinstance(body, dict):
        raise GitmlError(f"{url}: expected 200 with model_version {version}, got {answer.brief()}.")
    served = body.get("model_version")
    if served != version:
        raise GitmlError(
            f"{url}: expected model_version {version}, got {served!r}: the pods run another model version. "
            "Check the image tag and the GITML_MODEL_VERSION the Deployment sets."
        )
    return f"smoke: {url} names model_version {version}"


def check_probe(base: str, version: str, probe: Probe) -> str:
    """/predict scores the probe record as the evaluate stage did."""
    url = f"{base}/predict"
    try:
        answer = request(url, probe.record)
    except OSError as exc:
        raise GitmlError(f"{url}: no answer to the probe record ({_reason(exc)}).") from exc
    body = answer.json()
    score = body.get("score") if isinstance(body, dict) else None
    if answer.status != 200 or isinstance(score, bool) or not isinstance(score, int | float):
        raise GitmlError(
            f"{url}: expected 200 with a score for the probe record (expected score {probe.score:.6f}), "
            f"got {answer.brief()}."
        )
    if not abs(float(score) - probe.score) <= TOLERANCE:
        raise GitmlError(
            f"{url}: the probe record scored {float(score):.9f}, expected {probe.score:.9f} (the manifest's probe "
            f"score; difference {abs(float(score) - probe.score):.3g} > {TOLERANCE:g}): the served model does not "
            "score as the released one did."
        )
    if body.get("model_version") != version:
        raise GitmlError(f"{url}: answered for model_version {body.get('model_version')!r}, expected {version}.")
    return f"smoke: {url} scored the probe record {float(score):.6f} (expected {probe.score:.6f})"


def smoke(url: str, version: str, probe: Probe, timeout: float, say: Callable[[str], None] = print) -> int:
    """Run every check against the server at url, calling `say` with one line per check passed; their number."""
    parse_version(version)
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise GitmlError(f"{url!r} is not an http(s) URL; pass the server's base URL, like http://127.0.0.1:8000.")
    checks: list[Callable[[], str]] = [
        lambda: wait_ready(base, timeout),
        lambda: check_version(base, version),
        lambda: check_probe(base, version, probe),
    ]
    for check in checks:
        say(check())
    return len(checks)


def cmd_smoke(paths: Paths, args: argparse.Namespace) -> str:
    parse_version(args.version)
    probe = read_probe(args.manifest) if args.manifest is not None else tagged_probe(paths.root, args.version)
    passed = smoke(args.url, args.version, probe, args.timeout, lambda line: print(line, flush=True))
    return f"smoke: {args.url} serves {args.version}: {passed} checks passed"


def _smoke_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8080")
    command.add_argument("--version", required=True, help="the model version the server must run (vX.Y.Z)")
    command.add_argument(
        "--manifest",
        type=Path,
        help="the bundle's manifest.json, for its probe (default: models/manifest.json at tag model@VERSION)",
    )
    command.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for /ready (default: 120)")


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "smoke": (cmd_smoke, "check a deployed server: ready, the version, the probe record's score", _smoke_arguments),
}
