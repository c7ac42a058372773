"""The evaluate section of params.yaml: how a model's scores become a threshold and its test metrics.

The evaluate stage scores the network with it, and the baselines stage the classical models, so
that both are held to the same rule on the same splits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gitml.checked_config import ConfigReader
from gitml.evaluate import Floats
from gitml.evaluate.bootstrap import BootstrapConfig
from gitml.evaluate.threshold import RULES, choose_threshold

KEYS = {"threshold", "calibration_bins", "min_group_size", "min_group_cases", "bootstrap"}
BOOTSTRAP_KEYS = {"resamples", "confidence", "seed"}


@dataclass(frozen=True)
class EvaluateConfig:
    """The evaluate section of params.yaml, checked; every key is required (conf/config.yaml has them)."""

    rule: str
    value: float | None  # the threshold of rule fixed; may be null for the other rules
    calibration_bins: int
    min_group_size: int
    min_group_cases: int
    bootstrap: BootstrapConfig

    def threshold(self, val_scores: Floats, val_labels: Floats) -> float:
        """The decision threshold the rule picks on the validation split, rounded once: the server
        reads the same number from models/threshold.json."""
        fixed = math.nan if self.value is None else self.value  # only rule fixed uses it, and it has one
        return round(choose_threshold(val_scores, val_labels, self.rule, fixed), 6)


def _bootstrap_config(reader: ConfigReader) -> BootstrapConfig:
    confidence = reader.bounded("confidence", 0, 1, open_ends=True)
    return BootstrapConfig(
        resamples=reader.integer("resamples", minimum=100),
        confidence=confidence,
        seed=reader.integer("seed"),
    )


def read_config(cfg: Mapping[str, Any], source: str) -> EvaluateConfig:
    """The evaluate section, checked."""
    reader = ConfigReader(source, "evaluate", cfg, KEYS)
    rule_reader = ConfigReader(source, "evaluate.threshold", reader.required("threshold"), {"rule", "value"})
    rule = rule_reader.choice("rule", RULES)
    value = rule_reader.number("value")
    if rule == "fixed" and (value is None or not 0 <= value <= 1):
        rule_reader.fail(f"value must be a probability in [0, 1] for rule fixed, got {value!r}")
    return EvaluateConfig(
        rule=rule,
        value=value,
        calibration_bins=reader.integer("calibration_bins", minimum=2),
        min_group_size=reader.integer("min_group_size", minimum=1),
        min_group_cases=reader.integer("min_group_cases", minimum=1),
        bootstrap=_bootstrap_config(
            ConfigReader(source, "evaluate.bootstrap", reader.required("bootstrap"), BOOTSTRAP_KEYS)
        ),
    )
