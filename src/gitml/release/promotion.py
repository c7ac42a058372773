"""The promotion pull request: set production to a model version, with what a reviewer needs to decide.

`gitml promotion VERSION ...` writes the pull request's body (the version and what production runs
now, the gate's verdict, staging's live figures from a scrape of its /metrics, the model card),
sets the prod overlay to VERSION and prints the title. A version older than production's is a
rollback: same mechanics, its own title and a body that says so. Merging the pull request deploys
production (release.yml) and records the assignment in GTO.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from gitml.errors import GitmlError
from gitml.outputs import GATE, GateFile, read_json
from gitml.paths import Paths
from gitml.release.overlay import NOTHING, overlay_file, overlay_version, parse_version, set_overlay_version

Handler = Callable[[Paths, argparse.Namespace], str]

PROD, STAGING = "prod", "staging"
# Requests from the cluster itself (kubelet probes, Prometheus scrapes), left out of the traffic figures.
PLUMBING = frozenset({"/health", "/ready", "/metrics"})
BODY_LIMIT = 60_000  # characters; GitHub refuses a pull request body over 65,536


# --- The Prometheus text exposition format ----------------------------------------------------------

_SAMPLE = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?\s*")
_LABEL = re.compile(r'\s*(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*(?:,|$)')
_ESCAPES = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def _labels(text: str, where: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text.rstrip()):
        match = _LABEL.match(text, position)
        if match is None:
            raise GitmlError(f"{where}: cannot read the labels {{{text}}}; is this a Prometheus /metrics scrape?")
        value = re.sub(r"\\[\\\"n]", lambda m: _ESCAPES[m.group(0)], match["value"])
        labels[match["key"]] = value
        position = match.end()
    return labels


def parse_exposition(text: str, source: str) -> list[Sample]:
    """The samples of a Prometheus text exposition (what /metrics answers); comments and blank lines skipped."""
    samples = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        match = _SAMPLE.fullmatch(line)
        if match is None:
            raise GitmlError(f"{where}: {line[:80]!r} is not a metric sample; is this a Prometheus /metrics scrape?")
        try:
            value = float(match["value"])
        except ValueError:
            raise GitmlError(f"{where}: {match['value']!r} is not a number.") from None
        samples.append(Sample(match["name"], _labels(match["labels"] or "", where), value))
    return samples


# --- The server's live figures ----------------------------------------------------------------------


@dataclass(frozen=True)
class LiveFigures:
    """What staging's server counted (src/gitml/serve/metrics.py), summed over the scraped replicas."""

    requests: dict[str, float]  # endpoint -> requests answered, the cluster's own requests left out
    client_errors: float  # 4xx
    server_errors: float  # 5xx
    p50: float | None  # /predict latency, seconds
    p99: float | None
    predictions: float
    positive: float
    feedback: dict[str, float]  # outcome (matched, unmatched) -> labels received
    accuracy: float | None
    labelled: float
    log_errors: float | None

    @property
    def total(self) -> float:
        return sum(self.requests.values())


def _named(samples: Iterable[Sample], *names: str) -> list[Sample]:
    return [s for s in samples if s.name in names]


def _counter(samples: Iterable[Sample], name: str) -> list[Sample]:
    """A counter's samples, under its exposition name (name_total) or the bare name."""
    return _named(samples, f"{name}_total", name)


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram (upper bound -> count), interpolated as Prometheus does."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # in the open-ended bucket: the largest finite bound is all that is known
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


def live_figures(samples: list[Sample]) -> LiveFigures:
    requests: dict[str, float] = {}
    client = server = 0.0
    for s in _counter(samples, "gitml_http_requests"):
        endpoint = s.labels.get("endpoint", "other")
        if endpoint in PLUMBING:
            continue
        requests[endpoint] = requests.get(endpoint, 0.0) + s.value
        status = s.labels.get("status", "")
        client += s.value if status.startswith("4") else 0.0
        server += s.value if status.startswith("5") else 0.0
    buckets: dict[float, float] = {}
    for s in _named(samples, "gitml_http_request_duration_seconds_bucket"):
        if s.labels.get("endpoint") == "/predict" and "le" in s.labels:
            bound = float(s.labels["le"])
            buckets[bound] = buckets.get(bound, 0.0) + s.value
    decisions = _counter(samples, "gitml_predictions")
    feedback: dict[str, float] = {}
    for s in _counter(samples, "gitml_feedback"):
        outcome = s.labels.get("outcome", "")
        feedback[outcome] = feedback.get(outcome, 0.0) + s.value
    accuracies = [s.value for s in _named(samples, "gitml_live_accuracy") if not math.isnan(s.value)]
    labelled = [s.value for s in _named(samples, "gitml_live_labelled")]
    accuracy = None
    if accuracies:  # one value per replica: weighted by that replica's labels where they pair up
        weights = labelled if len(labelled) == len(accuracies) and sum(labelled) > 0 else [1.0] * len(accuracies)
        accuracy = sum(a * w for a, w in zip(accuracies, weights, strict=True)) / sum(weights)
    log_errors = _counter(samples, "gitml_prediction_log_write_errors")
    return LiveFigures(
        requests=requests,
        client_errors=client,
        server_errors=server,
        p50=quantile(0.5, buckets),
        p99=quantile(0.99, buckets),
        predictions=sum(s.value for s in decisions),
        positive=sum(s.value for s in decisions if s.labels.get("decision") == "true"),
        feedback=feedback,
        accuracy=accuracy,
        labelled=sum(labelled),
        log_errors=sum(s.value for s in log_errors) if log_errors else None,
    )


