"""The `gitml` command: one subcommand per pipeline stage, plus helpers around them.

dvc.yaml calls these subcommands; each reads params.yaml, runs its stage function and prints
one line about what it did. A problem in the user's data or config is printed as a message
that says what to do, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gitml.errors import GitmlError
from gitml.paths import Paths


def _params(paths: Paths) -> dict[str, object]:
    from gitml.config import load_params

    return load_params(paths.params)


def cmd_params(paths: Paths, args: argparse.Namespace) -> str:
    """Compose conf/ into params.yaml, or with --check fail if params.yaml is out of date."""
    from gitml.config import compose_params

    if not args.check:
        compose_params(paths.conf, paths.params, args.overrides)
        return f"params: composed {paths.conf.name}/ into {paths.params.name}"
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "params.yaml"
        compose_params(paths.conf, fresh, args.overrides)
        committed = paths.params.read_text(encoding="utf-8") if paths.params.is_file() else ""
        if fresh.read_text(encoding="utf-8") != committed:
            raise GitmlError(
                f"{paths.params} differs from what conf/ composes into. params.yaml is generated: "
                "edit conf/, then run `gitml params` (or `make params`) and commit both."
            )
    return f"params: {paths.params.name} matches {paths.conf.name}/"


def cmd_ingest(paths: Paths, args: argparse.Namespace) -> str:
    from gitml.data import ingest

    result = ingest.run(_params(paths), paths)
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(result.quarantined_by_reason.items())) or "none"
    return (
        f"ingest: {result.rows_read:,} rows read -> {result.rows_clean:,} clean, "
        f"{result.rows_quarantined:,} quarantined ({reasons})"
    )


def cmd_split(paths: Paths, args: argparse.Namespace) -> str:
    from gitml.data import split

    report = split.run(_params(paths), paths)
    sizes = ", ".join(f"{name} {report[name]['rows']:,}" for name in (*split.SPLITS, "reference"))
    return f"split: {sizes}"


def cmd_summary(paths: Paths, args: argparse.Namespace) -> str:
    from gitml.summary import pipeline_summary

    return pipeline_summary(paths)


COMMANDS: dict[str, tuple[Callable[[Paths, argparse.Namespace], str], str]] = {
    "params": (cmd_params, "compose conf/ into params.yaml (as `dvc exp run` does)"),
    "ingest": (cmd_ingest, "validate, quarantine and anonymise the raw data"),
    "split": (cmd_split, "seeded stratified train/val/test split and drift reference"),
    "summary": (cmd_summary, "print what the last pipeline run produced"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gitml", description="One tabular model, run the GitOps way.")
    parser.add_argument("--root", type=Path, default=Path(), help="repository root (default: .)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if name == "params":
            command.add_argument("--check", action="store_true", help="fail if params.yaml is out of date")
            command.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. split.seed=7")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = COMMANDS[args.command][0]
    try:
        print(handler(Paths(args.root), args))
    except GitmlError as exc:
        print(f"gitml {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
