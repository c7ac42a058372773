"""The baselines check: the network's test AUROC against the best classical baseline's.

Off by default (gates.baselines.enabled): every report shows the comparison either way, and a
team turns the check on once its network is meant to match gradient boosting. On, the network may
be at most `max_auroc_gap` below the best baseline (reports/baselines.json), on the same test rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gitml.checked_config import ConfigReader
from gitml.evaluate.classical import NAMES, best_test
from gitml.gates.checks import Check, number
from gitml.outputs import BaselinesFile

NAME = "baselines/auroc"
SETTING = "gates.baselines.max_auroc_gap"


@dataclass(frozen=True)
class BaselinesGateConfig:
    """gates.baselines (conf/gates/): every value from there, none here."""

    enabled: bool
    max_auroc_gap: float

    @classmethod
    def from_config(cls, cfg: Any, source: str) -> BaselinesGateConfig:
        reader = ConfigReader(source, "gates.baselines", cfg, {"enabled", "max_auroc_gap"})
        return cls(reader.boolean("enabled"), reader.bounded("max_auroc_gap", 0, 1))


def baselines_checks(
    config: BaselinesGateConfig, metrics: Mapping[str, Any], baselines: BaselinesFile | None
) -> list[Check]:
    """No check when off; on, one: the network within max_auroc_gap test AUROC of the best baseline."""
    if not config.enabled:
        return []
    gap = config.max_auroc_gap

    def failed(reason: str) -> list[Check]:
        return [Check(NAME, "baselines", None, -gap, False, reason, setting=SETTING)]

    if baselines is None or not baselines.get("enabled"):
        return failed(
            "the baselines are off (baselines.enabled: false), so there is nothing to compare with; "
            "turn them on in conf/config.yaml, or this check off (gates.baselines.enabled: false)"
        )
    best, theirs = best_test(baselines) or (None, {})
    ours = metrics.get("test", {})
    if not isinstance(theirs.get("auroc"), float) or not isinstance(ours.get("auroc"), float):
        return failed("no test AUROC to compare: the network's or every baseline's is undefined")
    if theirs.get("rows") != ours.get("rows"):
        return failed(
            f"reports/baselines.json scored {number(theirs.get('rows'), 0)} test rows and reports/metrics.json "
            f"{number(ours.get('rows'), 0)}: they come from different runs. Re-run `dvc repro`"
        )
    change = round(ours["auroc"] - theirs["auroc"], 6)
    passed = change >= -gap
    name = NAMES.get(str(best), str(best))
    said = f"network {ours['auroc']:.3f} vs best baseline ({name} {theirs['auroc']:.3f}): {change:+.3f}"
    verdict = f"within {gap:g} test AUROC of it" if passed else f"more than {gap:g} test AUROC below it"
    return [Check(NAME, "baselines", change, -gap, passed, f"{said}, {verdict}", setting=SETTING)]
