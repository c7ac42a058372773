"""The README and docs/ stay true to the repository: every relative link resolves (to a file, and
to a heading where it names an anchor), every `gitml` subcommand they name exists, and every
`make` target they name is in the Makefile. Text only: nothing here runs the pipeline."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])

FENCE = re.compile(
    r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
INLINE_CODE = re.compile(r"(`+)(?P<code>.+?)(?<!`)\1(?!`)", re.S)
# [text](target) and ![alt](target), the target without spaces; an optional "title" after it.
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?(?P<target>[^()\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(?P<target>\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(?P<text>.+?)[ \t]*#*[ \t]*$", re.M)
SHELL = {"bash", "sh", "shell", "console", "zsh"}
# What ends one command and starts another on a shell line.
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "#"}
SUBCOMMAND = re.compile(r"^[a-z][a-z0-9-]*$")


def doc_id(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block."""
    return [(m["info"].strip().split(" ")[0].lower(), m["body"]) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text outside fenced code blocks (blank lines keep the line count)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def inline_code(text: str) -> list[str]:
    return [m["code"].strip() for m in INLINE_CODE.finditer(prose(text))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation out, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub makes for the headings of a Markdown file (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(prose(path.read_text(encoding="utf-8"))):
        base = slug(match["text"])
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    text = prose(path.read_text(encoding="utf-8"))
    text = INLINE_CODE.sub("", text)  # `a[0](b)` in code is not a link
    return [m["target"] for m in LINK.finditer(text)] + [m["target"] for m in REFERENCE.finditer(text)]


def is_relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) and not target.startswith("//")


def relative_links() -> list[tuple[Path, str]]:
    return [(doc, target) for doc in DOCS for target in links(doc) if is_relative(target)]


def shell_lines(text: str) -> list[str]:
    """Command lines: every inline code span, and every line of the shell-tagged fenced blocks."""
    lines = inline_code(text)
    for info, body in fenced_blocks(text):
        if info in SHELL:
            lines += body.replace("\\\n", " ").splitlines()
    return lines


def words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # an unclosed quote: a fragment of a command, not a command
        return line.split()


def commands(text: str, program: str) -> list[list[str]]:
    """The arguments after `program` (or a path ending in /program) wherever it starts a command."""
    found = []
    for line in shell_lines(text):
        tokens = words(line)
        for i, token in enumerate(tokens):
            if token != program and not token.endswith(f"/{program}"):
                continue
            before = tokens[:i]
            # Only at the start of a command: after `time`, `VAR=value`s or a separator.
            lead = [t for t in before[::-1] if t not in ("time", "sudo") and not re.match(r"^\w+=", t)]
            if lead and lead[0] not in SEPARATORS:
                continue
            args = []
            for t in tokens[i + 1 :]:
                if t in SEPARATORS:
                    break
                args.append(t)
            found.append(args)
    return found


def subcommands() -> set[str]:
    from gitml.cli import build_parser

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def make_targets() -> set[str]:
    """The Makefile's rule targets, with $(VENV) and $(BIN) as they are by default."""
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    variables = {"VENV": ".venv", "BIN": ".venv/bin"}
    targets = set()
    for match in re.finditer(r"^([^\s#:=][^:=\n]*?)\s*:(?!=)", text, re.M):
        for name in match[1].split():
            for var, value in variables.items():
                name = name.replace(f"$({var})", value)
            # A file target such as .venv/.stamp-dev counts; .PHONY and the like do not.
            if not name.startswith(".") or "/" in name:
                targets.add(name)
    return targets


def test_the_docs_are_there() -> None:
    names = {doc_id(d) for d in DOCS}
    pages = ("pipeline", "dataset", "gate-and-report", "serving", "deployment", "testing", "benchmarks", "extending")
    for page in pages:
        assert f"docs/{page}.md" in names, page
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in sorted(names - {"README.md"}):
        assert f"({page})" in readme, f"README.md does not link to {page}"


@pytest.mark.parametrize(("doc", "target"), relative_links(), ids=lambda v: doc_id(v) if isinstance(v, Path) else v)
def test_every_relative_link_resolves(doc: Path, target: str) -> None:
    path_part, _, anchor = target.partition("#")
    path_part = path_part.split("?", 1)[0]
    resolved = (doc.parent / path_part).resolve() if path_part else doc
    assert resolved.exists(), f"{doc_id(doc)} links to {target}, but {path_part} does not exist"
    if anchor:
        assert resolved.is_file(), f"{doc_id(doc)} links to {target}: an anchor needs a file"
        if resolved.suffix == ".md":
            assert anchor in anchors(resolved), (
                f"{doc_id(doc)} links to {target}, but {doc_id(resolved)} has no heading #{anchor}; "
                f"it has {sorted(anchors(resolved))}"
            )


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_gitml_subcommand_named_exists(doc: Path) -> None:
    real = subcommands()
    # `gitml <name>` is a placeholder, not a subcommand; options come after the subcommand.
    named = [a[0] for a in commands(doc.read_text(encoding="utf-8"), "gitml") if a and SUBCOMMAND.match(a[0])]
    unknown = sorted({name for name in named if name not in real})
    assert unknown == [], f"{doc_id(doc)} names `gitml {unknown[0]}`; the subcommands are {sorted(real)}"


@pytest.mark.parametrize("doc", DOCS, ids=doc_id)
def test_every_make_target_named_exists(doc: Path) -> None:
    real = make_targets()
    named = set()
    for args in commands(doc.read_text(encoding="utf-8"), "make"):
        named |= {a for a in args if not a.startswith("-") and "=" not in a}
    unknown = sorted(named - real)
    assert unknown == [], f"{doc_id(doc)} names `make {unknown[0]}`; the Makefile has {sorted(real)}"


# --- the readers themselves -----------------------------------------------------------------------


def test_slugs_follow_github() -> None:
    heading = "Working together: owners, reviews, branch protection"
    assert slug(heading) == "working-together-owners-reviews-branch-protection"
    assert slug("What ingest refuses, and what it quarantines") == "what-ingest-refuses-and-what-it-quarantines"
    assert slug("`gitml serve` and [its docs](x.md)") == "gitml-serve-and-its-docs"


def test_links_skip_code_and_find_references(tmp_path: Path) -> None:
    path = tmp_path / "probe.md"
    path.write_text(
        'See [a](a.md#x) and ![b](img.png "t") and [`c`](c.md).\n\n```bash\n[d](d.md)\n```\n`[e](e.md)`\n\n[f]: f.md\n',
        encoding="utf-8",
    )
    assert links(path) == ["a.md#x", "img.png", "c.md", "f.md"]
    assert [t for t in links(path) if is_relative(t)] == links(path)
    assert not is_relative("https://example.org/x.md")


def test_commands_are_found_at_the_start_of_a_command_only() -> None:
    text = (
        "Run `make run`, `time make test`, `make PYTHON=/usr/bin/python3.11 run` and "
        "`.venv/bin/gitml draft-schema x.csv --label y`; `gitml` alone; `the gitml summary`.\n"
        "```bash\nsource .venv/bin/activate && gitml params && dvc repro   # then gitml gate\n```\n"
        "Placeholders are not subcommands: `gitml <name>`.\n"
        "```\ngitml pipeline summary\n```\n"
    )
    assert commands(text, "make") == [["run"], ["test"], ["PYTHON=/usr/bin/python3.11", "run"]]
    assert [a[0] for a in commands(text, "gitml") if a and SUBCOMMAND.match(a[0])] == ["draft-schema", "params"]
    assert {"serve", "draft-schema"} <= subcommands()
    assert {"run", "test", "serve", ".venv/.stamp-dev"} <= make_targets()