def read_live_figures(path: Path) -> LiveFigures | None:
    """Staging's figures from a /metrics scrape saved in `path`; None when the file is missing or empty."""
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return None
    samples = parse_exposition(text, str(path))
    if not any(s.name.startswith("gitml_") for s in samples):
        raise GitmlError(f"{path} holds no gitml_ metric; save a scrape of the gitml server's /metrics there.")
    return live_figures(samples)


# --- The pull request ---------------------------------------------------------------------------------


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}% ({_count(part)})" if whole > 0 else "n/a"


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.3g} ms"


def figures_section(figures: LiveFigures | None, source: Path, staging: str) -> list[str]:
    lines = [f"### Staging's live figures ({'no model' if staging == NOTHING else staging})", ""]
    if figures is None:
        return [*lines, f"No live figures: {source.name} is missing or empty (no scrape of staging's /metrics).", ""]
    endpoints = ", ".join(f"{e} {_count(n)}" for e, n in sorted(figures.requests.items()))
    feedback = sum(figures.feedback.values())
    rows = [
        ("Requests served", f"{_count(figures.total)}" + (f" ({endpoints})" if endpoints else "")),
        ("Server errors (5xx)", _share(figures.server_errors, figures.total)),
        ("Rejected requests (4xx)", _share(figures.client_errors, figures.total)),
        ("/predict latency", f"p50 {_ms(figures.p50)}, p99 {_ms(figures.p99)}"),
        ("Predictions", _count(figures.predictions)),
        ("Positive decisions", _share(figures.positive, figures.predictions)),
        (
            "Live accuracy",
            "n/a (no labels fed back)"
            if figures.accuracy is None
            else f"{figures.accuracy:.4f} on {_count(figures.labelled)} labelled predictions",
        ),
        (
            "Feedback received",
            f"{_count(feedback)}"
            + (f" ({', '.join(f'{k} {_count(v)}' for k, v in sorted(figures.feedback.items()))})" if feedback else ""),
        ),
        ("Prediction log write errors", "n/a" if figures.log_errors is None else _count(figures.log_errors)),
    ]
    table = ["| Figure | Value |", "| --- | --- |", *(f"| {name} | {value} |" for name, value in rows)]
    note = (
        f"From {source.name}, a scrape of staging's /metrics since its pods started; "
        "probe and scrape requests (/health, /ready, /metrics) are left out."
    )
    return [*lines, *table, "", note, ""]


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def gate_section(gate: GateFile) -> list[str]:
    passed = gate["verdict"] == "pass"
    champion = gate["champion"].get("description", "none")
    lines = [
        "### Gate",
        "",
        f"**{'PASS' if passed else 'FAIL'}**: {gate['reason']}; champion: {champion}.",
        "",
    ]
    if not passed:
        lines += ["> [!WARNING]", "> The gate failed for this version.", ""]
    failing = [c for c in gate["checks"] if not c.get("passed")]
    warned = [c for c in gate["checks"] if c.get("passed") and c.get("warning")]
    for title, rows in (("Failed", failing), ("Passed with a warning", warned)):
        if rows:
            lines += [f"{title}:", "", "| Check | Value | Limit | Why |", "| --- | --- | --- | --- |"]
            lines += [
                f"| {_cell(c.get('name'))} | {_num(c.get('value'))} | {_num(c.get('threshold'))} "
                f"| {_cell(c.get('reason'))} |"
                for c in rows
            ]
            lines.append("")
    return lines


def _num(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.3f}"


