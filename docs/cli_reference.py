"""Write docs/cli.md, the `gitml` command reference, from the CLI's own argparse parser.

    .venv/bin/python docs/cli_reference.py           rewrite docs/cli.md
    .venv/bin/python docs/cli_reference.py --check   exit 1 if docs/cli.md is out of date

Everything comes from `gitml.cli.build_parser()`: each subcommand's description, its usage line
and every argument with its help and default, in the parser's order, grouped by the package that
defines the subcommand. tests/test_cli_reference.py fails when the file is out of date.
"""

from __future__ import annotations

import argparse
import functools
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "cli.md"
REFRESH = ".venv/bin/python docs/cli_reference.py"
# Subcommands by the package whose module defines them (gitml.cli.COMMANDS), in this order; a
# subcommand from any other package goes under OTHER.
GROUPS = (
    ("gitml.cli", "The pipeline, serving and your data"),
    ("gitml.release", "Releases and deployments"),
    ("gitml.logs", "Monitoring and retraining"),
    ("gitml.monitor", "Monitoring and retraining"),
)
OTHER = "Other commands"
# Wide enough that argparse never wraps a usage line, whatever the terminal's COLUMNS says.
WIDE = functools.partial(argparse.HelpFormatter, width=10_000)


def _cli() -> argparse.ArgumentParser:
    try:
        from gitml.cli import build_parser
    except ImportError:  # run with a Python where gitml is not installed: use the checkout's
        sys.path.insert(0, str(REPO / "src"))
        from gitml.cli import build_parser
    return build_parser()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Each subcommand's parser, by name, in the order the CLI adds them."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def group_of(name: str) -> str:
    """The heading a subcommand goes under: the package of the module that handles it."""
    from gitml.cli import COMMANDS

    module = getattr(COMMANDS.get(name, (None,))[0], "__module__", "") or ""
    for package, title in GROUPS:
        if module == package or module.startswith(package + "."):
            return title
    return OTHER


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage line argparse prints, on one line."""
    parser.formatter_class = WIDE
    return " ".join(parser.format_usage().split()).removeprefix("usage: ")


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar) if not isinstance(action.metavar, tuple) else " ".join(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest if not action.option_strings else action.dest.upper()


def argument(action: argparse.Action) -> str:
    """How the argument is written: `--port PORT`, `--check`, `overrides ...`."""
    name = _metavar(action)
    nargs = action.nargs
    if nargs == 0:
        value = ""
    elif nargs is None:
        value = name
    elif nargs == "?":
        value = f"[{name}]"
    elif nargs == "*":
        value = f"[{name} ...]"
    elif nargs == "+":
        value = f"{name} [{name} ...]"
    elif isinstance(nargs, int):
        value = " ".join([name] * nargs)
    else:
        value = name
    if not action.option_strings:
        return value
    return ", ".join(action.option_strings) + (f" {value}" if value else "")


def help_text(action: argparse.Action, prog: str) -> str:
    """The help string with argparse's %(default)s-style fields filled in, as `--help` shows it."""
    text = action.help or ""
    if "%" not in text:
        return text
    fields = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    fields["prog"] = prog
    for key, value in list(fields.items()):
        if hasattr(value, "__name__"):
            fields[key] = value.__name__
    if fields.get("choices") is not None:
        fields["choices"] = ", ".join(str(c) for c in fields["choices"])
    return text % fields


def _shown(value: object) -> str:
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def default(action: argparse.Action) -> str:
    """What argparse uses when the argument is not given; empty where the help says it."""
    if action.nargs in ("*", "?") and not action.option_strings:
        return "none" if action.default in (None, argparse.SUPPRESS) else f"`{_shown(action.default)}`"
    if action.required:
        return "required"
    if action.nargs == 0:  # a flag
        return "off"
    if action.default is None or action.default is argparse.SUPPRESS:
        return ""
    return f"`{_shown(action.default)}`"


def sentence(text: str) -> str:
    """A help string as a sentence: a capital first, a full stop last."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _arguments_table(parser: argparse.ArgumentParser) -> list[str]:
    shown = [a for a in parser._actions if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]
    if not shown:
        return ["No arguments."]
    lines = ["| argument | what | default |", "| --- | --- | --- |"]
    for action in shown:
        what = _cell(help_text(action, parser.prog))
        lines.append(f"| `{_cell(argument(action))}` | {what} | {default(action)} |")
    return lines


def _wrap(text: str) -> list[str]:
    return textwrap.wrap(text, width=100, break_long_words=False, break_on_hyphens=False)


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """docs/cli.md, as text."""
    parser = parser or _cli()
    commands = subcommands(parser)
    groups: dict[str, list[str]] = {title: [] for _, title in GROUPS}
    groups[OTHER] = []
    for name in commands:
        groups[group_of(name)].append(name)
    out = [
        "<!-- Generated from gitml's parser (src/gitml/cli.py) by docs/cli_reference.py: do not edit.",
        f"     Refresh it with: {REFRESH} -->",
        "",
        "# The gitml command",
        "",
        *_wrap(
            f"{parser.description} Every subcommand, as `gitml <subcommand> --help` prints it: what it "
            "does, its usage, and each argument with its help and default. Where the default is left "
            "empty, the help says where it comes from, most often a key of `params.yaml` (composed "
            "from `conf/`)."
        ),
        "",
        "```",
        usage(parser),
        "```",
        "",
        *_arguments_table(parser),
        "",
        *_wrap(
            "Every subcommand also takes `-h`, `--help`. A mistake in your data or configuration is "
            "printed as `gitml <subcommand>: error: ...`, without a traceback, and exits non-zero."
        ),
        "",
    ]
    for title, names in groups.items():
        if not names:
            continue
        out += [f"## {title}", "", "| subcommand | what |", "| --- | --- |"]
        out += [f"| [`{n}`](#gitml-{n}) | {_cell(commands[n].description or '')} |" for n in names]
        out.append("")
        for name in names:
            command = commands[name]
            out += [f"### gitml {name}", "", sentence(command.description or ""), "", "```", usage(command), "```", ""]
            out += [*_arguments_table(command), ""]
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description="Write docs/cli.md from gitml's parser.")
    cli.add_argument("--check", action="store_true", help="exit 1 if the file is out of date; write nothing")
    cli.add_argument("--out", type=Path, default=OUT, help="where the reference goes (default: docs/cli.md)")
    args = cli.parse_args(argv)
    text = render()
    current = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
    if args.check:
        if current != text:
            print(f"{args.out} is out of date with gitml's parser; refresh it with: {REFRESH}", file=sys.stderr)
            return 1
        print(f"{args.out} matches gitml's parser")
        return 0
    if current != text:
        args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}" if current != text else f"{args.out} was up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
