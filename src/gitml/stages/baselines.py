"""baselines stage: classical models on the network's split and inputs, scored as the network is.

Fits each model of `baselines.models` (gitml.evaluate.classical) on the train split with the
training seed (train.seed), chooses its decision threshold on val by the network's rule
(evaluate.threshold) and scores it on test with the evaluate stage's own metrics and fairness
summaries. Writes reports/baselines.json, a DVC metrics file. It reads models/preprocess.json but
never the network, so a change to the network does not refit them. With `baselines.enabled:
false` it fits nothing and the file says the baselines are off.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gitml.checked_config import ConfigReader
from gitml.config import dataset_schema, section
from gitml.data.features import PreprocessSpec, labels, matrices
from gitml.data.split import SPLITS, load_split
from gitml.evaluate.classical import (
    NAMES,
    BaselinesConfig,
    Fitted,
    best,
    fit_gradient_boosting,
    fit_logistic_regression,
)
from gitml.evaluate.config import read_config
from gitml.evaluate.metrics import headline, protected_fairness
from gitml.outputs import BASELINES, BaselinesFile
from gitml.paths import Paths


@dataclass(frozen=True)
class Baselines:
    """What the stage wrote, and how long each fit took (for the run log: no time goes into an output)."""

    written: BaselinesFile
    seconds: dict[str, float]


def run(cfg: Mapping[str, Any], paths: Paths) -> Baselines:
    """Fit, threshold and score every baseline; returns what reports/baselines.json holds."""
    source = paths.params.name
    config = BaselinesConfig.from_config(section(cfg, "baselines", paths.params), source)
    train_section = section(cfg, "train", paths.params)
    seed = ConfigReader(source, "train", train_section, set(train_section)).integer("seed")
    evaluate = read_config(section(cfg, "evaluate", paths.params), source)
    used = {
        "models": list(config.models) if config.enabled else [],
        "seed": seed,
        "logistic_max_iter": config.logistic_max_iter,
        "threshold_rule": evaluate.rule,
        "calibration_bins": evaluate.calibration_bins,
        "min_group_size": evaluate.min_group_size,
        "min_group_cases": evaluate.min_group_cases,
    }
    if not config.enabled:
        off: BaselinesFile = {"enabled": False, "config": used, "models": {}, "best": None}
        BASELINES.write(paths, off)
        return Baselines(off, {})

    schema = dataset_schema(cfg, paths.params)
    spec = PreprocessSpec.load(paths.preprocess)
    frames = {name: load_split(paths, name) for name in SPLITS}
    y = {name: labels(schema, frame[schema.label.name].to_numpy()) for name, frame in frames.items()}
    models: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in config.models:
        started = time.perf_counter()
        fitted: Fitted
        if name == "logistic_regression":
            x_train, _ = matrices(spec, schema, frames["train"])
            fitted = fit_logistic_regression(spec, x_train, y["train"], seed, config.logistic_max_iter)
        else:
            fitted = fit_gradient_boosting(spec, frames["train"], y["train"], seed)
        seconds[name] = time.perf_counter() - started
        threshold = evaluate.threshold(fitted.score(frames["val"]), y["val"])
        scores = fitted.score(frames["test"])
        _, fairness = protected_fairness(
            schema, frames["test"], scores, y["test"], threshold, evaluate.min_group_size, evaluate.min_group_cases
        )
        models[name] = {
            "threshold": {"rule": evaluate.rule, "value": threshold, "chosen_on": "val"},
            "test": headline(scores, y["test"], threshold, evaluate.calibration_bins),
            "fairness": fairness,
            "fit": {"train_rows": len(frames["train"]), **fitted.details},
        }
    written: BaselinesFile = {"enabled": True, "config": used, "models": models, "best": best(models, config.models)}
    BASELINES.write(paths, written)
    return Baselines(written, seconds)


def parts(result: Baselines) -> dict[str, float]:
    """Each model's fit time, which the run log records with the stage's."""
    return result.seconds


def message(result: Baselines, paths: Paths) -> str:
    written = result.written
    where = paths.baselines.relative_to(paths.root)
    if not written["enabled"]:
        return f"baselines: off (baselines.enabled: false); nothing fitted -> {where}"
    shown = []
    for name, metrics in written["models"].items():
        test = metrics["test"]
        shown.append(
            f"{NAMES[name]} AUROC {test['auroc']:.4f}, accuracy {test['accuracy']:.4f} "
            f"(fit {result.seconds.get(name, 0.0):.1f} s)"
        )
    logistic = written["models"].get("logistic_regression")
    unconverged = logistic is not None and logistic["fit"].get("converged") is False
    note = (
        f"; logistic regression did not converge in {written['config']['logistic_max_iter']} iterations: "
        "raise baselines.logistic_max_iter"
        if unconverged
        else ""
    )
    return f"baselines: {' | '.join(shown)} on test{note} -> {where}"