def read_gate(path: Path) -> GateFile:
    return GATE.check(read_json(path, "gate", "Pass the release's reports/gate.json asset"), path)


def read_card(path: Path) -> str:
    if not path.is_file():
        raise GitmlError(f"{path}: not found; pass the release's model card (reports/model_card.md) with --card.")
    return path.read_text(encoding="utf-8")


@dataclass(frozen=True)
class Promotion:
    version: str
    current: str  # what production runs now
    title: str
    body: str

    @property
    def rollback(self) -> bool:
        return parse_version(self.version) < parse_version(self.current)


def promotion_body(root: Path, version: str, staging_metrics: Path, card: Path, gate: Path) -> Promotion:
    """The pull request's title and body for setting production to `version` (nothing is changed)."""
    new = parse_version(version)
    if version == NOTHING:
        raise GitmlError(f"{NOTHING} stands for no model; promote a registered version (`gto show model`).")
    current = overlay_version(root, PROD)
    overlay = overlay_file(root, PROD).relative_to(root)
    if version == current:
        raise GitmlError(f"production already runs {version} ({overlay}).")
    staging = overlay_version(root, STAGING)
    gate_file, card_text = read_gate(gate), read_card(card)
    figures = read_live_figures(staging_metrics)
    if new < parse_version(current):
        title = f"Roll back production to model {version} (from {current})"
        intro = [
            f"**This is a rollback.** Production runs **{current}** now; this sets it back to the older "
            f"**{version}** ({overlay}).",
            "",
            f"Merging deploys {version} to production (release.yml), then records in GTO a new assignment of "
            f"{version} to prod and deprecates {current} there: the history stays append-only.",
        ]
    elif current == NOTHING:
        title = f"Promote model {version} to production (from {current})"
        intro = [
            f"Production runs no model yet ({overlay} names {NOTHING}); this sets it to **{version}**.",
            "",
            f"Merging deploys {version} to production for the first time (release.yml), then records the "
            f"assignment of {version} to prod in GTO.",
        ]
    else:
        title = f"Promote model {version} to production (from {current})"
        intro = [
            f"Production runs **{current}** now; this sets it to **{version}** ({overlay}).",
            "",
            f"Merging deploys {version} to production (release.yml), then records the assignment of {version} to "
            f"prod in GTO and deprecates {current} there.",
        ]
    if staging != version:
        runs = "no model" if staging == NOTHING else staging
        intro += ["", f"Staging runs {runs}, not {version}: the live figures below are not this version's."]
    head = [
        f"## {title}",
        "",
        *intro,
        "",
        *gate_section(gate_file),
        *figures_section(figures, staging_metrics, staging),
    ]
    card_lines = ["### Model card", "", "<details><summary>The model card of " + version + "</summary>", ""]
    room = BODY_LIMIT - len("\n".join(head + card_lines)) - 200
    shown = card_text if len(card_text) <= room else card_text[: max(room, 0)].rsplit("\n", 1)[0]
    card_lines += [shown.rstrip("\n"), ""]
    if shown != card_text:
        card_lines += [f"*(cut at {len(shown):,} of {len(card_text):,} characters; the release has it whole.)*", ""]
    card_lines.append("</details>")
    return Promotion(version, current, title, "\n".join([*head, *card_lines]) + "\n")


def promote(root: Path, version: str, staging_metrics: Path, card: Path, gate: Path, out: Path) -> Promotion:
    """Write the pull request's body to `out` and set the prod overlay to `version`."""
    promotion = promotion_body(root, version, staging_metrics, card, gate)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(promotion.body, encoding="utf-8")
    set_overlay_version(root, PROD, version)
    return promotion


def cmd_promotion(paths: Paths, args: argparse.Namespace) -> str:
    return promote(paths.root, args.version, args.staging_metrics, args.card, args.gate, args.out).title


def _promotion_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("version", help="the model version production should run (vX.Y.Z); older = a rollback")
    command.add_argument(
        "--staging-metrics", type=Path, required=True, help="a scrape of staging's /metrics (missing or empty: none)"
    )
    command.add_argument("--card", type=Path, required=True, help="the version's model card (release asset)")
    command.add_argument("--gate", type=Path, required=True, help="the version's gate.json (release asset)")
    command.add_argument("--out", type=Path, required=True, help="write the pull request's body here")


COMMANDS: dict[str, tuple[Handler, str, Callable[[argparse.ArgumentParser], None] | None]] = {
    "promotion": (
        cmd_promotion,
        "write the pull request that sets production to a version (promotion or rollback); print its title",
        _promotion_arguments,
    ),
}
