"""Checking raw values against the dataset schema: whole columns first, then row by row.

`generalised` (a mask over the rows, where given) marks rows from files that hold records as they
are after anonymisation (raw.files' `generalised`): there a group name or a band label is a valid
value, and a column the schema drops or pseudonymises may be missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from gitml.data.pii import PiiFinding, scan_values
from gitml.data.raw import FILE_COLUMN, LINE_COLUMN
from gitml.data.schema import ABSENT_IN_GENERALISED, Column, DatasetSchema
from gitml.errors import GitmlError

# More than this share of a column's values failing its type means the column itself is wrong
# (a shifted column, a wrong dtype in the config), not that some rows are bad.
WRONG_TYPE_SHARE = 0.5
MAX_EXACT_INTEGER = 2**53


@dataclass
class RowProblems:
    """Why each rejected row was rejected: a code for counting, a sentence for people."""

    codes: dict[int, list[str]]
    texts: dict[int, list[str]]

    def add(self, rows: pd.Index[Any], code: str, texts: pd.Series[Any] | str) -> None:
        for row in rows:
            self.codes.setdefault(row, []).append(code)
            self.texts.setdefault(row, []).append(texts if isinstance(texts, str) else str(texts[row]))


def _examples(values: pd.Series[Any], n: int = 3) -> str:
    return ", ".join(repr(v) for v in pd.unique(values)[:n])


def _parse_numbers(column: Column, values: pd.Series[Any]) -> tuple[pd.Series[Any], pd.Series[Any]]:
    """Numbers parsed from strings, and a mask of values that are present but not valid numbers."""
    parsed = pd.to_numeric(values, errors="coerce").astype(float)
    invalid = values.notna() & ~np.isfinite(parsed)  # unparseable, "nan", "inf"
    if column.dtype == "integer":
        # Beyond 2**53 a float no longer holds every whole number, and int64 overflows soon after.
        invalid |= np.isfinite(parsed) & ((parsed % 1 != 0) | (parsed.abs() > MAX_EXACT_INTEGER))
    return parsed.where(~invalid), invalid


def _already_generalised(column: Column, values: pd.Series[Any], generalised: pd.Series[Any] | None) -> pd.Series[Any]:
    """Values of generalised rows that are group names or band labels of the column: valid as they are."""
    given = column.generalised_values
    if generalised is None or not given:
        return pd.Series(False, index=values.index)
    return generalised & values.isin(given)


def _may_be_missing(column: Column, generalised: pd.Series[Any] | None) -> pd.Series[Any] | None:
    """The rows where a missing value is no fault: generalised rows of a dropped or pseudonymised column."""
    if generalised is None or column.pii not in ABSENT_IN_GENERALISED:
        return None
    return generalised


def check_columns(schema: DatasetSchema, rows: pd.DataFrame, generalised: pd.Series[Any] | None = None) -> None:
    """Fail on columns that are wholly wrong: entirely empty, or of another type than declared."""
    for column in schema.columns:
        values = rows[column.name]
        excused = _may_be_missing(column, generalised)
        if excused is not None:
            values = values[~excused]
            if values.empty:
                continue  # every row is generalised, and this column may be absent from all of them
        present = values.notna()
        if not present.any():
            raise GitmlError(
                f"column '{column.name}' is empty in all {len(values)} rows. The export probably lost it; "
                f"fix the data, or remove the column from the schema ({schema.source})."
            )
        given = _already_generalised(column, values, None if generalised is None else generalised[values.index])
        if column.numeric:
            _, invalid = _parse_numbers(column, values)
            invalid &= ~given
            what = f"{'whole ' if column.dtype == 'integer' else ''}numbers"
        elif column.dtype == "categorical":
            assert column.categories is not None
            invalid = present & ~values.isin(column.categories) & ~given
            listed = ", ".join(column.categories[:6]) + (", ..." if len(column.categories) > 6 else "")
            what = f"among its categories ({listed})"
        else:
            continue
        if invalid.sum() > WRONG_TYPE_SHARE * present.sum():
            raise GitmlError(
                f"column '{column.name}' is declared {column.dtype}, but {invalid.sum()} of its "
                f"{present.sum()} values are not {what}, e.g. {_examples(values[invalid])}. "
                "Are the columns in the order the schema lists them? Fix the file, or the column's "
                f"declaration in the schema ({schema.source})."
            )


def scan_for_pii(schema: DatasetSchema, rows: pd.DataFrame) -> list[PiiFinding]:
    """Personal data in columns the schema keeps or only coarsens."""
    findings: list[PiiFinding] = []
    for column in schema.columns:
        if column.pii in ("keep", "generalize"):
            counts = rows[column.name].dropna().value_counts(sort=False)
            findings.extend(scan_values(column.name, ((str(v), int(n)) for v, n in counts.items())))
    return findings


def find_row_problems(
    schema: DatasetSchema, rows: pd.DataFrame, generalised: pd.Series[Any] | None = None
) -> RowProblems:
    """Every reason each row breaks the schema; rows with no reason are valid."""
    problems = RowProblems({}, {})
    for column in schema.columns:
        name = column.name
        values = rows[name]
        missing = values.isna()
        if not column.nullable:
            excused = _may_be_missing(column, generalised)
            faulty = missing if excused is None else missing & ~excused
            problems.add(rows.index[faulty], f"missing:{name}", f"{name}: missing, and the schema says it may not be")
        given = _already_generalised(column, values, generalised)
        if column.numeric:
            parsed, invalid = _parse_numbers(column, values)
            invalid &= ~given
            kind = "a whole number" if column.dtype == "integer" else "a number"
            problems.add(rows.index[invalid], f"wrong_type:{name}", name + ": " + values.map(repr) + f" is not {kind}")
            if column.minimum is not None:
                low = parsed < column.minimum
                problems.add(
                    rows.index[low],
                    f"out_of_range:{name}",
                    name + ": " + values + f" is below the minimum {column.minimum:g}",
                )
            if column.maximum is not None:
                high = parsed > column.maximum
                problems.add(
                    rows.index[high],
                    f"out_of_range:{name}",
                    name + ": " + values + f" is above the maximum {column.maximum:g}",
                )
        elif column.dtype == "categorical":
            assert column.categories is not None
            unknown = ~missing & ~values.isin(column.categories) & ~given
            problems.add(
                rows.index[unknown], f"unknown_category:{name}", name + ": unknown category " + values.map(repr)
            )
    return problems


def find_duplicates(schema: DatasetSchema, rows: pd.DataFrame, valid: pd.Series[Any]) -> RowProblems:
    """Valid rows that repeat an earlier valid row exactly, pointing at the first one."""
    problems = RowProblems({}, {})
    candidates = rows.loc[valid, list(schema.names)]
    repeated = candidates.duplicated(keep="first")
    if not repeated.any():
        return problems
    group = candidates.groupby(list(schema.names), dropna=False, sort=False).ngroup()
    first_row = group.index.to_series().groupby(group.to_numpy()).transform("first")
    where = rows[FILE_COLUMN] + " line " + rows[LINE_COLUMN]
    text = pd.Series("duplicate of " + where.loc[first_row.to_numpy()].to_numpy(), index=first_row.index)
    problems.add(repeated.index[repeated.to_numpy()], "duplicate_row", text)
    return problems


def typed_column(column: Column, values: pd.Series[Any], generalised: pd.Series[Any] | None = None) -> pd.Series[Any]:
    """Valid string values converted to the column's declared dtype. Group names and band labels of
    generalised rows stay as they are (anonymisation takes them as already generalised)."""
    given = _already_generalised(column, values, generalised)
    if column.numeric:
        parsed, _ = _parse_numbers(column, values.mask(given))
        if given.any():  # band labels among the numbers: an object column, which anonymisation bands
            return parsed.astype(object).mask(given, values)
        if column.dtype == "float":
            return parsed
        # A missing value in a column that may not miss one: a generalised row's pseudonymised identifier.
        return parsed.astype("Int64" if column.nullable or parsed.isna().any() else "int64")
    if column.dtype == "categorical":
        assert column.categories is not None
        extra = [v for v in column.generalised_values if v not in column.categories] if given.any() else []
        return pd.Series(pd.Categorical(values, categories=[*column.categories, *extra]), index=values.index)
    return values.astype(object).where(values.notna(), None)


def merge(*parts: RowProblems) -> RowProblems:
    merged = RowProblems({}, {})
    for part in parts:
        for row, codes in part.codes.items():
            merged.codes.setdefault(row, []).extend(codes)
            merged.texts.setdefault(row, []).extend(part.texts[row])
    return merged


def problem_rows(problems: RowProblems, index: pd.Index[Any]) -> npt.NDArray[np.bool_]:
    """A boolean mask over `index` of the rows that have at least one problem."""
    return np.asarray(index.isin(list(problems.codes)))
