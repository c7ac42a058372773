"""Every metric and fairness summary gitml reports, defined once: its name, which way is better,
what a reader calls it, and how it is computed.

Each is computed twice, on purpose: `evaluate.metrics` with torchmetrics, the reference, for the
estimate in reports/metrics.json; `evaluate.bootstrap` in NumPy, weighted by resample counts, for
its confidence interval. tests/evaluate checks that both implement exactly the measures listed
here and agree on every one. The gate (limits, the champion comparison), the report, the model
card and the summary take names, directions and labels from here. Plain Python: no NumPy, no torch.

To add a measure: list it here, compute it in both modules, and (for a fairness summary the gate
may hold) give its limit in conf/gates/default.yaml; docs/extending.md has the steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Better = Literal["higher", "lower"] | None  # None: neither (a rate of the data, a size)


@dataclass(frozen=True)
class Measure:
    name: str  # the key in reports/metrics.json and reports/intervals.json
    label: str  # what a person reads in the report, the summary and the gate's reasons
    better: Better
    computed: str  # one line: how it is computed

    @property
    def kind(self) -> Literal["difference", "ratio"] | None:
        """A fairness summary: a gap between groups (0 is equal) or a ratio of their rates (1 is equal)."""
        if self.name.endswith("_difference"):
            return "difference"
        return "ratio" if self.name.endswith("_ratio") else None


# Headline test metrics, at the decision threshold or on the scores.
HEADLINE = (
    Measure("accuracy", "accuracy", "higher", "share of rows decided right at the threshold"),
    Measure("balanced_accuracy", "balanced accuracy", "higher", "mean of the true positive and true negative rates"),
    Measure("precision", "precision", "higher", "share of positive decisions that are positive (0 with none)"),
    Measure("recall", "recall", "higher", "share of positives decided positive (the TPR)"),
    Measure("f1", "F1", "higher", "harmonic mean of precision and recall"),
    Measure("auroc", "AUROC", "higher", "area under the ROC curve of the scores (ties count half)"),
    Measure("average_precision", "average precision", "higher", "step-wise area under the precision-recall curve"),
    Measure("brier", "Brier score", "lower", "mean squared difference of score and label"),
    Measure("ece", "ECE", "lower", "expected calibration error over equal-width score bins (L1)"),
    Measure("selection_rate", "selection rate", None, "share of rows decided positive"),
    Measure("positive_rate", "base rate", None, "share of rows whose label is positive"),
)

# Fairness summaries of one protected attribute, over the groups with enough test cases.
FAIRNESS = (
    Measure("demographic_parity_difference", "selection-rate gap", "lower", "max - min selection rate"),
    Measure("demographic_parity_ratio", "selection-rate ratio", "higher", "min / max selection rate (four-fifths)"),
    Measure("base_rate_ratio", "base-rate ratio", None, "min / max share of positives in the data, same groups"),
    Measure("equal_opportunity_difference", "TPR gap", "lower", "max - min true positive rate"),
    Measure("equal_opportunity_ratio", "TPR ratio", "higher", "min / max true positive rate"),
    Measure("equalized_odds_difference", "equalized-odds gap", "lower", "the larger of the TPR gap and the FPR gap"),
)

MEASURES = {m.name: m for m in (*HEADLINE, *FAIRNESS)}
# The fairness summaries the gate can hold to a limit: those with a direction.
GATEABLE = tuple(m.name for m in FAIRNESS if m.better is not None)


def measure(name: str) -> Measure:
    return MEASURES[name]


def label(name: str) -> str:
    """What a reader calls the measure; its key where it is not one of gitml's."""
    found = MEASURES.get(name)
    return found.label if found else name


def improvement(name: str, new: float, old: float) -> float:
    """How much better `new` is than `old` (negative: worse), whichever way the measure points."""
    return (old - new) if measure(name).better == "lower" else (new - old)
