"""Reading the raw files named by the dataset config into one table of trimmed strings."""

from __future__ import annotations

import csv
import dataclasses
import gzip
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd

from gitml.checked_config import suggest
from gitml.data.pii import detect, mask
from gitml.data.schema import ABSENT_IN_GENERALISED, DatasetSchema, RawFile
from gitml.errors import GitmlError
from gitml.io import sha256_file

FILE_COLUMN = "source_file"
LINE_COLUMN = "source_line"
REASON_COLUMN = "reason"
EXTRA_COLUMN = "extra_fields"
CANDIDATE_DELIMITERS = (",", ";", "\t", "|")


@dataclass
class RawTable:
    """Every data row of every raw file: well-formed rows as strings, the rest set aside."""

    rows: pd.DataFrame  # schema columns as str or None, plus source_file and source_line
    malformed: pd.DataFrame  # rows whose field count is wrong, plus extra_fields and reason
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # every file read, in order
    generalised: frozenset[str] = frozenset()  # the files read as generalised (raw.files' `generalised`)

    def generalised_rows(self, frame: pd.DataFrame) -> pd.Series[bool]:
        """Which rows of `frame` (rows or malformed, or a part of them) come from a generalised file."""
        return frame[FILE_COLUMN].isin(self.generalised)


def open_text(path: Path, encoding: str) -> IO[str]:
    """A text file, gzip-compressed or not, read as the csv module wants it (newline="")."""
    if encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        encoding = "utf-8-sig"  # tolerate the byte-order mark spreadsheet exports start with
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return path.open(encoding=encoding, newline="")


