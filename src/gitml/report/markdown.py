"""reports/report.md: the pull request's report, GitHub Markdown for `cml comment update`.

The verdict, the headline metrics against main and the failed and warned checks come first and open; the
long tables (all checks, per-group metrics, parameters, lineage) fold into <details>.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

from gitml.baseline import Baseline
from gitml.data.split import SPLITS
from gitml.errors import GitmlError
from gitml.evaluate.classical import NAMES, best_test, in_order
from gitml.evaluate.measures import label
from gitml.gates.checks import why
from gitml.paths import MANIFEST, MODEL, PREPROCESS, THRESHOLD, Paths
from gitml.report import Lineage, Outputs, relative
from gitml.report.figures import Drawn
from gitml.runlog import latest_parts, latest_seconds

NONE = "—"
RATES = ("size", "positives", "base_rate", "selection_rate", "tpr", "fpr", "precision", "accuracy")
RATE_NAMES = ("Group", "Size", "Positives", "Base rate", "Selection rate", "TPR", "FPR", "Precision", "Accuracy")
FAIRNESS_TERMS = (
    "`*_difference`: the largest group's rate minus the smallest's; `*_ratio`: the smallest over the largest. "
    "Demographic parity compares selection rates, equal opportunity true positive rates, equalized odds the "
    "larger of the TPR and FPR gaps."
)


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(value: Any) -> str:
    """A metric for a table: thousands separators for counts, four decimals for rates."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4f}"


def change(new: Any, old: Any) -> str:
    """this branch minus main, signed; bold where it moved."""
    if not is_number(old):
        return "new" if is_number(new) else NONE
    if not is_number(new):
        return "removed"
    delta = new - old
    if delta == 0:
        return "0"
    return f"**{'+' if delta > 0 else ''}{number(delta)}**"


def ci(intervals: Mapping[str, Any] | None) -> str:
    """The intervals' column name: `95% CI` for reports/intervals.json's confidence 0.95."""
    confidence = (intervals or {}).get("confidence", 0.95)
    return f"{confidence:.0%} CI" if is_number(confidence) else "CI"


def interval(bounds: Any) -> str:
    if not isinstance(bounds, Sequence) or len(bounds) != 2 or not all(is_number(b) for b in bounds):
        return NONE
    return f"[{number(bounds[0])}, {number(bounds[1])}]"


def cell(value: Any) -> str:
    """Text safe inside a table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def code(value: Any) -> str:
    return f"`{cell(value)}`"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], right: int = 0) -> list[str]:
    """A GFM table; the last `right` columns are right-aligned (numbers)."""
    align = ["---"] * (len(header) - right) + ["---:"] * right
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return lines


def details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>", ""]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (model.optimizer.lr); lists and empty mappings are values."""
    if not isinstance(value, Mapping) or (not value and prefix):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat |= flatten(item, f"{prefix}.{key}" if prefix else str(key))
    return flat


