"""Drafting a dataset config from a data file, as the starting point for bringing your own data.

The draft is a guess to review, not a contract: it records the types, ranges and categories the
file happens to have, flags columns that look like identifiers, personal data or protected
attributes, and is always a config that `DatasetSchema.from_config` accepts.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gitml.data.pii import detect
from gitml.data.raw import open_text
from gitml.errors import GitmlError

MISSING_TOKENS = ("", "?", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL", "None")
MAX_CATEGORIES = 50
# Words that, as one word of a column's name (snake, kebab or camel case), mark a protected
# attribute: the characteristics anti-discrimination law names (sex, race and colour, ethnic or
# national origin, religion, disability, age, marital and family status, pregnancy, sexual
# orientation), and the usual ways datasets spell them.
PROTECTED_WORDS = frozenset({
    "sex", "gender", "race", "racial", "colour", "color", "ethnicity", "ethnic", "religion", "religious",
    "faith", "disability", "disabled", "handicap", "nationality", "citizenship", "citizen", "age", "marital",
    "marriage", "pregnant", "pregnancy", "orientation", "lgbt", "lgbtq", "veteran", "caste",
})  # fmt: skip
# Values that, when most of a categorical column's distinct values are among one set, mark it as
# holding that attribute whatever its name (a column "g" of male / female).
PROTECTED_VALUES = {
    attribute: frozenset(values.split("|"))
    for attribute, values in {
        "sex": "male|female|m|f|man|woman|men|women|non-binary|nonbinary",
        "race": "white|black|asian|hispanic|latino|latina|latinx|african-american|caucasian|amer-indian-eskimo"
        "|native american|pacific islander|asian-pac-islander|mixed|multiracial",
        "marital status": "married|single|divorced|widowed|separated|never-married",
        "religion": "christian|muslim|jewish|hindu|buddhist|sikh|catholic|protestant|atheist|agnostic",
    }.items()
}
# The fairness bands drafted for an age column, those inside the range the file holds.
AGE_BANDS = (25, 45, 65)
IDENTIFIER_NAMES = re.compile(r"(^|[-_ ])(id|uuid|guid|key)$|^(id|uuid)[-_ ]", re.I)
SNIFF_BYTES = 64 * 1024
# Where `gitml collect` writes production records (gitml.monitor.collect.OUT), as raw.files reads them.
COLLECTED = "data/raw/production/*.csv"


@dataclass
class DraftColumn:
    """What the file shows of one column, and the declaration drafted from it."""

    name: str
    spec: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _read(path: Path, delimiter: str | None, header: bool | None) -> tuple[list[str], list[list[str]], str, bool]:
    try:
        return _read_text(path, delimiter, header)
    except UnicodeDecodeError as exc:
        raise GitmlError(
            f"{path}: not UTF-8 text ({exc.reason}); convert it, e.g. `iconv -f latin1 -t utf-8`."
        ) from exc
    except (OSError, EOFError, csv.Error) as exc:
        raise GitmlError(f"{path}: cannot be read ({exc}).") from exc


def _read_text(path: Path, delimiter: str | None, header: bool | None) -> tuple[list[str], list[list[str]], str, bool]:
    with open_text(path, "utf-8") as fh:
        sample = fh.read(SNIFF_BYTES)
    if not sample.strip():
        raise GitmlError(f"{path}: the file is empty; there is nothing to draft a schema from.")
    sniffer = csv.Sniffer()
    if delimiter is None:
        try:
            delimiter = sniffer.sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error as exc:
            raise GitmlError(f"{path}: cannot tell the delimiter; pass it with --delimiter.") from exc
    if header is None:
        try:
            header = sniffer.has_header(sample)
        except csv.Error:
            header = True
    with open_text(path, "utf-8") as fh:
        rows = [[f.strip() for f in row] for row in csv.reader(fh, delimiter=delimiter) if "".join(row).strip()]
    width = Counter(len(r) for r in rows).most_common(1)[0][0]
    names = rows[0] if header else [f"column_{i + 1}" for i in range(width)]
    body = [r for r in (rows[1:] if header else rows) if len(r) == width]
    if not body:
        raise GitmlError(f"{path}: has no data rows to draft a schema from.")
    return names, body, delimiter, header


def _numeric(values: list[str]) -> list[float] | None:
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return None
    return numbers if all(n == n and abs(n) != float("inf") for n in numbers) else None


def name_words(name: str) -> list[str]:
    """The words of a column name, lower case: `applicantAge`, `applicant_age`, `Applicant-Age` -> applicant, age."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def protected_because(name: str, distinct: list[str], dtype: str) -> str | None:
    """Why a column looks like a protected attribute (its name, or its values), or None."""
    words = name_words(name)
    hit = next((w for w in words if w in PROTECTED_WORDS), None)
    if hit is not None:
        return f"its name says {hit}"
    if dtype == "categorical" and len(distinct) >= 2:
        values = {v.strip().lower() for v in distinct}
        for attribute, known in PROTECTED_VALUES.items():
            if len(values & known) >= 2 and len(values & known) * 2 > len(values):
                return f"its values are {attribute}"
    return None


