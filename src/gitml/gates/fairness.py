"""Fairness checks: the evaluate stage's fairness summaries held to the limits in conf/gates/.

Every summary of every protected attribute is reported (reports/metrics.json, the report, the
model card); the gate holds to a limit only what `gates.fairness` names. Each limit is decided
either on the estimate, or on its bootstrap interval (fail only when the whole interval is past
the limit: the test split shows a gap beyond the limit, not just a noisy one), as the config says
per attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gitml.checked_config import ConfigReader, suggest
from gitml.evaluate.measures import GATEABLE, label, measure
from gitml.gates.checks import Check, interval_past, past

# A summary where lower is fairer (a gap) takes a `max`; one where higher is fairer (a ratio, 1 is
# equal) takes a `min` (gitml.evaluate.measures says which).
DIFFERENCES = tuple(n for n in GATEABLE if measure(n).better == "lower")
RATIOS = tuple(n for n in GATEABLE if measure(n).better == "higher")
DECIDE = ("estimate", "interval")


def gated_limits(config: Mapping[str, Any], source: str, protected: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """attribute -> metric -> {"max"|"min", "relative_to_base_rate", "decide_on", "setting"}, checked.

    An attribute named under `attributes` takes its own limits (null: not gated); every other
    protected attribute takes `default`'s (null or absent: none)."""
    reader = ConfigReader(source, "gates.fairness", config, {"attributes", "default"})
    attributes = reader.required("attributes") or {}  # null or {}: no attribute named
    if not isinstance(attributes, Mapping):
        reader.fail("attributes must map each protected attribute to its limits")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for attribute, limits in attributes.items():
        where = f"gates.fairness.attributes.{attribute}"
        if attribute not in protected:
            ConfigReader(source, where, {}, set()).fail(
                f"'{attribute}' is not a protected column of the dataset{suggest(str(attribute), protected)}; "
                f"protected columns: {', '.join(protected) or 'none (give a column role: protected)'}"
            )
        if limits is not None:
            out[attribute] = _limits(source, where, limits)
    default = reader.get("default")
    for attribute in protected:
        if attribute not in attributes and default is not None:
            out[attribute] = _limits(source, "gates.fairness.default", default)
    return out


def _limits(source: str, where: str, limits: Any) -> dict[str, dict[str, Any]]:
    attr = ConfigReader(source, where, limits, {"decide_on", *DIFFERENCES, *RATIOS})
    decide_on = attr.choice("decide_on", DECIDE)
    out: dict[str, dict[str, Any]] = {}
    for metric in (*DIFFERENCES, *RATIOS):
        if attr.get(metric) is None:
            continue
        bound = "max" if measure(metric).better == "lower" else "min"
        allowed = {bound, "relative_to_base_rate"} if metric == "demographic_parity_ratio" else {bound}
        limit_reader = ConfigReader(source, f"{where}.{metric}", attr.get(metric), allowed)
        value = limit_reader.bounded(bound, 0, 1)
        # Only the selection-rate ratio can be relative to the base-rate ratio; it says whether it is.
        relative = "relative_to_base_rate" in allowed and limit_reader.boolean("relative_to_base_rate")
        out[metric] = {
            bound: value,
            "relative_to_base_rate": relative,
            "decide_on": decide_on,
            "setting": f"{where}.{metric}.{bound}",
        }
    return out


def fairness_checks(
    limits: Mapping[str, Mapping[str, Mapping[str, Any]]],
    summaries: Mapping[str, Mapping[str, Any]],
    intervals: Mapping[str, Mapping[str, Any]],
    confidence: float,
) -> list[Check]:
    """One check per configured limit."""
    checks = []
    for attribute, metrics in limits.items():
        summary = summaries.get(attribute, {})
        for metric, limit in metrics.items():
            name = f"fairness/{attribute}/{metric}"
            check = _check(name, metric, limit, summary, intervals.get(attribute, {}).get(metric), confidence)
            checks.append(replace(check, setting=limit.get("setting")))
    return checks


def _check(
    name: str,
    metric: str,
    limit: Mapping[str, Any],
    summary: Mapping[str, Any],
    interval: list[float | None] | None,
    confidence: float,
) -> Check:
    what = label(metric)
    better = measure(metric).better
    value = summary.get(metric)
    upper = better == "lower"
    threshold = float(limit["max"] if upper else limit["min"])
    relative = ""
    if limit.get("relative_to_base_rate"):
        base = summary.get("base_rate_ratio")
        if base is None:
            return Check(name, "fairness", value, None, False, "no base-rate ratio: fewer than two groups to compare")
        relative = f" = {threshold:g} x the base-rate ratio {base:.3f}"
        threshold = round(threshold * base, 6)
    if value is None:
        compared = summary.get(
            "groups_compared_tpr" if "opportunity" in metric or "odds" in metric else "groups_compared"
        )
        # Decided on its interval, a gap the test split cannot measure at all is the extreme of "too
        # few test cases to tell": it passes with a warning. Decided on its estimate, it fails.
        undecided = limit["decide_on"] == "interval"
        return Check(
            name, "fairness", None, threshold, undecided,
            f"{what} undefined: fewer than two groups with enough test cases ({', '.join(compared or []) or 'none'})"
            f"{': too few test cases to tell' if undecided else ''}; lower evaluate.min_group_cases / "
            "min_group_size, band the attribute more coarsely (bands in conf/data/), or gate another attribute",
            warning=undecided,
        )  # fmt: skip
    bounds = None
    if interval is not None and interval[0] is not None and interval[1] is not None:
        bounds = (float(interval[0]), float(interval[1]))
    beyond = past(value, threshold, better)
    side, inside = ("above", "below") if upper else ("below", "above")
    limit_text = f"the limit {threshold:.3f}{relative}"
    ci = f" ({confidence:.0%} interval {bounds[0]:.3f}-{bounds[1]:.3f})" if bounds else ""
    if limit["decide_on"] == "estimate" or bounds is None:
        reason = f"{what} {value:.3f}{ci} is {side if beyond else 'within'} {limit_text}"
        return Check(name, "fairness", value, threshold, not beyond, reason, interval=bounds)
    # decide_on: interval. Fail only when the whole interval is past the limit.
    low, high = bounds
    if interval_past(bounds, threshold, better):
        reason = f"{what} {value:.3f}{ci} is {side} {limit_text}, all of its interval too"
        return Check(name, "fairness", value, threshold, False, reason, interval=bounds)
    if beyond:
        reason = (
            f"{what} {value:.3f} is {side} {limit_text}, but its {confidence:.0%} interval {low:.3f}-{high:.3f} "
            f"reaches {inside} it: too few test cases to tell"
        )
        return Check(name, "fairness", value, threshold, True, reason, warning=True, interval=bounds)
    return Check(
        name, "fairness", value, threshold, True, f"{what} {value:.3f}{ci} is within {limit_text}", interval=bounds
    )
