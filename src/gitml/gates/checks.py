"""One gate check: what was measured, the limit, and whether it passed, in a line a person reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from gitml.evaluate.measures import Better


@dataclass(frozen=True)
class Check:
    """A row of reports/gate.json.

    warning: passed, but worth a look (a Deepchecks WARN; a fairness gap whose estimate is past
    its limit while its confidence interval still reaches back inside it).
    setting: the params.yaml key (from conf/) that sets the limit, where one does.
    """

    name: str
    kind: str
    value: float | None
    threshold: float | None
    passed: bool
    reason: str
    warning: bool = False
    interval: tuple[float, float] | None = None
    setting: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interval"] = list(self.interval) if self.interval is not None else None
        return out


def verdict(checks: list[Check]) -> tuple[str, str]:
    """("pass" | "fail", one line saying why)."""
    failed = [c for c in checks if not c.passed]
    warnings = sum(c.warning for c in checks if c.passed)
    noted = f" ({warnings} with a warning)" if warnings else ""
    if not failed:
        return "pass", f"all {len(checks)} checks passed{noted}"
    names = ", ".join(c.name for c in failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
    return "fail", f"{len(failed)} of {len(checks)} checks failed: {names}"


def why(check: Mapping[str, Any]) -> str:
    """The reason of a check of reports/gate.json, with the key that sets its limit."""
    reason = str(check.get("reason", ""))
    return f"{reason} [limit: {check['setting']}]" if check.get("setting") else reason


def number(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def past(value: float, limit: float, better: Better) -> bool:
    """Whether `value` is on the wrong side of `limit` for a measure where `better` is up or down."""
    return value > limit if better == "lower" else value < limit


def interval_past(bounds: tuple[float, float], limit: float, better: Better) -> bool:
    """The interval rule of every check decided on an interval: fail only when the whole interval
    is past the limit, its most favourable end too; otherwise the test split cannot tell a real
    gap from a noisy one."""
    low, high = bounds
    return past(low if better == "lower" else high, limit, better)
