"""`gitml gate`: every check of the gate in reports/gate.json, and the verdict.

It runs after `dvc repro`, not as a DVC stage: the champion comes from git (GTO's tags, main's
commits), which DVC does not track. It reads what the pipeline wrote (the model bundle, the
Deepchecks results, the test metrics, their bootstrap intervals, and with gates.baselines on, the
classical baselines' metrics), always writes its report, and exits 0 whatever the verdict;
`gitml gate --check` is what fails a run on a failed verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gitml.baseline import incomparable
from gitml.bundle import load as load_bundle
from gitml.checked_config import ConfigReader
from gitml.config import dataset_schema, section
from gitml.errors import GitmlError
from gitml.gates import SECTIONS as GATE_SECTIONS
from gitml.gates.baselines import BaselinesGateConfig, baselines_checks
from gitml.gates.champion import ChampionConfig, champion_checks, find_champion
from gitml.gates.checks import Check, number, verdict, why
from gitml.gates.fairness import fairness_checks, gated_limits
from gitml.outputs import BASELINES, CHECKS, GATE, INTERVALS, METRICS, ChecksFile, GateFile, MetricsFile
from gitml.paths import Paths

DEEPCHECKS_PASSING = {"PASS": (True, False), "WARN": (True, True), "FAIL": (False, False), "ERROR": (False, False)}


def deepchecks_checks(results: ChecksFile) -> list[Check]:
    """One check per Deepchecks condition; a check that could not run (ERROR) fails."""
    checks = []
    for item in results.get("conditions", []):
        category = str(item.get("category", "ERROR")).upper()
        passed, warning = DEEPCHECKS_PASSING.get(category, (False, False))
        name = f"deepchecks/{item['suite']}/{item['check']}"
        condition = str(item.get("condition", "")).strip()
        details = str(item.get("details", "")).strip()
        reason = f"{category}: {condition}" + (f" - {details}" if details else "")
        setting = item.get("setting")
        checks.append(
            Check(
                name,
                "deepchecks",
                None,
                None,
                passed,
                reason,
                warning=warning,
                setting=str(setting) if setting else None,
            )
        )
    return checks


def bundle_check(paths: Paths, metrics: MetricsFile) -> Check:
    """The model bundle verifies (gitml.bundle.load), and its manifest records the metrics the gate judges."""
    name = "bundle/verified"
    try:
        bundle = load_bundle(paths.models)
    except GitmlError as exc:
        return Check(name, "bundle", None, None, False, str(exc))
    recorded = bundle.manifest.metrics
    differ = sorted(k for k, v in metrics.get("test", {}).items() if k in recorded and recorded[k] != v)
    if differ:
        return Check(
            name, "bundle", None, None, False,
            f"{paths.manifest.name} records other test metrics ({', '.join(differ)}) than {paths.metrics.name}: "
            "the bundle and the evaluation come from different runs. Re-run `dvc repro`.",
        )  # fmt: skip
    files = ", ".join(sorted(bundle.manifest.files))
    return Check(name, "bundle", None, None, True, f"{files} match {paths.manifest.name} (sha256)")


def run(cfg: Mapping[str, Any], paths: Paths) -> GateFile:
    """Gather every check, decide, write reports/gate.json; returns what it holds."""
    source = paths.params.name
    gates = ConfigReader(source, "gates", section(cfg, "gates", paths.params), set(GATE_SECTIONS))
    schema = dataset_schema(cfg, paths.params)
    limits = gated_limits(gates.required("fairness"), source, [c.name for c in schema.protected_columns])
    metrics = METRICS.read(paths)
    intervals = INTERVALS.read(paths)
    results = CHECKS.read(paths)
    config = ChampionConfig.from_config(gates.required("champion"), source)
    baseline = find_champion(paths.root, config)
    other_problem = incomparable(cfg, baseline)
    against = BaselinesGateConfig.from_config(gates.required("baselines"), source)
    baselines = BASELINES.read(paths) if against.enabled else None

    checks = [
        bundle_check(paths, metrics),
        *deepchecks_checks(results),
        *fairness_checks(limits, metrics["fairness"], intervals.get("fairness", {}), float(intervals["confidence"])),
        *champion_checks(config, baseline, metrics, limits, intervals.get("fairness", {}), other_problem),
        *baselines_checks(against, metrics, baselines),
    ]
    outcome, reason = verdict(checks)
    report: GateFile = {
        "verdict": outcome,
        "reason": reason,
        "champion": {**baseline.as_dict(), "incomparable": other_problem},
        "checks": [c.as_dict() for c in checks],
        "counts": {
            "checks": len(checks),
            "failed": sum(not c.passed for c in checks),
            "warnings": sum(c.warning and c.passed for c in checks),
        },
    }
    GATE.write(paths, report)
    return report


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def check(paths: Paths) -> tuple[bool, str]:
    """The recorded verdict: (passed, the lines to print). Failing checks, then warnings, as a table."""
    report = GATE.read(paths)
    passed = report["verdict"] == "pass"
    lines = [f"gate: {'PASS' if passed else 'FAIL'}: {report['reason']}"]
    failing = [c for c in report["checks"] if not c["passed"]]
    warned = [c for c in report["checks"] if c["passed"] and c.get("warning")]
    for title, rows in (("failed", failing), ("passed with a warning", warned)):
        if not rows:
            continue
        lines.append(f"{title}:")
        table = [["check", "value", "limit", "why"]]
        table += [[c["name"], number(c["value"]), number(c["threshold"]), why(c)] for c in rows]
        lines += _table(table)
    champion = report["champion"]
    if champion.get("incomparable"):
        lines.append(f"champion: no comparable model: {champion['incomparable']}")
    else:
        lines.append(f"champion: {champion['description']}")
    if paths.report.is_file():
        lines.append(f"report: {paths.report.relative_to(paths.root)}")
    return passed, "\n".join(lines)


def message(report: GateFile, paths: Paths) -> str:
    return f"gate: {report['verdict']}: {report['reason']} -> {paths.gate.relative_to(paths.root)}"