def _draft_column(name: str, values: list[str], n_rows: int, label: str | None) -> DraftColumn:
    present = [v for v in values if v not in MISSING_TOKENS]
    column = DraftColumn(name, {})
    numbers = _numeric(present)
    distinct = sorted(set(present))
    if name == label:
        column.spec["dtype"] = "categorical"
        column.spec["categories"] = distinct
    elif numbers is not None and present:
        whole = all(n.is_integer() for n in numbers)
        column.spec["dtype"] = "integer" if whole else "float"
        low, high = min(numbers), max(numbers)
        column.spec["min"] = int(low) if whole else low
        column.spec["max"] = int(high) if whole else high
        column.notes.append("min/max are what this file holds: widen them to what is valid")
    elif len(distinct) <= min(MAX_CATEGORIES, max(2, n_rows // 2)):
        column.spec["dtype"] = "categorical"
        column.spec["categories"] = distinct
    else:
        column.spec["dtype"] = "string"
    if len(present) < len(values):
        column.spec["nullable"] = True

    kinds = Counter(kind for v in distinct if (kind := detect(v)))
    unique = len(distinct) == len(present) == n_rows and n_rows > 1
    if name == label:
        column.spec["role"] = "label"
        column.spec["pii"] = "keep"
    elif IDENTIFIER_NAMES.search(name) or (unique and column.spec["dtype"] == "string"):
        column.spec.update(role="identifier", pii="pseudonymize")
        column.notes.append("named or unique like an identifier: pseudonymised, never a model input")
        column.spec.pop("categories", None)
        column.spec.update(dtype="string")
        for key in ("min", "max"):
            column.spec.pop(key, None)
    elif (why := protected_because(name, distinct, column.spec["dtype"])) is not None:
        column.spec.update(role="protected", feature=True, pii="keep")
        column.notes.append(f"a protected attribute ({why}): fairness is reported per group of it")
        if column.spec["dtype"] in ("integer", "float") and "age" in name_words(name):
            bands = [b for b in AGE_BANDS if column.spec["min"] < b <= column.spec["max"]]
            if bands:
                column.spec["bands"] = bands
    else:
        column.spec.update(role="feature", pii="keep")
    if kinds:
        kind = kinds.most_common(1)[0][0]
        if column.spec["role"] != "identifier":
            column.spec.update(role="feature", pii="drop")
            column.spec.pop("feature", None)
            column.spec.pop("bands", None)
        column.notes.append(f"values look like personal data ({kind}), so pii: {column.spec['pii']}")
    return column


def _flow(value: Any) -> str:
    """One YAML value on one line, quoted where YAML would misread it ('yes', '1', 'null')."""
    text = str(yaml.safe_dump(value, default_flow_style=True, width=100_000, allow_unicode=True)).strip()
    return text.removesuffix("...").strip()  # the end-of-document marker PyYAML adds after a scalar


def draft_schema(path: Path, root: Path, name: str, label: str, positive: str | None = None,
                 delimiter: str | None = None, header: bool | None = None) -> str:  # fmt: skip
    """The YAML text of a dataset config drafted from the data file at `path`."""
    if not path.is_file():
        raise GitmlError(f"{path}: not found.")
    names, body, delimiter, header = _read(path, delimiter, header)
    if label not in names:
        raise GitmlError(f"--label {label!r} is not a column of {path}; its columns are {', '.join(names)}.")
    columns = [_draft_column(n, [r[i] for r in body], len(body), label) for i, n in enumerate(names)]
    label_column = next(c for c in columns if c.name == label)
    label_spec = label_column.spec
    if label_spec.get("nullable"):
        raise GitmlError(f"the label {label!r} is missing in some rows of {path}; a label must always be present.")
    classes = label_spec.get("categories") or []
    if positive is None:
        counts = Counter(r[names.index(label)] for r in body)
        positive = min(classes, key=lambda c: (counts[c], c)) if len(classes) == 2 else None
        if positive is not None:
            label_column.notes.append(
                "positive: the rarer class, whose probability the model predicts; change it if needed"
            )
    if positive not in classes:
        raise GitmlError(
            f"choose the positive class of {label!r} with --positive, one of: {', '.join(map(str, classes[:20]))}."
        )
    label_spec["positive"] = positive
    missing = sorted({v for r in body for v in r if v in MISSING_TOKENS and v})

    try:
        relative = path.resolve().relative_to(root.resolve())
    except ValueError:
        relative = path
    lines = [
        f"# Drafted by `gitml draft-schema` from {relative} ({len(body)} rows). Review every column:",
        "# types, ranges and categories are what this file holds, not what is valid.",
        f"name: {_flow(name)}",
        "raw:",
        "  files:",
        f"    - path: {_flow(str(relative))}",
        "    # Labelled production records that retraining collects from the prediction log",
        "    # (`gitml collect`, one file per window); none until a retraining pull request adds one.",
        f"    - path: {_flow(COLLECTED)}",
        "      header: true",
        "      delimiter: ','",
        "      generalised: true",
        f"  delimiter: {_flow(delimiter)}",
        f"  header: {_flow(header)}",
        f"  missing_values: {_flow(missing or [''])}",
        "quality:",
        "  max_quarantined_fraction: 0.01",
        "  duplicates: quarantine",
        "  pii_max_matches: 0",
        "columns:",
    ]
    for column in columns:
        lines.append(f"  {_flow(column.name)}:")
        lines.extend(f"    # {note}" for note in column.notes)
        lines.extend(f"    {key}: {_flow(value)}" for key, value in column.spec.items())
    return "\n".join(lines) + "\n"
