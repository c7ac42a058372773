"""The `gitml drift` command line: arguments, time windows, outputs and the exit status.

Importing this module is cheap (the command line lists every subcommand at start-up); the check
itself (gitml.monitor.drift: pandas, SciPy, scikit-learn) is imported when the command runs.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gitml.errors import ExitStatus, GitmlError
from gitml.paths import Paths

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str, what: str) -> timedelta:
    """'90m', '24h', '7d' as a timedelta; a GitmlError names the accepted forms."""
    match = DURATION.match(str(text))
    if not match:
        raise GitmlError(f"{what}: '{text}' is not a duration; write a number and a unit: 30m, 24h, 7d, 2w")
    return timedelta(seconds=float(match.group(1)) * UNITS[match.group(2)])


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 moment (UTC unless it says otherwise), or a duration before now ('24h' ago)."""
    if DURATION.match(text):
        return datetime.now(UTC) - duration(text, what)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise GitmlError(
            f"{what} '{text}': not a time; give ISO 8601 (2026-12-01T00:00:00Z) or a duration before now (24h)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def stamp(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_drift(paths: Paths, args: argparse.Namespace) -> str:
    from gitml.config import load_params, section
    from gitml.io import write_json
    from gitml.monitor import drift_report
    from gitml.monitor.drift import DriftConfig, check, from_logs, from_table, load_bundle

    started = time.perf_counter()
    params = load_params(paths.params)
    config = DriftConfig.from_config(section(params, "drift", paths.params), paths.params.name)
    bundle = load_bundle(paths)
    if args.data is not None:
        if args.logs is not None:
            raise GitmlError("give either --data (a table of records) or --logs (the server's logs), not both")
        production = from_table(args.data, bundle)
    else:
        until = parse_time(args.until, "--until") if args.until else datetime.now(UTC)
        since = parse_time(args.since, "--since") if args.since else until - config.window
        if since >= until:
            raise GitmlError(f"--since {stamp(since)} is not before --until {stamp(until)}")
        source = args.logs or default_logs(params, paths)
        production = from_logs(source, bundle, since, until)
    result = check(paths, params, production, bundle, config)
    out = args.out if args.out.is_absolute() else paths.root / args.out
    out.mkdir(parents=True, exist_ok=True)
    html = None
    if config.deepchecks_rows and not args.no_html:
        html = drift_report.deepchecks_html(bundle, result.reference, production, config, out / "drift.html")
    result.report["html"] = None if html is None else html.name
    result.report["seconds"] = round(time.perf_counter() - started, 2)
    write_json(out / "drift.json", result.report)
    markdown = drift_report.markdown(result.report, result.findings)
    (out / "drift.md").write_text(markdown, encoding="utf-8")
    summary = drift_report.one_line(result.report, out)
    if result.drifted:
        raise ExitStatus(summary, 1)
    return summary


def default_logs(params: Mapping[str, Any], paths: Paths) -> str:
    """Where the logs are when --logs is not given: serve.prediction_log.storage, else the log directory."""
    serve = params.get("serve", {})
    log = serve.get("prediction_log", {}) if isinstance(serve, Mapping) else {}
    for key in ("storage", "dir"):
        value = log.get(key) if isinstance(log, Mapping) else None
        if value:
            text = str(value)
            return text if "://" in text or Path(text).is_absolute() else str(paths.root / text)
    raise GitmlError("no log location: give --logs DIR|URL, or set serve.prediction_log.storage in conf/serve/")


def _arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("what to check (the server's logs by default)")
    source.add_argument(
        "--logs", help="a log directory or storage URL (s3://bucket/prefix); default serve.prediction_log.storage"
    )
    source.add_argument("--data", type=Path, help="a CSV or Parquet table of records instead of the logs")
    parser.add_argument(
        "--since", help="start of the window: ISO 8601 time, or a duration before now (default drift.window)"
    )
    parser.add_argument("--until", help="end of the window: ISO 8601 time, or a duration before now (default now)")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="folder for drift.json, drift.md, drift.html")
    parser.add_argument("--no-html", action="store_true", help="skip Deepchecks' HTML report")


COMMANDS: dict[
    str, tuple[Callable[[Paths, argparse.Namespace], str], str, Callable[[argparse.ArgumentParser], None]]
] = {
    "drift": (
        cmd_drift,
        "check production data for drift against the training reference (exit 1 on drift)",
        _arguments,
    ),
}
