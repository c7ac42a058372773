"""ingest stage: raw files -> validated, anonymised clean table + quarantined rows with reasons."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gitml.config import dataset_schema
from gitml.data import validate
from gitml.data.anonymize import anonymize_values, pseudonym_key
from gitml.data.raw import EXTRA_COLUMN, FILE_COLUMN, LINE_COLUMN, REASON_COLUMN, read_raw
from gitml.data.schema import DatasetSchema
from gitml.errors import GitmlError
from gitml.io import write_json, write_parquet
from gitml.paths import Paths


@dataclass(frozen=True)
class IngestResult:
    """What ingest read, kept and set aside."""

    rows_read: int
    rows_clean: int
    rows_quarantined: int
    quarantined_by_reason: dict[str, int]
    report: dict[str, Any]


def _anonymize_frame(schema: DatasetSchema, frame: pd.DataFrame, key: bytes | None, typed: bool) -> pd.DataFrame:
    """Apply PII policies. Typed (clean) columns get output dtypes; raw (quarantine) ones stay strings."""
    out: dict[str, Any] = {}
    for column in schema.kept_columns:
        values = frame[column.name]
        if column.pii == "keep":
            out[column.name] = values
        elif not typed and column.pii == "generalize":
            out[column.name] = values  # invalid values cannot be coarsened; quarantine keeps them for review
        else:
            transformed = anonymize_values(column, values.to_numpy(), key)
            categories = column.output_categories
            if categories is not None:
                out[column.name] = pd.Categorical(transformed, categories=categories)
            elif column.output_dtype in ("integer", "float"):
                out[column.name] = pd.Series(transformed, index=frame.index).astype(values.dtype)
            else:
                out[column.name] = transformed
    return pd.DataFrame(out, index=frame.index)


def quarantine_invalid_rows(
    schema: DatasetSchema,
    rows: pd.DataFrame,
    malformed: pd.DataFrame,
    problems: validate.RowProblems,
    key: bytes | None,
    files: list[str],
) -> pd.DataFrame:
    """Rejected rows with their reasons and source line (in the order of `files`, the files read), with
    drop/pseudonymise policies applied."""
    rejected = rows.loc[validate.problem_rows(problems, rows.index)].copy()
    rejected[REASON_COLUMN] = ["; ".join(problems.texts[i]) for i in rejected.index]
    both = pd.concat([rejected, malformed], ignore_index=True)
    anonymized = _anonymize_frame(schema, both, key, typed=False)
    meta = both[[FILE_COLUMN, LINE_COLUMN, REASON_COLUMN]]
    table = pd.concat([meta, anonymized, both[[EXTRA_COLUMN]]], axis=1)
    order = table[LINE_COLUMN].astype(int)
    file_rank = table[FILE_COLUMN].map({path: i for i, path in enumerate(files)})
    return table.assign(_f=file_rank, _l=order).sort_values(["_f", "_l"]).drop(columns=["_f", "_l"])


def run(cfg: Mapping[str, Any], paths: Paths, env: Mapping[str, str] | None = None) -> IngestResult:
    """Read, validate, quarantine and anonymise the raw data named by `cfg['data']`."""
    schema = dataset_schema(cfg, paths.params)
    key = pseudonym_key(schema, os.environ if env is None else env)
    raw = read_raw(schema, paths.root)
    rows = raw.rows
    # Rows of generalised files (raw.files' `generalised`): group names and band labels are valid there.
    generalised = raw.generalised_rows(rows) if raw.generalised else None
    validate.check_columns(schema, rows, generalised)
    findings = [f for f in validate.scan_for_pii(schema, rows) if f.rows > schema.quality.pii_max_matches]
    if findings:
        raise GitmlError(
            "personal data in columns the schema keeps: "
            + "; ".join(f.describe() for f in findings)
            + f". Declare each column's pii policy (drop or pseudonymize) in the schema ({schema.source}), "
            "or remove the values from the raw data. Nothing was written."
        )

    problems = validate.find_row_problems(schema, rows, generalised)
    valid: pd.Series[bool] = pd.Series(~validate.problem_rows(problems, rows.index), index=rows.index)
    if schema.quality.duplicates == "quarantine":
        problems = validate.merge(problems, validate.find_duplicates(schema, rows, valid))
        valid &= ~validate.problem_rows(problems, rows.index)

    quarantine = quarantine_invalid_rows(schema, rows, raw.malformed, problems, key, list(raw.files))
    by_reason = Counter(code for codes in problems.codes.values() for code in dict.fromkeys(codes))
    if len(raw.malformed):
        by_reason["field_count"] = len(raw.malformed)
    rows_read = len(rows) + len(raw.malformed)
    clean_rows = rows.loc[valid.to_numpy()]
    given = None if generalised is None else generalised[clean_rows.index]
    typed = pd.DataFrame({c.name: validate.typed_column(c, clean_rows[c.name], given) for c in schema.kept_columns})
    clean = _anonymize_frame(schema, typed, key, typed=True).reset_index(drop=True)

    fraction = len(quarantine) / rows_read
    limit = schema.quality.max_quarantined_fraction
    report = {
        "rows_read": rows_read,
        "rows_clean": len(clean),
        "rows_quarantined": len(quarantine),
        "quarantined_fraction": round(fraction, 6),
        "max_quarantined_fraction": limit,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "missing_values": {c: int(n) for c, n in clean.isna().sum().items() if n},
        "label_rate": round(float((clean[schema.label.name] == schema.positive_class).mean()), 6)
        if len(clean)
        else None,
        "pii_policies": {c.name: c.pii for c in schema.columns if c.pii != "keep"},
        "files": raw.files,
    }
    paths.quarantine.parent.mkdir(parents=True, exist_ok=True)
    quarantine.to_csv(paths.quarantine, index=False, lineterminator="\n")
    write_json(paths.ingest_report, report)
    if fraction > limit:
        paths.clean.unlink(missing_ok=True)  # an earlier run's table must not pass for this one's
        top = ", ".join(f"{code} {n}" for code, n in by_reason.most_common(5))
        raise GitmlError(
            f"{len(quarantine)} of {rows_read} rows ({fraction:.1%}) failed validation, above the limit of "
            f"{limit:.1%} (quality.max_quarantined_fraction in {schema.source}). Most common reasons: {top}. "
            f"Every rejected row and its reason is in {paths.quarantine}; fix the source data, or widen the "
            "schema if the data is right."
        )
    write_parquet(paths.clean, clean)
    return IngestResult(rows_read, len(clean), len(quarantine), dict(by_reason), report)


def message(result: IngestResult, paths: Paths) -> str:
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(result.quarantined_by_reason.items())) or "none"
    return (
        f"ingest: {result.rows_read:,} rows read -> {result.rows_clean:,} clean, "
        f"{result.rows_quarantined:,} quarantined ({reasons})"
    )
