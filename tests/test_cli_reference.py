"""docs/cli.md is what docs/cli_reference.py writes from gitml's parser today: a new subcommand, a
changed option or help text fails here until the reference is refreshed."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gitml.cli import build_parser
from tests.conftest import REPO

CLI_MD = REPO / "docs" / "cli.md"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    """docs/cli_reference.py as a module (docs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("cli_reference", REPO / "docs" / "cli_reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_docs_cli_md_is_up_to_date(generator: ModuleType) -> None:
    fresh = generator.render()
    committed = CLI_MD.read_text(encoding="utf-8") if CLI_MD.is_file() else ""
    assert committed == fresh, (
        f"docs/cli.md is out of date with gitml's parser (src/gitml/cli.py); refresh it with: {generator.REFRESH}"
    )


def test_every_subcommand_and_argument_is_in_the_reference(generator: ModuleType) -> None:
    text = generator.render()
    parser = build_parser()
    for name, command in generator.subcommands(parser).items():
        assert f"\n### gitml {name}\n" in text, name
        assert f"[`{name}`](#gitml-{name})" in text, name
        for action in command._actions:
            if action.help and not isinstance(action, argparse._HelpAction):
                assert f"| `{generator.argument(action)}` |" in text, (name, action.dest)


def test_arguments_defaults_and_usage_as_argparse_has_them(generator: ModuleType) -> None:
    parser = argparse.ArgumentParser(prog="gitml")
    sub = parser.add_subparsers(dest="command")
    probe = sub.add_parser("probe", description="probe things | with a pipe")
    probe.add_argument("path", type=Path, help="a file")
    probe.add_argument("extra", nargs="*", help="more")
    probe.add_argument("--out", type=Path, default=Path("reports"), help="folder (default: %(default)s)")
    probe.add_argument("--n", type=int, metavar="N", required=True, help="how many")
    probe.add_argument("--kind", choices=["a", "b"], help="which")
    probe.add_argument("--dry-run", action="store_true", help="do nothing")
    actions = {a.dest: a for a in probe._actions}
    assert generator.argument(actions["path"]) == "path"
    assert generator.argument(actions["extra"]) == "[extra ...]"
    assert generator.argument(actions["out"]) == "--out OUT"
    assert generator.argument(actions["n"]) == "--n N"
    assert generator.argument(actions["kind"]) == "--kind {a,b}"
    assert generator.argument(actions["dry_run"]) == "--dry-run"
    assert [generator.default(actions[k]) for k in ("path", "extra", "out", "n", "kind", "dry_run")] == [
        "required", "none", "`reports`", "required", "", "off",
    ]  # fmt: skip
    assert generator.help_text(actions["out"], "gitml probe") == "folder (default: reports)"
    assert generator.usage(probe) == "gitml probe [-h] [--out OUT] --n N [--kind {a,b}] [--dry-run] path [extra ...]"
    text = generator.render(parser)
    assert "| [`probe`](#gitml-probe) | probe things \\| with a pipe |" in text
    assert "\nProbe things | with a pipe.\n" in text


def test_check_fails_on_a_stale_file_and_names_the_refresh(
    generator: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.md"
    out.write_text("stale\n", encoding="utf-8")
    assert generator.main(["--check", "--out", str(out)]) == 1
    assert generator.REFRESH in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "stale\n"
    assert generator.main(["--out", str(out)]) == 0
    assert generator.main(["--check", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == generator.render()
