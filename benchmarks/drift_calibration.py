"""How `gitml drift` behaves on replays of held-back rows: false alarms, and the smallest shifts it detects.

The production population is the validation and test splits (rows the model never trained on and
the reference never holds), drawn with replacement with gitml.monitor.scenarios, as `gitml
simulate` draws them. For each window size it reports:

  false alarms    checks of the unshifted population that alarm, out of --seeds
  numeric shift   per numeric feature, the smallest mean shift (in sd, by resampling real rows) that
                  alarms in every seed and names that feature first
  new category    the smallest share of rows with an unknown category that alarms
  label rate      the smallest change of the positive-label rate that alarms
  score           the smallest shift of the model's scores (in sd) that alarms the prediction check

with drift.* of params.yaml (conf/drift/) and the bundle in models/ (run `make run` first). Then,
for comparison, Deepchecks' Feature Drift check with its default condition (drift score below
0.2: Kolmogorov-Smirnov for numbers) on the same draws of each numeric shift, at 5,000 rows.
Live fairness is left out: the gate's limits judge the model, not the population (see
docs/monitoring.md).

    .venv/bin/python benchmarks/drift_calibration.py [--sizes 1000,5000,50000] [--seeds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gitml.config import load_params
from gitml.monitor import drift, scenarios
from gitml.monitor.drift import DriftConfig, Production
from gitml.paths import Paths

SHIFTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)
SHARES = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05)
LABEL = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1)


class Replay:
    def __init__(self, root: Path) -> None:
        self.paths = Paths(root)
        self.params = load_params(self.paths.params)
        self.bundle = drift.load_bundle(self.paths)
        self.reference = drift.reference(self.paths, self.bundle)
        self.pool = pd.concat([pd.read_parquet(self.paths.split_file(s)) for s in ("val", "test")], ignore_index=True)
        self.names = drift.request_names(self.bundle.schema)
        self.scores = drift.score(self.bundle, self.pool[self.names])
        config = DriftConfig.from_config(self.params["drift"], self.paths.params.name)
        self.config = dataclasses.replace(config, fairness_min_labels=10**12)

    def check(self, n: int, scenario: str, seed: int, multivariate: bool = True) -> drift.DriftResult:
        schema = self.bundle.schema
        rows = scenarios.draw(
            self.pool, n, scenarios.parse(scenario, schema), schema, np.random.default_rng(seed), scores=self.scores
        )
        scores = drift.score(self.bundle, rows[self.names])
        production = Production(
            rows[self.names], scores, scores >= self.bundle.threshold.value,
            rows[scenarios.FEEDBACK].to_numpy(dtype=object), source=scenario,
        )  # fmt: skip
        return drift.check(
            self.paths, self.params, production, self.bundle, self.config, ref=self.reference, multivariate=multivariate
        )


def smallest(replay: Replay, n: int, seeds: int, amounts: tuple[float, ...], scenario: str, hit: Any) -> float | None:
    """The smallest amount whose scenario alarms (as `hit` judges it) in every seed."""
    for amount in amounts:
        if all(hit(replay.check(n, scenario.format(amount), 1000 + s, multivariate=False)) for s in range(seeds)):
            return amount
    return None


def measure(replay: Replay, sizes: list[int], seeds: int) -> dict[str, Any]:
    schema = replay.bundle.schema
    numeric = [c.name for c in schema.feature_columns if c.output_dtype in ("integer", "float")]
    categorical = next((c.name for c in schema.feature_columns if c.output_dtype == "categorical"), None)
    out: dict[str, Any] = {}
    for n in sizes:
        started = time.perf_counter()
        alarms = [r for r in (replay.check(n, "none", s) for s in range(seeds)) if r.drifted]
        row: dict[str, Any] = {"false_alarms": len(alarms), "of": seeds}
        for name in numeric:

            def first(result: drift.DriftResult, name: str = name) -> bool:
                return (
                    result.drifted and bool(result.report["top_features"]) and result.report["top_features"][0] == name
                )

            row[f"shift:{name}"] = smallest(replay, n, seeds, SHIFTS, f"shift:{name}={{}}", first)
        if categorical is not None:
            row[f"new-category:{categorical}"] = smallest(
                replay, n, seeds, SHARES, f"new-category:{categorical}={{}}",
                lambda r: any(f.drifted and f.kind == "new_categories" for f in r.findings),
            )  # fmt: skip
        row["label"] = smallest(
            replay, n, seeds, LABEL, "label:{}", lambda r: any(f.drifted and f.kind == "label" for f in r.findings)
        )
        row["score"] = smallest(
            replay,
            n,
            seeds,
            SHIFTS,
            "score:{}",
            lambda r: any(f.drifted and f.kind == "prediction" for f in r.findings),
        )
        row["seconds"] = round(time.perf_counter() - started, 1)
        out[str(n)] = row
        print(f"{n:>6} rows: {json.dumps(row)}", file=sys.stderr, flush=True)
    return out


def deepchecks_defaults(replay: Replay, n: int, shifts: tuple[float, ...], seed: int = 7) -> dict[str, dict[str, bool]]:
    """Does Deepchecks' Feature Drift, with its default condition, flag each numeric shift?"""
    from deepchecks.tabular import Dataset  # type: ignore[import-untyped]
    from deepchecks.tabular.checks import FeatureDrift  # type: ignore[import-untyped]

    from gitml.stages.deepchecks import quiet

    schema = replay.bundle.schema
    categorical = [c for c in replay.names if schema.column(c).output_dtype not in ("integer", "float")]
    numeric = [c.name for c in schema.feature_columns if c.output_dtype in ("integer", "float")]
    out: dict[str, dict[str, bool]] = {}
    with quiet():
        reference = Dataset(replay.reference.frame, cat_features=categorical)
        for name in numeric:
            out[name] = {}
            for amount in shifts:
                rows = scenarios.draw(
                    replay.pool, n, scenarios.parse(f"shift:{name}={amount}", schema), schema,
                    np.random.default_rng(seed),
                )  # fmt: skip
                check = FeatureDrift(columns=[name]).add_condition_drift_score_less_than()
                result = check.run(reference, Dataset(rows[replay.names], cat_features=categorical))
                out[name][str(amount)] = not all(c.is_pass() for c in result.conditions_results)
            print(f"deepchecks defaults, {name}: {out[name]}", file=sys.stderr, flush=True)
    return out