def _records(path: Path, raw_file: RawFile, delimiter: str, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, trimmed fields) of each non-blank record after the skipped lines."""
    try:
        with open_text(path, encoding) as fh:
            for _ in range(raw_file.skip_rows):
                fh.readline()
            reader = csv.reader(fh, delimiter=delimiter)
            for fields in reader:
                if len(fields) <= 1 and not "".join(fields).strip():
                    continue  # a blank line; a line of empty fields is a record, validated like any other
                yield reader.line_num + raw_file.skip_rows, [f.strip() for f in fields]
    except UnicodeDecodeError as exc:
        raise GitmlError(
            f"{raw_file.path}: not readable as {encoding} text ({exc.reason} at byte {exc.start}). "
            "Set raw.encoding in the dataset config to the file's encoding (e.g. latin-1)."
        ) from exc
    except (OSError, EOFError, csv.Error) as exc:
        raise GitmlError(
            f"{raw_file.path}: cannot be read ({exc}). Check the file is complete and not corrupt."
        ) from exc


def _sniff_delimiter(sample: list[str], configured: str) -> str:
    joined = sample[0] if sample else ""
    counts = {d: joined.count(d) for d in CANDIDATE_DELIMITERS if d != configured}
    best = max(counts, key=lambda d: counts[d]) if counts else None
    if best is not None and counts[best] > 0:
        return f" The file looks {best!r}-separated: set raw.delimiter to {best!r} if that is right."
    return ""


def _personal_data_hint(values: list[str]) -> str:
    kinds = sorted({kind for kind in map(detect, values) if kind})
    if not kinds:
        return ""
    example = next(mask(v) for v in values if detect(v))
    return (
        f" Its values look like personal data ({', '.join(kinds)}, e.g. '{example}'): "
        "give it pii: drop or pseudonymize."
    )


def _check_header(
    header: list[str], schema: DatasetSchema, raw_file: RawFile, sample: list[list[str]]
) -> list[int | None]:
    """Positions of the schema's columns in the file (None: absent, as a generalised file may leave
    a dropped or pseudonymised column); fails on missing, extra or repeated names."""
    names = schema.names
    delimiter = schema.raw.delimiter_of(raw_file)
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise GitmlError(f"{raw_file.path}: the header names {', '.join(repeated)} more than once.")
    if len(header) == 1 and len(names) > 1:
        raise GitmlError(
            f"{raw_file.path}: the header has one field, {header[0][:80]!r}, but the schema has "
            f"{len(names)} columns; the delimiter is probably wrong (the delimiter is "
            f"{delimiter!r}).{_sniff_delimiter(header, delimiter)}"
        )
    may_lack = {c.name for c in schema.columns if c.pii in ABSENT_IN_GENERALISED} if raw_file.generalised else set()
    missing = [n for n in names if n not in header and n not in may_lack]
    extra = [h for h in header if h not in names]
    problems = []
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if extra:
        named = [f"{h}{suggest(h, [n for n in missing if n.lower() == h.lower()] or missing)}" for h in extra]
        problems.append(f"unexpected column(s) {', '.join(named)}")
    if problems and not set(header) & set(names):
        raise GitmlError(
            f"{raw_file.path}: the first line ({', '.join(header[:4])}, ...) names none of the schema's "
            "columns. If the file has no header line, set raw.header: false in the dataset config."
        )
    if problems:
        hints = "".join(
            f" Column '{h}':" + hint
            for h in extra
            if (hint := _personal_data_hint([row[header.index(h)] for row in sample if len(row) == len(header)]))
        )
        raise GitmlError(
            f"{raw_file.path}: {' and '.join(problems)} compared with the dataset schema ({schema.source}). "
            f"Add new columns to the schema with their dtype, role and pii policy, or fix the file.{hints}"
        )
    return [header.index(n) if n in header else None for n in names]


def _wrong_shape_error(
    raw_file: RawFile,
    schema: DatasetSchema,
    counts: Counter[int],
    first: list[str],
    extras: list[list[str]],
    expected: int,
) -> GitmlError:
    modal, seen = counts.most_common(1)[0]
    total = sum(counts.values())
    delimiter = schema.raw.delimiter_of(raw_file)
    where = f"{raw_file.path}: {seen} of {total} rows have {modal} field(s), but the schema has {expected} columns"
    if modal == 1:
        hint = f"; the delimiter is probably wrong (the delimiter is {delimiter!r})."
        hint += _sniff_delimiter([delimiter.join(first)], delimiter)
    elif modal < expected:
        hint = (
            f" ({', '.join(schema.names)}): {expected - modal} column(s) are missing from the file, or the "
            "schema declares columns the data does not have. Fix the export or the schema."
        )
    else:
        hint = (
            f": the file has {modal - expected} unexpected extra column(s) after "
            f"'{schema.names[-1]}'. Declare them in the schema (with a pii policy) or remove them."
        )
        hint += _personal_data_hint([v for row in extras for v in row])
    return GitmlError(where + hint)


def _read_file(
    schema: DatasetSchema, raw_file: RawFile, root: Path
) -> tuple[list[list[str | None]], list[list[str | None]], int]:
    """Well-formed rows (schema order + source), malformed rows, and the number of data rows."""
    names = schema.names
    missing_tokens = set(schema.raw.missing_values) | {""}
    header, delimiter = schema.raw.header_of(raw_file), schema.raw.delimiter_of(raw_file)
    path = root / raw_file.path
    if not path.is_file():
        raise GitmlError(
            f"raw file {raw_file.path} not found. The dataset config ({schema.source}) lists it under "
            "raw.files: restore it (git checkout -- <file>), or point raw.files at your data."
        )
    records = _records(path, raw_file, delimiter, schema.raw.encoding)
    order: list[int | None] = list(range(len(names)))
    expected = len(names)
    if header:
        first = next(records, None)
        if first is None:
            raise GitmlError(f"{raw_file.path}: the file is empty (no header, no rows). Check the export.")
        # Only a header that does not match needs a sample of rows, to say what an extra column holds.
        # (A generalised file may lack columns and still be right: its sample is read again below.)
        mismatch = set(first[1]) != set(names)
        sampled = list(itertools.islice(records, 200)) if mismatch else []
        order = _check_header(first[1], schema, raw_file, [fields for _, fields in sampled])
        expected = len(first[1])
        records = itertools.chain(sampled, records)
    counts: Counter[int] = Counter()
    good: list[list[str | None]] = []
    bad: list[list[str | None]] = []
    first_fields: list[str] = []
    extras: list[list[str]] = []
    for line, fields in records:
        if not counts and not header and [f.lower() for f in fields] == [n.lower() for n in names]:
            raise GitmlError(
                f"{raw_file.path}: line {line} is a header ({', '.join(fields[:4])}, ...), but the dataset "
                "config says raw.header: false. Set raw.header: true."
            )
        counts[len(fields)] += 1
        first_fields = first_fields or fields
        values = [None if v in missing_tokens else v for v in fields]
        in_schema_order = [values[i] if i is not None and i < len(values) else None for i in order]
        if len(fields) == expected:
            good.append([*in_schema_order, raw_file.path, str(line)])
        else:
            extra = delimiter.join(fields[expected:]) or None
            reason = f"expected {expected} fields, found {len(fields)}"
            bad.append([*in_schema_order, raw_file.path, str(line), extra, reason])
            extras.append(fields[expected:])
    n_rows = sum(counts.values())
    if n_rows == 0:
        raise GitmlError(
            f"{raw_file.path}: has no data rows (after {raw_file.skip_rows} skipped line(s)"
            f"{' and the header' if header else ''}). Check the export, or remove it from raw.files."
        )
    if len(bad) * 2 > n_rows:
        raise _wrong_shape_error(raw_file, schema, counts, first_fields, extras, expected)
    return good, bad, n_rows


def expand(raw_file: RawFile, root: Path) -> list[RawFile]:
    """The files an entry of raw.files names: itself, or each file its glob pattern matches (sorted;
    a pattern may match none), as paths relative to `root` unless the pattern is absolute."""
    if not raw_file.is_glob:
        return [raw_file]
    pattern = Path(raw_file.path)
    if pattern.is_absolute():
        found = [p.as_posix() for p in Path(pattern.anchor).glob(str(pattern.relative_to(pattern.anchor)))]
    else:
        found = [p.relative_to(root).as_posix() for p in root.glob(raw_file.path)]
    return [dataclasses.replace(raw_file, path=p) for p in sorted(found) if (root / p).is_file()]


def read_raw(schema: DatasetSchema, root: Path) -> RawTable:
    """Read every raw file; fail on what is wrong with a whole file, set aside what is wrong with a row."""
    good: list[list[str | None]] = []
    bad: list[list[str | None]] = []
    files: dict[str, dict[str, Any]] = {}
    generalised = set()
    listed = [found for raw_file in schema.raw.files for found in expand(raw_file, root)]
    if not listed:
        patterns = ", ".join(f.path for f in schema.raw.files)
        raise GitmlError(
            f"raw.files ({patterns}) match no file. The dataset config ({schema.source}) names the raw data "
            "there: add the files, or point raw.files at your data."
        )
    for raw_file in listed:
        if raw_file.path in files:
            continue  # two entries (a path and a pattern) name the same file: it is read once
        file_good, file_bad, n_rows = _read_file(schema, raw_file, root)
        good.extend(file_good)
        bad.extend(file_bad)
        files[raw_file.path] = {"rows": n_rows, "sha256": sha256_file(root / raw_file.path)}
        if raw_file.generalised:
            files[raw_file.path]["generalised"] = True
            generalised.add(raw_file.path)

    names = list(schema.names)
    rows = pd.DataFrame(good, columns=[*names, FILE_COLUMN, LINE_COLUMN], dtype=object)
    malformed = pd.DataFrame(bad, columns=[*names, FILE_COLUMN, LINE_COLUMN, EXTRA_COLUMN, REASON_COLUMN], dtype=object)
    for name, suffix in schema.raw.strip_suffix.items():
        column = rows[name]
        ends = column.notna() & column.str.endswith(suffix, na=False)
        rows.loc[ends, name] = column[ends].str.slice(0, -len(suffix))
    return RawTable(rows, malformed, files, frozenset(generalised))
