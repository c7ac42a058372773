"""The report's PNG figures, drawn with matplotlib from the evaluate and train stages' plot data.

Where main has the same data committed, its series is drawn dashed on the same axes. The PNGs
carry no software or date stamp, so the same data always gives the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gitml.report import Outputs

DPI = 100
THIS = "this branch"
COLOR = "C0"  # this branch
MAIN_COLOR = "C1"  # main, dashed


@dataclass(frozen=True)
class Drawn:
    """One figure written: its file, the title the report gives it, and its legend's series."""

    name: str
    path: Path
    title: str
    series: tuple[str, ...]


def _new(width: float, height: float, columns: int = 1) -> tuple[Figure, list[Axes]]:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)[0]
    return figure, list(axes)


def _save(figure: Figure, path: Path) -> None:
    # No "Software" stamp; PNGs from Agg carry no date: equal data give equal bytes.
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def _column(points: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [math.nan if p.get(key) is None else float(p[key]) for p in points]


def _curve(
    name: str, x: str, y: str, title: str, labels: tuple[str, str], now: Outputs, main: Outputs | None, main_label: str
) -> tuple[Figure, list[str]]:
    figure, (ax,) = _new(5.2, 4.0)
    series = []
    if main is not None and name in main.plots:
        points = main.plots[name]
        ax.plot(_column(points, x), _column(points, y), "--", color=MAIN_COLOR, label=main_label)
        series.append(main_label)
    points = now.plots[name]
    ax.plot(_column(points, x), _column(points, y), color=COLOR, label=THIS)
    series.append(THIS)
    ax.set(title=title, xlabel=labels[0], ylabel=labels[1], xlim=(0, 1), ylim=(0, 1.02))
    return figure, series


def _roc(now: Outputs, main: Outputs | None, main_label: str) -> tuple[Figure, list[str]]:
    figure, series = _curve(
        "roc", "fpr", "tpr", "ROC curve (test)", ("False positive rate", "True positive rate"), now, main, main_label
    )
    figure.axes[0].plot([0, 1], [0, 1], ":", color="grey", linewidth=1, label="chance")
    figure.axes[0].legend(loc="lower right")
    return figure, series


def _pr(now: Outputs, main: Outputs | None, main_label: str) -> tuple[Figure, list[str]]:
    figure, series = _curve(
        "pr", "recall", "precision", "Precision-recall (test)", ("Recall", "Precision"), now, main, main_label
    )
    base_rate = now.metrics["test"].get("positive_rate") if now.metrics else None
    if isinstance(base_rate, int | float):
        figure.axes[0].axhline(base_rate, linestyle=":", color="grey", linewidth=1, label="base rate")
    figure.axes[0].legend(loc="lower left")
    return figure, series


def _calibration(now: Outputs, main: Outputs | None, main_label: str) -> tuple[Figure, list[str]]:
    figure, (ax,) = _new(5.2, 4.0)
    series = []
    for outputs, label, color, line in ((main, main_label, MAIN_COLOR, "--"), (now, THIS, COLOR, "-")):
        if outputs is None or "calibration" not in outputs.plots:
            continue
        points = outputs.plots["calibration"]
        ax.plot(
            _column(points, "mean_predicted"), _column(points, "fraction_positive"), line, marker="o",
            markersize=3, color=color, label=label,
        )  # fmt: skip
        series.append(label)
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=1, label="perfectly calibrated")
    ax.set(title="Calibration (test)", xlabel="Mean predicted probability", ylabel="Observed positive rate")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper left")
    return figure, series


def _groups(now: Outputs, main: Outputs | None, main_label: str) -> tuple[Figure, list[str]]:
    """Selection rate and TPR of every group, side by side; main's bars beside this branch's."""
    rows = [(a, g, m) for a, groups in now.protected_groups().items() for g, m in groups.items()]
    before = main.protected_groups() if main is not None else {}
    compare = any(a in before for a, _, _ in rows)
    figure, axes = _new(7.6, max(2.6, 0.34 * len(rows) * (1.6 if compare else 1) + 1.2), columns=2)
    positions = list(range(len(rows)))[::-1]  # first group on top
    height = 0.4 if compare else 0.7
    series = [THIS, main_label] if compare else [THIS]
    for ax, key, title in zip(axes, ("selection_rate", "tpr"), ("Selection rate", "True positive rate"), strict=True):
        values = [math.nan if m.get(key) is None else float(m[key]) for _, _, m in rows]
        offset = height / 2 if compare else 0.0
        ax.barh([p + offset for p in positions], values, height=height, color=COLOR, label=THIS)
        if compare:
            old = [before.get(a, {}).get(g, {}).get(key) for a, g, _ in rows]
            numbers = [math.nan if v is None else float(v) for v in old]
            ax.barh([p - offset for p in positions], numbers, height=height, color=MAIN_COLOR, alpha=0.6,
                    label=main_label)  # fmt: skip
        ax.set(title=f"{title} by group (test)", xlabel=title, xlim=(0, 1))
        ax.set_yticks(positions, [f"{a}={g}" for a, g, _ in rows] if ax is axes[0] else [""] * len(rows))
        ax.grid(axis="y", visible=False)
    axes[1].legend(loc="lower right")
    return figure, series


def _training(now: Outputs, main: Outputs | None, main_label: str) -> tuple[Figure, list[str]]:
    """One panel per metric (loss, auroc, ...), one line per split; main's dashed."""
    panels: dict[str, list[str]] = {}
    for name in now.curves:
        panels.setdefault(name.rsplit("/", 1)[-1], []).append(name)
    figure, axes = _new(4.0 * len(panels) + 0.6, 3.4, columns=len(panels))
    series = []
    for ax, (metric, names) in zip(axes, panels.items(), strict=True):
        for i, name in enumerate(names):
            color = f"C{2 * i}"
            if main is not None and name in main.curves:
                steps, values = zip(*main.curves[name], strict=True)
                ax.plot(steps, values, "--", color=color, alpha=0.7, label=f"{main_label}: {name}")
                series.append(f"{main_label}: {name}")
            steps, values = zip(*now.curves[name], strict=True)
            ax.plot(steps, values, color=color, label=f"{THIS}: {name}")
            series.append(f"{THIS}: {name}")
        ax.set(title=f"Training: {metric}", xlabel="Step", ylabel=metric)
        ax.legend()
    return figure, series


def write_figures(directory: Path, now: Outputs, main: Outputs | None, main_label: str) -> list[Drawn]:
    """Draw every figure this branch has the data for; remove a figure whose data is gone."""
    directory.mkdir(parents=True, exist_ok=True)
    draw = {
        "roc": ("ROC curve", _roc, "roc" in now.plots),
        "pr": ("Precision-recall", _pr, "pr" in now.plots),
        "calibration": ("Calibration", _calibration, "calibration" in now.plots),
        "groups": ("Selection rate and TPR by group", _groups, bool(now.protected_groups())),
        "training": ("Training curves", _training, bool(now.curves)),
    }
    drawn = []
    # matplotlib's defaults, not a local matplotlibrc: the same figures on every machine.
    with (
        matplotlib.style.context("default"),
        matplotlib.rc_context(
            {"font.size": 9, "axes.titlesize": 10, "legend.fontsize": 8, "axes.grid": True, "grid.alpha": 0.3}
        ),
    ):
        for name, (title, function, available) in draw.items():
            path = directory / f"{name}.png"
            if not available:
                path.unlink(missing_ok=True)
                continue
            figure, series = function(now, main, main_label)
            _save(figure, path)
            drawn.append(Drawn(name, path, title, tuple(series)))
    return drawn