def numbers(value: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The numeric leaves of a metrics file, dotted (what `dvc metrics diff` compares)."""
    flat = flatten(value or {})
    return {k: v for k, v in flat.items() if is_number(v) and not k.startswith(skip)}


# --- the verdict and the gate ------------------------------------------------------------------


def verdict_line(gate: Mapping[str, Any] | None, gate_path: str) -> str:
    if gate is None:
        return f"### ⚪ Gate not run: {gate_path} not found. Run `gitml gate` after `dvc repro` for a verdict."
    verdict, reason = gate.get("verdict"), cell(gate.get("reason") or "no reason given")
    if verdict == "pass":
        return f"### ✅ Gate passed: {reason}"
    if verdict == "fail":
        return f"### ❌ Gate failed: {reason}"
    return f"### ⚪ Gate verdict {verdict!r}: {reason}"


def _mark(check: Mapping[str, Any]) -> str:
    if not check.get("passed"):
        return "❌"
    return "⚠️" if check.get("warning") else "✅"


def ordered_checks(gate: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """Failed first, then warnings, then the rest; otherwise in the gate's order."""
    checks = [c for c in (gate or {}).get("checks") or [] if isinstance(c, Mapping)]
    return sorted(checks, key=lambda c: 0 if not c.get("passed") else 1 if c.get("warning") else 2)


def check_rows(checks: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for check in checks:
        value = number(check.get("value"))
        if check.get("interval") is not None:
            value += f" {interval(check.get('interval'))}"
        threshold = NONE if check.get("threshold") is None else number(check.get("threshold"))
        rows.append(
            [_mark(check), code(check.get("name", "?")), cell(check.get("kind", "")), value, threshold,
             cell(why(check))]
        )  # fmt: skip
    return rows


CHECK_HEADER = ("", "Check", "Kind", "Value [interval]", "Threshold", "Reason")


def gate_sections(gate: Mapping[str, Any] | None) -> tuple[list[str], list[str]]:
    """The failed checks and those passed with a warning (shown open), and every check (folded)."""
    if gate is None:
        return [], []
    checks = ordered_checks(gate)
    failed = [c for c in checks if not c.get("passed")]
    warnings = [c for c in checks if c.get("passed") and c.get("warning")]
    open_part = []
    if failed:
        open_part = ["#### Failed checks", "", *table(CHECK_HEADER, check_rows(failed)), ""]
    if warnings:
        open_part += ["#### Passed with a warning", "", *table(CHECK_HEADER, check_rows(warnings)), ""]
    warned = len(warnings)
    summary = f"All {len(checks)} gate checks: {len(failed)} failed, {warned} warning{'s' if warned != 1 else ''}"
    folded = details(summary, table(CHECK_HEADER, check_rows(checks))) if checks else []
    return open_part, folded


# --- metrics, parameters, fairness ---------------------------------------------------------------


def metric_table(files: Sequence[tuple[str, Any, Any]], compare: bool) -> tuple[list[str], int, int]:
    """Rows like `dvc metrics diff --md` over (path, this branch, main); also rows and changed counts."""
    rows, changed = [], 0
    for path, now, old in files:
        new_values, old_values = numbers(now, ("fairness",)), numbers(old, ("fairness",))
        for key in [*new_values, *(k for k in old_values if k not in new_values)]:
            new, before = new_values.get(key), old_values.get(key)
            if not compare:
                rows.append([path, key, number(new)])
                continue
            moved = change(new, before)
            changed += moved not in ("0", NONE)
            rows.append([path, key, NONE if before is None else number(before), NONE if new is None else number(new),
                         moved])  # fmt: skip
    header = ("Path", "Metric", "main", "this branch", "Change") if compare else ("Path", "Metric", "Value")
    return table(header, rows, right=3 if compare else 1), len(rows), changed


def params_section(now: Mapping[str, Any], main: Outputs | None) -> list[str]:
    if main is None:
        return ["No main to compare parameters with.", ""]
    if main.params is None:
        return ["main has no params.yaml committed: nothing to compare parameters with.", ""]
    new, old = flatten(now), flatten(main.params)
    keys = sorted(k for k in {*new, *old} if new.get(k, ...) != old.get(k, ...))
    if not keys:
        return ["No parameter changed.", ""]

    def shown(flat: Mapping[str, Any], key: str) -> str:
        return code(json.dumps(flat[key]) if not isinstance(flat[key], str) else flat[key]) if key in flat else NONE

    rows = [[code(k), shown(old, k), shown(new, k)] for k in keys]
    noun = "parameter" if len(keys) == 1 else "parameters"
    return details(f"{len(keys)} {noun} changed", table(("Param", "main", "this branch"), rows))


def group_table(groups: Mapping[str, Mapping[str, Any]]) -> list[str]:
    rows = []
    for group, m in groups.items():
        size, base = m.get("size"), m.get("base_rate")
        metrics = {**m, "positives": round(size * base) if is_number(size) and is_number(base) else None}
        rows.append([cell(group), *(number(metrics.get(k)) for k in RATES)])
    return table(RATE_NAMES, rows, right=len(RATES))


def fairness_summary_rows(
    attribute: str, now: Mapping[str, Any], old: Mapping[str, Any] | None, intervals: Mapping[str, Any] | None
) -> list[list[str]]:
    rows = []
    new_values = {k: v for k, v in now.items() if is_number(v) or v is None}
    for key, value in new_values.items():
        row = [attribute, code(key)]
        if old is not None:
            row += [number(old.get(key)) if key in old else NONE]
        row += [number(value)]
        if old is not None:
            row += [change(value, old.get(key))]
        row += [interval((intervals or {}).get(key))]
        rows.append(row)
    return rows


def _left_out(summary: Mapping[str, Any], min_size: Any, min_cases: Any) -> str:
    """Which groups a summary leaves out, and why; empty where it compares them all."""
    notes = []
    small = summary.get("groups_too_small") or []
    if small:
        notes.append(f"Left out of the gaps (fewer than {number(min_size)} rows): {', '.join(map(str, small))}.")
    tpr_compared = summary.get("groups_compared_tpr")
    if isinstance(tpr_compared, list):
        few = [g for g in summary.get("groups_compared") or [] if g not in tpr_compared]
        if few:
            notes.append(
                f"Left out of the TPR gaps (fewer than {number(min_cases)} positives): {', '.join(map(str, few))}."
            )
    return " ".join(notes)


def fairness_section(now: Outputs, main: Outputs | None) -> list[str]:
    """The gaps of every protected attribute against main, then every group's metrics, both folded."""
    summaries: Mapping[str, Any] = now.metrics["fairness"] if now.metrics else {}
    old_summaries: Mapping[str, Any] | None = None if main is None else main.metrics["fairness"] if main.metrics else {}
    intervals: Mapping[str, Any] = now.intervals["fairness"] if now.intervals else {}
    groups = now.protected_groups()
    if not summaries and not groups:
        return ["No protected attribute is declared in the dataset config: no fairness metrics.", ""]
    compare = old_summaries is not None
    header = ["Attribute", "Metric", *(["main"] if compare else []), "this branch", *(["Change"] if compare else [])]
    rows = []
    for attribute, summary in summaries.items():
        old = old_summaries.get(attribute, {}) if old_summaries is not None else None
        rows += fairness_summary_rows(attribute, summary, old, intervals.get(attribute))
    changed = sum(1 for row in rows if compare and row[4] not in ("0", NONE))
    min_size, min_cases = (now.fairness or {}).get("min_group_size"), (now.fairness or {}).get("min_group_cases")
    names = ", ".join(summaries) or "none"
    gaps = f"Gaps between groups of {names}, with {ci(now.intervals)}s" + (f": {changed} changed" if compare else "")
    per_group = []
    for attribute, members in groups.items():
        note = _left_out(summaries.get(attribute) or {}, min_size, min_cases)
        per_group += [f"**{cell(attribute)}**", "", *group_table(members), "", *([note, ""] if note else [])]
    sizes = ", ".join(f"{a} ({len(m)})" for a, m in groups.items())
    return [
        *details(
            gaps,
            [
                f"Over the groups with at least {number(min_size)} test rows. {FAIRNESS_TERMS}",
                "",
                *table([*header, ci(now.intervals)], rows, right=len(header) - 1),
            ],
        ),
        *details(f"Metrics of every group: {sizes}", per_group[:-1]),
    ]


# --- the network against the classical baselines ------------------------------------------------

BASELINE_METRICS = ("auroc", "accuracy", "ece", "brier")
BASELINES_HOW = (
    "Fitted on the same train split with the same seed and inputs, each with its threshold chosen on val by the "
    "network's rule, and scored on the same test rows with the same metrics: logistic regression on the network's "
    "preprocessed inputs, gradient boosting (scikit-learn's HistGradientBoostingClassifier, default settings) on "
    "the raw columns with categories as native categorical features. The fairness rows are the gaps the gate holds "
    "to a limit (gates.fairness)."
)


def gated_gaps(params: Mapping[str, Any], attributes: Iterable[str]) -> list[tuple[str, str]]:
    """(attribute, summary) of every fairness summary the gate holds to a limit (gates.fairness)."""
    from gitml.gates.fairness import gated_limits

    fairness = (params.get("gates") or {}).get("fairness")
    try:
        limits = gated_limits(fairness or {}, "params.yaml", list(attributes))
    except GitmlError:  # the gate names the mistake; the report shows the gaps it can
        return []
    return [(attribute, metric) for attribute, metrics in limits.items() for metric in metrics]


def versus_best(now: Outputs) -> str:
    """One line: the network's test AUROC against the best baseline's, or why there is none."""
    found = now.baselines
    if found is None:
        return "**Baselines:** none, reports/baselines.json not found (the baselines stage writes it: run `dvc repro`)."
    if not found.get("enabled"):
        return "**Baselines off** (`baselines.enabled: false`): the network is not compared with classical models."
    best, test = best_test(found) or (None, {})
    ours = now.metrics["test"].get("auroc") if now.metrics else None
    theirs = test.get("auroc")
    if not is_number(ours) or not is_number(theirs):
        return "**Network vs best baseline:** no test AUROC to compare."
    return (
        f"**Network vs best baseline** ({NAMES.get(str(best), best)}): {ours - theirs:+.3f} test AUROC "
        f"({ours:.3f} vs {theirs:.3f})."
    )


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def baselines_table(
    now: Outputs, gated: Sequence[tuple[str, str]], seconds: Mapping[str, float] | None = None
) -> list[str]:
    """The network and every baseline side by side: headline metrics, each gated gap, the threshold
    and, where `seconds` gives them (the run log: never in a committed file), the fit times."""
    found = now.baselines
    if found is None or not found.get("enabled") or not found["models"]:
        return []
    columns: list[tuple[str, Any]] = [("network", now.metrics)]
    columns += [(name, found["models"][name]) for name in in_order(found["models"])]
    best = found.get("best")
    header = ["Test", *(NAMES.get(name, name) + (" (best)" if name == best else "") for name, _ in columns)]
    shown: list[tuple[str, tuple[str, ...]]] = [(label(metric), ("test", metric)) for metric in BASELINE_METRICS]
    shown += [(f"{attribute} {label(metric)}", ("fairness", attribute, metric)) for attribute, metric in gated]
    shown.append(("threshold (on val)", ("threshold", "value")))
    rows = [[name, *(number(_dig(metrics, *keys)) for _, metrics in columns)] for name, keys in shown]
    if seconds is not None:
        rows.append(["fit seconds", *(_seconds(seconds.get(name)) for name, _ in columns)])
    return table(header, rows, right=len(columns))


def _seconds(value: float | None) -> str:
    return NONE if value is None else f"{value:.1f}"


def baselines_section(paths: Paths, now: Outputs, gated: Sequence[tuple[str, str]]) -> list[str]:
    found = now.baselines
    if found is None or not found.get("enabled"):
        return [versus_best(now), ""]
    seconds: dict[str, float] = dict(latest_parts(paths, "baselines"))
    trained = latest_seconds(paths).get("train")
    if trained is not None:
        seconds["network"] = trained
    timed = " Fit seconds: this machine's latest run (logs/stages.jsonl), the network's its whole train stage."
    return [
        BASELINES_HOW + (timed if seconds else ""),
        "",
        *baselines_table(now, gated, seconds if seconds else None),
        "",
    ]


# --- lineage ------------------------------------------------------------------------------------


def _short(digest: str | None, length: int = 12) -> str:
    return NONE if digest is None else code(digest[:length])


def _commit(lineage: Lineage) -> str:
    if lineage.commit is None:
        return "not a git repository"
    text = code(lineage.short)
    if lineage.changed_paths:
        text += f", with uncommitted changes in {lineage.changed_paths} path{'s' if lineage.changed_paths > 1 else ''}"
    return text


def _file(lineage: Lineage, name: str) -> str:
    """A bundle file's sha256 as the manifest records it, and its size where it is on disk."""
    digest = lineage.manifest.files.get(name) if lineage.manifest else None
    size = f"{number(lineage.model_bytes)} bytes, " if name == MODEL and lineage.model_bytes is not None else ""
    return f"{size}sha256 {_short(digest)}" if digest else NONE


def _bundle(lineage: Lineage) -> str:
    if lineage.manifest is None:
        return "no manifest: the evaluate stage has not completed the bundle"
    if lineage.verified is not None:
        return f"❌ {cell(lineage.verified)}"
    return f"✅ its files match `{MANIFEST}` (format {lineage.manifest.format_version})"


def _training(train: Mapping[str, Any] | None, seconds: float | None = None) -> str:
    """Epochs and device from reports/train.json; the time, where known, from the run log."""
    if not train:
        return NONE
    took = f", {seconds:.1f} s" if is_number(seconds) else ""
    return (
        f"{train.get('epochs', '?')} epochs (best {train.get('best_epoch', '?')}){took} on {train.get('device', '?')}"
    )


def lineage_section(
    paths: Paths, now: Outputs, lineage: Lineage, main: Outputs | None, main_lineage: Lineage | None
) -> list[str]:
    """The bundle's manifest (this branch's and main's): the data, params and files the model came from."""
    found = {*lineage.data, *(main_lineage.data if main_lineage else {})}
    splits = [s for s in SPLITS if s in found] + sorted(found - set(SPLITS))

    def column(of: Lineage, train: Mapping[str, Any] | None, seconds: float | None) -> list[str]:
        return [
            _commit(of) if of is lineage else code(of.short),
            *(_short(of.data.get(split)) for split in splits),
            _short(of.manifest.params_sha256 if of.manifest else None),
            *(_file(of, name) for name in (MODEL, PREPROCESS, THRESHOLD)),
            _training(train, seconds),
        ]

    names = [
        "Commit",
        *(f"{code(relative(paths, paths.split_file(split)))} (sha256)" for split in splits),
        "params (sha256 of the sections that shape the model)",
        *(code(relative(paths, paths.models / name)) for name in (MODEL, PREPROCESS, THRESHOLD)),
        "Training",
    ]
    columns = [column(lineage, now.train, latest_seconds(paths).get("train"))]
    if main is not None and main_lineage is not None:
        columns.append(column(main_lineage, main.train, None))
    rows = [[name, *cells] for name, *cells in zip(names, *columns, strict=True)]
    rows.insert(1, ["Bundle", _bundle(lineage), *([NONE] if len(columns) > 1 else [])])
    header = ("", "this branch", "main") if len(columns) > 1 else ("", "this branch")
    train = lineage.data.get("train")
    summary = f"Lineage: commit {lineage.short}" + (f", train data sha256 {train[:8]}" if train else "")
    if main_lineage is not None and main_lineage.manifest is not None and lineage.manifest is not None:
        same = lineage.data == main_lineage.data
        summary += ", same data as main" if same else ", <b>data differs from main</b>"
    return details(summary, table(header, rows))


# --- the report ---------------------------------------------------------------------------------


def figure_lines(paths: Paths, figures: Sequence[Drawn], names: Sequence[str]) -> list[str]:
    lines = []
    for figure in figures:
        if figure.name in names:
            link = figure.path.relative_to(paths.report.parent).as_posix()
            lines += [f"![{figure.title}]({link})", ""]
    return lines


def baseline_line(baseline: Baseline, main: Outputs | None, incomparable: str | None = None) -> str:
    if incomparable is not None:
        return (
            f"**No comparable model:** {incomparable}. Another problem's metrics say nothing about this "
            "one, so nothing is compared and no champion gates; values below are this model's alone."
        )
    if main is None:
        why = baseline.description.removeprefix("nothing to compare with: ")
        return f"No main to compare with: {why}. Values below are this branch's alone."
    if main.metrics is None:
        return f"Compared with {baseline.description}, which has no committed metrics: no changes to show."
    return f"Compared with {baseline.description}; main's curves are dashed in the plots."


def render_report(
    paths: Paths,
    params: Mapping[str, Any],
    now: Outputs,
    main: Outputs | None,
    baseline: Baseline,
    lineage: Lineage,
    main_lineage: Lineage | None,
    figures: Sequence[Drawn],
    incomparable: str | None = None,
) -> str:
    """The whole report.md; `incomparable` says why main's model is not compared (another dataset)."""
    compare = main is not None

    def files(*pairs: tuple[str, str]) -> list[tuple[str, Any, Any]]:
        return [(path, getattr(now, attr), getattr(main, attr) if main else None) for path, attr in pairs]

    headline, _, _ = metric_table(files((relative(paths, paths.metrics), "metrics")), compare)
    others, count, changed = metric_table(
        files(
            (relative(paths, paths.train_report), "train"),
            (relative(paths, paths.export_report), "export"),
            (relative(paths, paths.dvclive / "metrics.json"), "live"),
        ),
        compare,
    )
    moved = f", {changed} of {count} changed" if compare else ""
    gate = now.gate
    failed, every_check = gate_sections(gate)
    champion: Mapping[str, Any] = gate["champion"] if gate else {}
    champion_differs = bool(champion.get("description")) and champion.get("commit") != baseline.commit
    gated = gated_gaps(params, now.metrics["fairness"] if now.metrics else {})
    lines = [
        verdict_line(gate, relative(paths, paths.gate)),
        "",
        baseline_line(baseline, main, incomparable),
        *(
            [f"The gate compared with the champion: {cell(champion['description'])}."]
            if champion_differs and not champion.get("incomparable")
            else []
        ),
        "",
        versus_best(now),
        "",
        *failed,
        "#### Test metrics",
        "",
        *headline,
        "",
        *(details(f"Training and export metrics{moved}", others) if count else []),
        "#### Network and baselines (test)",
        "",
        *baselines_section(paths, now, gated),
        "#### Parameters",
        "",
        *params_section(params, main),
        *(["#### Gate", "", *every_check] if every_check else []),
        "#### Fairness (test)",
        "",
        *fairness_section(now, main),
        *figure_lines(paths, figures, ("groups",)),
        "#### Plots",
        "",
        *(figure_lines(paths, figures, ("roc", "pr", "calibration", "training")) or ["No plot data found.", ""]),
        "#### Lineage",
        "",
        *lineage_section(paths, now, lineage, main, main_lineage),
        f"Written by `gitml report`, with the model card {relative(paths, paths.model_card)}.",
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
