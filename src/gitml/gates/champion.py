"""The champion gate: the candidate against the model in production, or main's committed metrics.

The champion is the version of the model artifact that GTO has in the production stage; before
any version has been promoted, it is main's committed reports/metrics.json. The candidate may
not be worse on the primary metric by more than `tolerance`, and may not widen any gated
fairness gap (or narrow a gated ratio) by more than `fairness_tolerance`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gitml.baseline import Baseline, champion
from gitml.checked_config import ConfigReader
from gitml.evaluate.measures import HEADLINE, improvement, measure
from gitml.gates.checks import Check, interval_past

# Test metrics where lower is better; every other metric of metrics.json["test"] is higher-better.
METRICS_FILE = "reports/metrics.json"


@dataclass(frozen=True)
class ChampionConfig:
    """gates.champion (conf/gates/): every value from there, none here."""

    artifact: str
    stage: str
    branch: str
    primary_metric: str
    tolerance: float
    fairness_tolerance: float

    @classmethod
    def from_config(cls, cfg: Any, source: str) -> ChampionConfig:
        """gates.champion, checked; every key is required."""
        reader = ConfigReader(
            source, "gates.champion", cfg,
            {"artifact", "stage", "branch", "primary_metric", "tolerance", "fairness_tolerance"},
        )  # fmt: skip
        artifact, stage, branch = (reader.text(key) for key in ("artifact", "stage", "branch"))
        # A headline metric with a direction: "better" has to mean something.
        primary = reader.choice("primary_metric", [m.name for m in HEADLINE if m.better is not None])
        tolerance, fairness_tolerance = (reader.bounded(key, 0) for key in ("tolerance", "fairness_tolerance"))
        return cls(artifact, stage, branch, primary, tolerance, fairness_tolerance)


def find_champion(root: Path, config: ChampionConfig) -> Baseline:
    return champion(root, config.artifact, config.stage, config.branch)


def champion_checks(
    config: ChampionConfig,
    baseline: Baseline,
    candidate: Mapping[str, Any],
    gated: Mapping[str, Mapping[str, Any]],
    intervals: Mapping[str, Any] | None = None,
    incomparable_because: str | None = None,
) -> list[Check]:
    """The primary metric against the champion's, then every gated fairness summary against its.

    A summary gated with `decide_on: interval` is compared the same way: it fails only when the
    candidate's whole interval (`intervals`, reports/intervals.json's `fairness`) is past the
    champion's value plus the tolerance; an estimate past it passes with a warning. A champion
    trained on another dataset (`incomparable_because`, gitml.baseline.incomparable) is no
    comparable model: one passing check says so, and nothing is compared.
    """
    metric = config.primary_metric
    if incomparable_because is not None:
        return [
            Check(
                f"champion/{metric}", "champion", None, None, True,
                f"no comparable model: {incomparable_because}; the champion does not gate this model",
            )
        ]  # fmt: skip
    theirs = baseline.read_json(METRICS_FILE) if baseline.exists else None
    if not isinstance(theirs, Mapping) or not isinstance(theirs.get("test"), Mapping):
        why = (
            baseline.description
            if not baseline.exists
            else f"{baseline.description} has no {METRICS_FILE} to compare with"
        )
        return [Check(f"champion/{metric}", "champion", None, None, True, f"no champion: {why}; nothing to beat")]
    ours_value, their_value = candidate["test"].get(metric), theirs["test"].get(metric)
    checks = [replace(_primary(config, baseline, ours_value, their_value), setting="gates.champion.tolerance")]
    their_fairness = theirs.get("fairness", {})
    for attribute, metrics in gated.items():
        for name, limit in metrics.items():
            ours = candidate.get("fairness", {}).get(attribute, {}).get(name)
            prior = their_fairness.get(attribute, {}).get(name) if isinstance(their_fairness, Mapping) else None
            interval = None
            if limit.get("decide_on") == "interval":
                interval = ((intervals or {}).get(attribute) or {}).get(name)
            check = _widening(config, attribute, name, ours, prior, interval)
            checks.append(replace(check, setting="gates.champion.fairness_tolerance"))
    return checks


def _primary(config: ChampionConfig, baseline: Baseline, ours: float | None, theirs: float | None) -> Check:
    metric = config.primary_metric
    name = f"champion/{metric}"
    if theirs is None:
        return Check(name, "champion", ours, None, True, f"the champion ({baseline.description}) has no test {metric}")
    if ours is None:
        return Check(name, "champion", None, None, False, f"this model's test {metric} is undefined")
    change = improvement(metric, ours, theirs)  # positive = better, whichever way the metric points
    passed = change >= -config.tolerance
    verb = "within" if passed else "worse than"
    reason = (
        f"{metric} {ours:.4f} vs champion {theirs:.4f} ({baseline.description}): "
        f"change {change:+.4f}, {verb} the tolerance {config.tolerance:g}"
    )
    return Check(name, "champion", round(change, 6), -config.tolerance, passed, reason)


def _widening(
    config: ChampionConfig,
    attribute: str,
    metric: str,
    ours: float | None,
    theirs: float | None,
    interval: list[float | None] | None,
) -> Check:
    name = f"champion/{attribute}/{metric}"
    if theirs is None or ours is None:  # an undefined gap of this model fails its fairness check already
        missing = "the champion" if theirs is None else "this model"
        return Check(name, "champion", None, None, True, f"{missing} has no {attribute} {metric} to compare")
    # Widening = how much less fair: a larger difference, or a smaller ratio.
    better = measure(metric).better
    widening = -improvement(metric, ours, theirs)
    word = "widens" if better == "lower" else "narrows"
    tolerance = config.fairness_tolerance
    said = f"{attribute} {metric} {ours:.3f} vs champion {theirs:.3f}: {word} by {max(widening, 0):.3f}"
    value = round(widening, 6)
    if widening <= tolerance:
        return Check(name, "champion", value, tolerance, True, f"{said}, within the tolerance {tolerance:g}")
    if interval is None or interval[0] is None or interval[1] is None:
        return Check(name, "champion", value, tolerance, False, f"{said}, beyond the tolerance {tolerance:g}")
    low, high = float(interval[0]), float(interval[1])
    bounds = (low, high)
    # The champion's value moved by the tolerance, in the less fair direction, is the limit.
    limit = theirs + tolerance if better == "lower" else theirs - tolerance
    if interval_past(bounds, limit, better):
        reason = f"{said}, beyond the tolerance {tolerance:g} over all of its interval {low:.3f}-{high:.3f}"
        return Check(name, "champion", value, tolerance, False, reason, interval=bounds)
    reason = (
        f"{said}, beyond the tolerance {tolerance:g}, but its interval {low:.3f}-{high:.3f} reaches back within "
        "it: too few test cases to tell"
    )
    return Check(name, "champion", value, tolerance, True, reason, warning=True, interval=bounds)
