"""The stage outputs that other code reads: one typed model each, one way to read and write them.

The writer and every reader of a file share its model here, so a key renamed by the writer is a
type error in the readers. `Output.read` is the one way of reading: a file that is missing, is not
JSON, or lacks a key its model requires raises one kind of error (GitmlError), which names the
file, the stage that writes it and what to run. The model bundle's manifest has its own model in
gitml.bundle, which reads it through `read_json` below.

  file                    model          written by     read by
  reports/metrics.json    MetricsFile    evaluate       gate, report, model card, summary
  reports/intervals.json  IntervalsFile  evaluate       gate, report, model card
  reports/fairness.json   FairnessFile   evaluate       report, model card
  reports/baselines.json  BaselinesFile  baselines      gate, report, model card, summary
  reports/deepchecks.json ChecksFile     deepchecks     gate
  reports/gate.json       GateFile       gate           gate --check, report, model card
  models/manifest.json    Manifest       evaluate       everything that loads the bundle (gitml.bundle)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, NotRequired, TypedDict, TypeVar, cast

from gitml.errors import GitmlError
from gitml.io import write_json
from gitml.paths import Paths

RUN_PIPELINE = "Run `dvc repro` (or `make run`)"


class ThresholdInfo(TypedDict):
    rule: str
    value: float
    chosen_on: str


class MetricsFile(TypedDict):
    """Headline test metrics and each protected attribute's fairness summary."""

    threshold: ThresholdInfo
    test: dict[str, float]
    fairness: dict[str, dict[str, Any]]


Bounds = list[float] | None  # [low, high] of a bootstrap interval; None where a resample cannot define it


class IntervalsFile(TypedDict):
    """Bootstrap confidence intervals of every test metric and fairness summary."""

    confidence: float
    resamples: int
    seed: int
    test: dict[str, Bounds]
    fairness: dict[str, dict[str, Bounds]]


# reports/fairness.json: these keys, and one more per protected attribute (group -> metrics).
FairnessFile = dict[str, Any]
FAIRNESS_SETTINGS = ("threshold", "min_group_size", "min_group_cases")


class BaselineMetrics(TypedDict):
    """One classical baseline, scored as the network is: threshold on val, metrics on test."""

    threshold: ThresholdInfo
    test: dict[str, float]
    fairness: dict[str, dict[str, Any]]
    fit: dict[str, Any]  # what the fit records: inputs, iterations, converged, categorical columns


class BaselinesFile(TypedDict):
    """The classical baselines (gitml.evaluate.classical), the config they ran with, and the best one."""

    enabled: bool  # false: baselines.enabled is off, and `models` is empty
    config: dict[str, Any]
    models: dict[str, BaselineMetrics]
    best: str | None  # the baseline with the highest test AUROC


class Condition(TypedDict):
    suite: str
    check: str
    condition: str
    category: str  # PASS, WARN, FAIL or ERROR
    details: str
    setting: NotRequired[str | None]  # gates.deepchecks.<suite>.<key> that sets its limit


class ChecksFile(TypedDict):
    """Every Deepchecks condition's outcome, and each suite's HTML report."""

    suites: dict[str, Any]
    conditions: list[Condition]


class GateFile(TypedDict):
    """The gate's verdict, the champion it compared with, and every check behind it."""

    verdict: str  # pass or fail
    reason: str
    champion: dict[str, Any]
    checks: list[dict[str, Any]]  # gitml.gates.checks.Check.as_dict()
    counts: dict[str, int]


def read_json(path: Path, stage: str, how: str = RUN_PIPELINE) -> Any:
    """A JSON file a stage wrote; GitmlError naming the file, the stage and what to run if it cannot be read."""
    if not path.is_file():
        raise GitmlError(f"{path}: not found; the {stage} stage has not run. {how}.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GitmlError(f"{path}: not valid JSON ({exc}); the {stage} stage writes it. {how}.") from exc


def json_object(data: Any, path: Path | str, how: str = RUN_PIPELINE) -> dict[str, Any]:
    """`data` if it is a JSON object; GitmlError naming the file otherwise."""
    if not isinstance(data, dict):
        raise GitmlError(f"{path}: expected a JSON object, got {type(data).__name__}. {how}.")
    return data


T = TypeVar("T")


@dataclass(frozen=True)
class Output(Generic[T]):
    """One output file: where it is, which stage writes it, and the keys its model requires."""

    where: Callable[[Paths], Path]
    stage: str
    required: dict[str, Any]  # top-level key -> its JSON type, as isinstance takes it (dict, list, int | float)
    how: str = RUN_PIPELINE

    def read(self, paths: Paths) -> T:
        path = self.where(paths)
        return self.check(read_json(path, self.stage, self.how), path)

    def check(self, data: Any, path: Path | str) -> T:
        """Parsed JSON as this output's model: GitmlError naming the file and the first key that is wrong."""
        data = json_object(data, path, self.how)
        for key, kind in self.required.items():
            if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
                raise GitmlError(
                    f"{path}: `{key}` is missing or not what the {self.stage} stage writes; the file is damaged "
                    f"or from another version of gitml. {self.how}."
                )
        return cast(T, data)

    def write(self, paths: Paths, data: T) -> None:
        write_json(self.where(paths), data)


METRICS: Output[MetricsFile] = Output(
    lambda p: p.metrics, "evaluate", {"threshold": dict, "test": dict, "fairness": dict}
)
INTERVALS: Output[IntervalsFile] = Output(
    lambda p: p.intervals,
    "evaluate",
    {"confidence": float, "resamples": int, "seed": int, "test": dict, "fairness": dict},
)
FAIRNESS: Output[FairnessFile] = Output(
    lambda p: p.fairness, "evaluate", {"threshold": int | float, "min_group_size": int, "min_group_cases": int}
)
BASELINES: Output[BaselinesFile] = Output(lambda p: p.baselines, "baselines", {"config": dict, "models": dict})
CHECKS: Output[ChecksFile] = Output(lambda p: p.deepchecks_results, "deepchecks", {"suites": dict, "conditions": list})
GATE: Output[GateFile] = Output(
    lambda p: p.gate,
    "gate",
    {"verdict": str, "reason": str, "champion": dict, "checks": list, "counts": dict},
    how="Run `gitml gate` (or `make run`)",
)
