"""The summary `make run` prints, and the README's first screen that quotes it."""

from __future__ import annotations

from pathlib import Path

from gitml.paths import Paths
from gitml.summary import pipeline_summary


def test_readme_shows_what_make_run_prints(repo: Path) -> None:
    """The README quotes the summary of the committed reports, so it cannot drift from them."""
    summary = pipeline_summary(Paths(repo))
    assert "48,842 rows read" in summary
    first_screen = (repo / "README.md").read_text().split("---", 1)[0]
    assert summary in first_screen, "update the README's `make run` output block"
    assert "make run" in first_screen
    assert "make test" in first_screen