def table(results: dict[str, Any]) -> str:
    sizes = list(results)
    keys = [k for k in results[sizes[0]] if k not in ("false_alarms", "of", "seconds")]
    lines = ["| Detected (every seed) | " + " | ".join(f"{int(n):,} rows" for n in sizes) + " |"]
    lines.append("|---" * (len(sizes) + 1) + "|")
    lines.append(
        "| False alarms, unshifted | "
        + " | ".join(f"{results[n]['false_alarms']} of {results[n]['of']}" for n in sizes)
        + " |"
    )
    units = {"shift": "sd", "score": "sd", "new-category": "of rows", "label": "in the rate"}
    for key in keys:
        unit = units[key.split(":")[0]]
        cells = []
        for n in sizes:
            value = results[n][key]
            cells.append("not within the range tried" if value is None else f"{value:g} {unit}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path())
    parser.add_argument("--sizes", default="1000,5000,50000")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    replay = Replay(args.root)
    results = measure(replay, [int(s) for s in args.sizes.split(",")], args.seeds)
    print(table(results))
    compared = deepchecks_defaults(replay, 5000, (0.3, 0.5))
    print("\n| Shift at 5,000 rows | gitml drift | Deepchecks Feature Drift, default condition |\n|---|---|---|")
    for name, flagged in compared.items():
        for amount, hit in flagged.items():
            ours = results.get("5000", {}).get(f"shift:{name}")
            mine = "alarms" if ours is not None and ours <= float(amount) else "-"
            print(f"| {name} +{amount} sd | {mine} | {'alarms' if hit else 'misses'} |")
    if args.json:
        args.json.write_text(json.dumps({"drift": results, "deepchecks_defaults": compared}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
