"""ingest on data we make: every kind of bad input ends in a clear error or a quarantined row."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.stages import ingest
from tests.conftest import TOY_COLUMNS, TOY_KEY, toy_config, toy_rows, write_csv


def run_ingest(root: Path, cfg: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> ingest.IngestResult:
    return ingest.run({"data": cfg or toy_config()}, Paths(root), TOY_KEY if env is None else env)


def quarantine(root: Path) -> pd.DataFrame:
    return pd.read_csv(Paths(root).quarantine, dtype=str, keep_default_na=False)


def assert_accounted(root: Path, result: ingest.IngestResult, rows_in_files: int) -> None:
    """Nothing is lost: every row read is either clean or quarantined."""
    clean = pd.read_parquet(Paths(root).clean)
    assert result.rows_read == rows_in_files
    assert len(clean) == result.rows_clean
    assert len(quarantine(root)) == result.rows_quarantined
    assert result.rows_clean + result.rows_quarantined == result.rows_read


def with_bad_rows(tmp_path: Path, bad: dict[int, dict[str, str]], n: int = 200) -> Path:
    rows = toy_rows(n)
    for i, changes in bad.items():
        for column, value in changes.items():
            rows[i][TOY_COLUMNS.index(column)] = value
    write_csv(tmp_path / "raw" / "toy.csv", rows)
    return tmp_path


def test_valid_data_is_kept_whole_and_anonymised(toy_root: Path) -> None:
    result = run_ingest(toy_root)
    assert_accounted(toy_root, result, 200)
    assert result.rows_quarantined == 0
    clean = pd.read_parquet(Paths(toy_root).clean)
    assert list(clean.columns) == TOY_COLUMNS
    assert set(clean["city"].dropna()) <= {"Germany", "France"}
    assert clean["balance"].max() == 5000
    assert clean["customer_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert not clean["customer_id"].str.startswith("C0").any()
    report = json.loads(Paths(toy_root).ingest_report.read_text())
    assert report["rows_read"] == 200
    assert report["pii_policies"] == {"customer_id": "pseudonymize", "city": "generalize", "balance": "generalize"}


def test_missing_raw_file(tmp_path: Path) -> None:
    with pytest.raises(GitmlError, match=r"raw file raw/toy.csv not found.*raw.files"):
        run_ingest(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "toy.csv").write_text("")
    with pytest.raises(GitmlError, match=r"raw/toy.csv: the file is empty"):
        run_ingest(tmp_path)


def test_header_without_rows(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", [])
    with pytest.raises(GitmlError, match=r"raw/toy.csv: has no data rows"):
        run_ingest(tmp_path)


@pytest.mark.parametrize("header", [True, False])
def test_wrong_delimiter(tmp_path: Path, header: bool) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows(), header=TOY_COLUMNS if header else None, delimiter=";")
    cfg = toy_config(raw={**toy_config()["raw"], "header": header})
    with pytest.raises(GitmlError, match=r"delimiter is probably wrong.*looks ';'-separated"):
        run_ingest(tmp_path, cfg)


def test_missing_column_by_header(tmp_path: Path) -> None:
    rows = [r[:4] + r[5:] for r in toy_rows()]
    write_csv(tmp_path / "raw" / "toy.csv", rows, header=[c for c in TOY_COLUMNS if c != "segment"])
    with pytest.raises(GitmlError, match=r"missing column\(s\) segment"):
        run_ingest(tmp_path)


def test_missing_column_without_header(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", [r[:5] for r in toy_rows()], header=None)
    cfg = toy_config(raw={**toy_config()["raw"], "header": False})
    with pytest.raises(GitmlError, match=r"200 of 200 rows have 5 field\(s\), but the schema has 6.*missing"):
        run_ingest(tmp_path, cfg)


def test_unexpected_extra_column_full_of_email_addresses(tmp_path: Path) -> None:
    rows = [[*r, f"user{i}@example.org"] for i, r in enumerate(toy_rows())]
    write_csv(tmp_path / "raw" / "toy.csv", rows, header=[*TOY_COLUMNS, "contact"])
    with pytest.raises(GitmlError, match=r"unexpected column\(s\) contact.*e-mail address") as caught:
        run_ingest(tmp_path)
    assert "user0@example.org" not in str(caught.value)  # the message masks what it quotes
    assert not Paths(tmp_path).clean.exists()


def test_unexpected_extra_field_without_header(tmp_path: Path) -> None:
    rows = [[*r, f"192.168.{i % 250}.7"] for i, r in enumerate(toy_rows())]
    write_csv(tmp_path / "raw" / "toy.csv", rows, header=None)
    cfg = toy_config(raw={**toy_config()["raw"], "header": False})
    with pytest.raises(GitmlError, match=r"1 unexpected extra column.*IP address"):
        run_ingest(tmp_path, cfg)


def test_declared_column_holding_email_addresses_fails_naming_it(tmp_path: Path) -> None:
    cfg = toy_config()
    cfg["columns"] = {**cfg["columns"], "notes": {"dtype": "string", "role": "feature", "pii": "keep"}}
    rows = [[*r, "call me" if i % 2 else f"mail jane.doe{i}@corp.example.com"] for i, r in enumerate(toy_rows())]
    write_csv(tmp_path / "raw" / "toy.csv", rows, header=[*TOY_COLUMNS, "notes"])
    with pytest.raises(
        GitmlError,
        match=r"column 'notes' holds 100 value\(s\) that look like personal data \(e-mail address.*pii policy",
    ):
        run_ingest(tmp_path, cfg)
    assert not Paths(tmp_path).quarantine.exists()  # personal data is not copied anywhere


def test_wrong_type_in_numeric_column_is_quarantined(tmp_path: Path) -> None:
    root = with_bad_rows(tmp_path, {3: {"age": "forty"}, 7: {"age": "41.5"}, 9: {"balance": "12,5"}})
    result = run_ingest(root)
    assert_accounted(root, result, 200)
    assert result.quarantined_by_reason == {"wrong_type:age": 2, "wrong_type:balance": 1}
    reasons = quarantine(root).set_index("source_line")["reason"]
    assert reasons["5"] == "age: 'forty' is not a whole number"  # line 5: header + 4th row
    assert reasons["11"] == "balance: '12,5' is not a number"


def test_column_of_the_wrong_type_fails(tmp_path: Path) -> None:
    root = with_bad_rows(tmp_path, {i: {"age": "n/a-" + str(i)} for i in range(150)})
    with pytest.raises(GitmlError, match=r"column 'age' is declared integer, but 150 of its 200 values"):
        run_ingest(root)


def test_out_of_range_value_is_quarantined(tmp_path: Path) -> None:
    root = with_bad_rows(tmp_path, {0: {"age": "150"}, 1: {"age": "3"}, 2: {"balance": "-10"}})
    result = run_ingest(root)
    assert_accounted(root, result, 200)
    assert result.quarantined_by_reason == {"out_of_range:age": 2, "out_of_range:balance": 1}
    assert "age: 150 is above the maximum 100" in set(quarantine(root)["reason"])


def test_unknown_category_is_quarantined(tmp_path: Path) -> None:
    root = with_bad_rows(tmp_path, {10: {"city": "Atlantis"}, 11: {"segment": "Retail"}})
    result = run_ingest(root)
    assert_accounted(root, result, 200)
    assert result.quarantined_by_reason == {"unknown_category:city": 1, "unknown_category:segment": 1}
    assert set(quarantine(root)["reason"]) == {
        "city: unknown category 'Atlantis'",
        "segment: unknown category 'Retail'",
    }


def test_missing_value_in_a_required_column_is_quarantined(tmp_path: Path) -> None:
    root = with_bad_rows(tmp_path, {4: {"segment": "?"}, 5: {"churned": ""}})
    result = run_ingest(root)
    assert_accounted(root, result, 200)
    assert result.quarantined_by_reason == {"missing:segment": 1, "missing:churned": 1}


def test_all_null_column_fails(tmp_path: Path) -> None:
    root = with_bad_rows(tmp_path, {i: {"city": "NA"} for i in range(200)})
    with pytest.raises(GitmlError, match=r"column 'city' is empty in all 200 rows"):
        run_ingest(root)


def test_duplicated_rows_are_quarantined_pointing_at_the_first(tmp_path: Path) -> None:
    rows = toy_rows()
    rows[50] = list(rows[10])
    rows[51] = list(rows[10])
    write_csv(tmp_path / "raw" / "toy.csv", rows)
    result = run_ingest(tmp_path)
    assert_accounted(tmp_path, result, 200)
    assert result.quarantined_by_reason == {"duplicate_row": 2}
    assert set(quarantine(tmp_path)["reason"]) == {"duplicate of raw/toy.csv line 12"}


def test_duplicates_can_be_kept_by_config(tmp_path: Path) -> None:
    rows = toy_rows()
    rows[50] = list(rows[10])
    write_csv(tmp_path / "raw" / "toy.csv", rows)
    cfg = toy_config(quality={**toy_config()["quality"], "duplicates": "keep"})
    assert run_ingest(tmp_path, cfg).rows_clean == 200


def test_row_with_wrong_field_count_is_quarantined(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    lines = path.read_text().splitlines()
    lines[3] += ",surplus"
    lines[4] = ",".join(lines[4].split(",")[:3])
    path.write_text("\n".join(lines) + "\n")
    result = run_ingest(tmp_path)
    assert_accounted(tmp_path, result, 200)
    assert result.quarantined_by_reason == {"field_count": 2}
    bad = quarantine(tmp_path).set_index("source_line")
    assert bad.loc["4", "reason"] == "expected 6 fields, found 7"
    assert bad.loc["4", "extra_fields"] == "surplus"
    assert bad.loc["5", "reason"] == "expected 6 fields, found 3"


def test_a_row_can_fail_several_rules_and_counts_once(tmp_path: Path) -> None:
    root = with_bad_rows(tmp_path, {0: {"age": "999", "city": "Atlantis", "segment": "?"}})
    result = run_ingest(root)
    assert result.rows_quarantined == 1
    assert quarantine(root)["reason"][0] == (
        "age: 999 is above the maximum 100; city: unknown category 'Atlantis'; "
        "segment: missing, and the schema says it may not be"
    )


def test_too_many_bad_rows_fail_the_stage_but_keep_the_evidence(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    run_ingest(tmp_path)  # an earlier, good run leaves a clean table behind
    root = with_bad_rows(tmp_path, {i: {"age": "101"} for i in range(60)})
    with pytest.raises(GitmlError, match=r"60 of 200 rows \(30.0%\) failed validation, above the limit of 20.0%"):
        run_ingest(root)
    paths = Paths(root)
    assert len(quarantine(root)) == 60
    assert json.loads(paths.ingest_report.read_text())["rows_quarantined"] == 60
    assert not paths.clean.exists()


def test_quarantine_never_holds_raw_identifiers(tmp_path: Path) -> None:
    root = with_bad_rows(tmp_path, {0: {"age": "7"}})
    run_ingest(root)
    bad = quarantine(root)
    assert bad["customer_id"][0] != "C00000"
    assert len(bad["customer_id"][0]) == 32


def test_pseudonyms_depend_on_the_key(toy_root: Path, tmp_path: Path) -> None:
    run_ingest(toy_root)
    first = pd.read_parquet(Paths(toy_root).clean)["customer_id"]
    run_ingest(toy_root, env={"TOY_PSEUDONYM_KEY": "another-key-of-enough-length"})
    second = pd.read_parquet(Paths(toy_root).clean)["customer_id"]
    run_ingest(toy_root)
    third = pd.read_parquet(Paths(toy_root).clean)["customer_id"]
    assert (first != second).all()
    assert (first == third).all()
    assert first.is_unique


@pytest.mark.parametrize(("env", "message"), [({}, "not set"), ({"TOY_PSEUDONYM_KEY": "short"}, "5 characters long")])
def test_pseudonymisation_needs_a_real_key(toy_root: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(GitmlError, match=message):
        run_ingest(toy_root, env=env)


def test_gzip_input_and_suffixes(tmp_path: Path) -> None:
    rows = toy_rows()
    for r in rows:
        r[-1] += "."
    plain = write_csv(tmp_path / "plain.csv", rows, header=["# export of 2026-11-01"])
    (tmp_path / "raw").mkdir()
    with gzip.open(tmp_path / "raw" / "toy.csv.gz", "wb") as fh:
        fh.write(plain.read_bytes())
    raw = {**toy_config()["raw"], "files": [{"path": "raw/toy.csv.gz", "skip_rows": 1}], "header": False}
    raw["strip_suffix"] = {"churned": "."}
    result = run_ingest(tmp_path, toy_config(raw=raw))
    assert_accounted(tmp_path, result, 200)
    assert result.rows_quarantined == 0


def test_outputs_are_byte_identical_across_runs(toy_root: Path) -> None:
    paths = Paths(toy_root)
    outputs = [paths.clean, paths.quarantine, paths.ingest_report]
    with_bad_rows(toy_root, {3: {"age": "7"}})
    run_ingest(toy_root)
    first = [p.read_bytes() for p in outputs]
    run_ingest(toy_root)
    assert [p.read_bytes() for p in outputs] == first


def test_non_finite_and_oversized_numbers_are_quarantined(tmp_path: Path) -> None:
    root = with_bad_rows(
        tmp_path,
        {0: {"balance": "inf"}, 1: {"balance": "NaN"}, 2: {"balance": "1e400"}, 3: {"age": "99999999999999999999"}},
    )
    result = run_ingest(root)
    assert_accounted(root, result, 200)
    assert result.quarantined_by_reason == {"wrong_type:balance": 3, "wrong_type:age": 1}


def test_a_line_of_empty_fields_is_a_row_not_a_blank_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    path.write_text(path.read_text() + ",,,,,\n\n   \n")
    result = run_ingest(tmp_path)
    assert_accounted(tmp_path, result, 201)
    assert quarantine(tmp_path)["source_line"].tolist() == ["202"]


def test_byte_order_mark_and_windows_line_endings(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    result = run_ingest(tmp_path)
    assert_accounted(tmp_path, result, 200)
    assert result.rows_quarantined == 0


def test_header_with_other_case_suggests_the_name(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows(), header=[c.title() if c == "age" else c for c in TOY_COLUMNS])
    with pytest.raises(
        GitmlError, match=r"missing column\(s\) age and unexpected column\(s\) Age \(did you mean 'age'\?\)"
    ):
        run_ingest(tmp_path)


def test_text_in_another_encoding(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    path.write_bytes(path.read_bytes().replace(b"Lyon", "Lyön".encode("latin-1")))
    with pytest.raises(GitmlError, match=r"not readable as utf-8 text.*raw.encoding"):
        run_ingest(tmp_path)


def test_truncated_gzip(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    data = gzip.compress("\n".join(",".join(r) for r in toy_rows()).encode())
    (tmp_path / "raw" / "toy.csv.gz").write_bytes(data[: len(data) // 2])
    raw = {**toy_config()["raw"], "files": [{"path": "raw/toy.csv.gz"}], "header": False}
    with pytest.raises(GitmlError, match=r"raw/toy.csv.gz: cannot be read.*complete and not corrupt"):
        run_ingest(tmp_path, toy_config(raw=raw))


def test_a_limit_of_one_accepts_an_empty_clean_table(tmp_path: Path) -> None:
    root = with_bad_rows(tmp_path, {i: {"age": "7"} for i in range(200)})
    cfg = toy_config(quality={**toy_config()["quality"], "max_quarantined_fraction": 1.0})
    result = run_ingest(root, cfg)
    assert_accounted(root, result, 200)
    assert result.rows_clean == 0
    assert json.loads(Paths(root).ingest_report.read_text())["label_rate"] is None


def test_columns_in_another_order_are_matched_by_header(tmp_path: Path) -> None:
    order = list(reversed(TOY_COLUMNS))
    rows = [list(reversed(r)) for r in toy_rows()]
    rows[7] = rows[7][:3]  # a short line: its values still land under the right names
    write_csv(tmp_path / "raw" / "toy.csv", rows, header=order)
    result = run_ingest(tmp_path)
    assert_accounted(tmp_path, result, 200)
    clean = pd.read_parquet(Paths(tmp_path).clean)
    assert list(clean.columns) == TOY_COLUMNS
    bad = quarantine(tmp_path).iloc[0]
    assert bad["churned"] == toy_rows()[7][-1]
    assert bad["segment"] == toy_rows()[7][-2]
    assert bad["age"] == ""


def test_a_header_the_config_does_not_expect(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows())
    cfg = toy_config(raw={**toy_config()["raw"], "header": False})
    with pytest.raises(
        GitmlError, match=r"line 1 is a header \(customer_id, age, city, balance, ...\).*raw.header: true"
    ):
        run_ingest(tmp_path, cfg)


def test_no_header_where_the_config_expects_one(tmp_path: Path) -> None:
    write_csv(tmp_path / "raw" / "toy.csv", toy_rows(), header=None)
    with pytest.raises(
        GitmlError, match=r"the first line \(C00000, 67, \?, 8012.20, ...\) names none.*raw.header: false"
    ):
        run_ingest(tmp_path)


def test_unknown_encoding_in_config(tmp_path: Path) -> None:
    cfg = toy_config(raw={**toy_config()["raw"], "encoding": "utf-9"})
    with pytest.raises(GitmlError, match=r"encoding 'utf-9' is not a text encoding"):
        run_ingest(tmp_path, cfg)


def test_numeric_bins_become_categories(toy_root: Path) -> None:
    cfg = toy_config()
    cfg["columns"]["balance"]["generalize"] = {"bins": [1000, 5000]}
    rows = toy_rows()
    rows[0][3], rows[1][3], rows[2][3] = "999.99", "1000", "5000"
    write_csv(toy_root / "raw" / "toy.csv", rows)
    run_ingest(toy_root, cfg)
    balance = pd.read_parquet(Paths(toy_root).clean)["balance"]
    assert list(balance.cat.categories) == ["<1000", "[1000, 5000)", "5000+"]
    assert balance[:3].tolist() == ["<1000", "[1000, 5000)", "5000+"]
