"""Request validation from the bytes: every class of bad input, the OpenAPI schema, and the anonymiser."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from gitml.data.anonymize import anonymize_values
from gitml.data.schema import Column, DatasetSchema
from gitml.serve.requests import (
    Anonymizer,
    RequestError,
    Validator,
    columns,
    feedback_type,
    ignored_columns,
    parse,
    record_type,
    request_columns,
    whole_number,
)
from tests.conftest import REPO, TOY_CONFIG, toy_config

ADULT = DatasetSchema.from_config(
    yaml.safe_load((REPO / "conf" / "data" / "adult.yaml").read_text(encoding="utf-8")), "conf/data/adult.yaml"
)
TOY = DatasetSchema.from_config(TOY_CONFIG, "toy")
SCHEMAS = {"adult": ADULT, "toy": TOY}
MAX_ITEMS = 5
EXACT = 2**53 - 1  # whole numbers without declared bounds are taken up to here
KINDS = {"unknown_field", "label_field", "body", "invalid_json", "batch_size"}  # the reasons that are not field names
REF = "#/components/schemas/{model}"

ADULT_RECORD: dict[str, Any] = {
    "age": 39, "workclass": "State-gov", "education": "Bachelors", "education-num": 13,
    "marital-status": "Never-married", "occupation": "Adm-clerical", "relationship": "Not-in-family",
    "race": "White", "sex": "Male", "capital-gain": 2174, "capital-loss": 0, "hours-per-week": 40,
    "native-country": "United-States",
}  # fmt: skip
TOY_RECORD: dict[str, Any] = {"age": 40, "city": "Paris", "balance": 12.5, "segment": "retail"}
RECORDS = {"adult": ADULT_RECORD, "toy": TOY_RECORD}


def names_of(schema: DatasetSchema) -> tuple[str, ...]:
    return tuple(c.name for c in request_columns(schema))


def validator(schema: DatasetSchema, max_items: int = MAX_ITEMS) -> Validator:
    return Validator(record_type(schema), max_items, names_of(schema), schema.label.name)


def feedback_validator(schema: DatasetSchema) -> Validator:
    return Validator(feedback_type(schema, MAX_ITEMS), MAX_ITEMS, ("request_id", "index", "label"))


def body_of(fields: dict[str, str]) -> bytes:
    """A JSON object from field -> raw JSON text of its value (so NaN and Infinity tokens can be sent)."""
    return ("{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in fields.items()) + "}").encode()


def raw_fields(record: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v) for k, v in record.items()}


def rejected(v: Validator, body: bytes, what: str = "a record") -> RequestError:
    """The RequestError for `body`, checked for what every rejection must be."""
    with pytest.raises(RequestError) as info:
        parse(v, body, what)
    error = info.value
    assert error.status in (400, 413, 422)
    # The validation-failure counter is labelled with these: a bounded set, never a client's key.
    assert error.reasons
    assert set(error.reasons) <= {*v.names, *KINDS}, error.reasons
    # The detail goes out as strict JSON, and never echoes a large value back.
    text = json.dumps(error.detail, allow_nan=False)
    assert len(text) < 4 * len(body) + 2000
    if error.status == 422:
        assert isinstance(error.detail, list)
        for item in error.detail:
            assert item["loc"][0] == "body"
            assert isinstance(item["msg"], str)
            assert item["msg"]
            if "input" in item:
                assert item["input"] is None or isinstance(item["input"], bool | int | float | str)
                assert len(json.dumps(item["input"])) <= 202
    else:
        assert isinstance(error.detail, str)
    return error


def test_request_columns_are_the_inputs_then_protected_attributes_that_are_not() -> None:
    assert names_of(ADULT) == tuple(ADULT_RECORD)
    assert "fnlwgt" not in names_of(ADULT)  # pii: drop never reaches the server
    assert "income" not in names_of(ADULT)  # the label is not an input
    assert names_of(TOY) == ("age", "city", "balance", "segment")  # the identifier is not an input
    columns_cfg = {**TOY_CONFIG["columns"], "age": {**TOY_CONFIG["columns"]["age"], "feature": False}}
    not_input = DatasetSchema.from_config(toy_config(columns=columns_cfg))
    assert [c.name for c in not_input.feature_columns] == ["city", "balance", "segment"]
    assert names_of(not_input) == ("city", "balance", "segment", "age")  # still logged for fairness


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_valid_record_and_a_valid_batch_parse(name: str) -> None:
    schema, record = SCHEMAS[name], RECORDS[name]
    v = validator(schema)
    assert parse(v, json.dumps(record).encode(), "a record") == ([record], False)
    assert parse(v, b" \n\t" + json.dumps(record).encode() + b"\n", "a record") == ([record], False)
    batch = [record, record, record]
    assert parse(v, json.dumps(batch).encode(), "a record") == (batch, True)
    assert parse(v, json.dumps([record]).encode(), "a record") == ([record], True)  # a batch of one is a batch
    full = [record] * MAX_ITEMS
    assert parse(v, json.dumps(full).encode(), "a record") == (full, True)


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_nullable_field_may_be_null_or_left_out_and_columns_reads_both_as_none(name: str) -> None:
    schema, record = SCHEMAS[name], RECORDS[name]
    nullable = [c.name for c in request_columns(schema) if c.nullable]
    assert nullable  # both schemas have some
    v = validator(schema)
    left_out = {k: x for k, x in record.items() if k not in nullable}
    null = {**record, **dict.fromkeys(nullable)}
    items, batch = parse(v, json.dumps([record, left_out, null]).encode(), "a record")
    assert batch
    assert all(name not in items[1] for name in nullable)  # absent, not filled in
    table = columns(items, v.names)
    assert list(table) == list(v.names)
    for field in v.names:
        expected = [record[field], None, None] if field in nullable else [record[field]] * 3
        assert table[field] == expected


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_whole_float_for_an_integer_field_is_taken_as_that_integer(name: str) -> None:
    schema, record = SCHEMAS[name], RECORDS[name]
    integers = [c for c in request_columns(schema) if c.dtype == "integer"]
    assert integers
    v = validator(schema)
    for column in integers:
        value = int(column.minimum if column.minimum is not None else 0) + 1
        for text in (f"{value}.0", f"{value}.000", f"{value}e0", f"{value * 10}e-1"):
            [item], _ = parse(v, body_of({**raw_fields(record), column.name: text}), "a record")
            assert item[column.name] == value
            assert type(item[column.name]) is int, text


# (field, raw JSON of the bad value, the error type, words the message must have)
BAD_VALUES: dict[str, list[tuple[str, str, str, str]]] = {
    "adult": [
        ("age", '"39"', "float_type", "valid number"),  # a string for a number
        ("capital-gain", '"2174"', "float_type", "valid number"),
        ("age", "true", "float_type", "valid number"),  # a boolean for a number
        ("capital-loss", "false", "float_type", "valid number"),
        ("age", '{"value": 39}', "float_type", "valid number"),  # an object for a scalar
        ("hours-per-week", "[40]", "float_type", "valid number"),  # an array for a scalar
        ("sex", '{"sex": "Male"}', "literal_error", "'Female' or 'Male'"),
        ("race", '["White"]', "literal_error", "'White'"),
        ("workclass", "3", "literal_error", "'Private'"),  # a number for a category
        ("sex", "1", "literal_error", "'Female' or 'Male'"),
        ("education", "true", "literal_error", "'Bachelors'"),
        ("workclass", '"Nope"', "literal_error", "'Private'"),  # an unknown category
        ("sex", '"male"', "literal_error", "'Female' or 'Male'"),  # categories are case-sensitive
        ("race", '" White"', "literal_error", "'White'"),  # the raw Adult files' leading space
        ("native-country", '"Atlantis"', "literal_error", "'United-States'"),
        ("native-country", '"Europe "', "literal_error", "'Europe'"),
        ("age", "null", "float_type", "valid number"),  # null for a non-nullable field
        ("sex", "null", "literal_error", "'Female' or 'Male'"),
        ("age", "16", "greater_than_equal", "greater than or equal to 17"),  # out of range
        ("age", "-1e300", "greater_than_equal", "greater than or equal to 17"),
        ("age", "91", "less_than_equal", "less than or equal to 90"),
        ("age", "90.5", "less_than_equal", "less than or equal to 90"),
        ("capital-gain", "100000", "less_than_equal", "less than or equal to 99999"),
        ("hours-per-week", "0", "greater_than_equal", "greater than or equal to 1"),
        ("capital-loss", "-1", "greater_than_equal", "greater than or equal to 0"),
        ("age", "1000000000000000000000000000000", "less_than_equal", "less than or equal to 90"),
        ("age", "23.5", "int_from_float", "fractional part"),  # an integer field given a fraction
        ("education-num", "12.5", "int_from_float", "fractional part"),
        ("capital-gain", "1e-10", "int_from_float", "fractional part"),
        ("hours-per-week", "40.000001", "int_from_float", "fractional part"),
        ("age", "NaN", "finite_number", "finite"),  # the tokens Python's json writes
        ("age", "Infinity", "finite_number", "finite"),
        ("capital-gain", "-Infinity", "finite_number", "finite"),
        ("capital-gain", "1e400", "finite_number", "finite"),  # overflows to infinity
    ],
    "toy": [
        ("balance", '"12.5"', "float_type", "valid number"),
        ("balance", "true", "float_type", "valid number"),
        ("balance", "null", "float_type", "valid number"),
        ("balance", '{"amount": 1}', "float_type", "valid number"),
        ("balance", "-0.01", "greater_than_equal", "greater than or equal to 0"),
        ("balance", "NaN", "finite_number", "finite"),
        ("balance", "-Infinity", "finite_number", "finite"),
        ("age", "18.5", "int_from_float", "fractional part"),
        ("age", "17", "greater_than_equal", "greater than or equal to 18"),
        ("age", '"<30"', "float_type", "valid number"),  # a band label: age is banded for reports only
        ("city", '"Marseille"', "literal_error", "'Paris'"),
        ("city", '"Spain"', "literal_error", "'France'"),  # group names are accepted, others not
        ("city", "1", "literal_error", "'Paris'"),
        ("city", "[]", "literal_error", "'Paris'"),
        ("segment", "null", "literal_error", "'retail' or 'business'"),
        ("segment", "false", "literal_error", "'retail' or 'business'"),
    ],
}
BAD_CASES = [(name, *case) for name, cases in BAD_VALUES.items() for case in cases]


@pytest.mark.parametrize(("name", "field", "raw", "kind", "words"), BAD_CASES)
def test_a_bad_value_is_a_422_naming_the_field_and_the_problem(
    name: str, field: str, raw: str, kind: str, words: str
) -> None:
    record = raw_fields(RECORDS[name])
    v = validator(SCHEMAS[name])
    single = rejected(v, body_of({**record, field: raw}))
    assert single.status == 422
    assert single.reasons == (field,)
    [item] = single.detail
    assert item["loc"] == ["body", field]
    assert item["type"] == kind
    assert words in item["msg"]
    value = json.loads(raw)
    if isinstance(value, float) and not math.isfinite(value):
        assert "input" not in item  # NaN and infinity are not valid JSON to send back
    elif isinstance(value, dict | list) or (isinstance(value, int) and abs(value) >= 2**63):
        assert "input" not in item  # objects, and integers past 64 bits, which JSON libraries refuse
    else:
        assert item["input"] == value  # short plain values are echoed, so the client sees what was wrong

    good = body_of(record).decode()
    batch = rejected(v, f"[{good},{good},{body_of({**record, field: raw}).decode()}]".encode())
    assert batch.status == 422
    assert batch.reasons == (field,)
    [item] = batch.detail
    assert item["loc"] == ["body", 2, field]
    assert item["type"] == kind
    assert words in item["msg"]


def test_every_bad_field_of_a_batch_is_reported_with_its_place() -> None:
    v = validator(ADULT)
    batch = [ADULT_RECORD, {**ADULT_RECORD, "age": "x"}, ADULT_RECORD, {**ADULT_RECORD, "sex": "?", "age": 200}]
    error = rejected(v, json.dumps(batch).encode())
    assert error.status == 422
    assert sorted(tuple(item["loc"]) for item in error.detail) == [
        ("body", 1, "age"), ("body", 3, "age"), ("body", 3, "sex"),
    ]  # fmt: skip
    assert sorted(error.reasons) == ["age", "age", "sex"]


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_missing_required_field_is_a_422_naming_it(name: str) -> None:
    schema, record = SCHEMAS[name], RECORDS[name]
    v = validator(schema)
    required = [c.name for c in request_columns(schema) if not c.nullable]
    assert required
    for field in required:
        without = {k: x for k, x in record.items() if k != field}
        for body, loc in ((json.dumps(without), ["body", field]), (json.dumps([record, without]), ["body", 1, field])):
            error = rejected(v, body.encode())
            assert error.status == 422
            assert error.reasons == (field,)
            [item] = error.detail
            assert item["loc"] == loc
            assert item["type"] == "missing"
            assert "required" in item["msg"]
            assert "input" not in item  # the input of a missing field is the whole record


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("agee", "age"),
        ("Age", "age"),
        ("hours_per_week", "hours-per-week"),
        ("native_country", "native-country"),
        ("capitalgain", "capital-gain"),
        ("zzzz", None),
        ("", None),
        ("k" * 5000, None),  # a long key is reported, but is no reason label
        ("émoji 🎉", None),
    ],
)
def test_an_unknown_field_is_a_422_with_a_suggestion_when_one_is_close(key: str, meant: str | None) -> None:
    v = validator(ADULT)
    for body, loc in (
        ({**ADULT_RECORD, key: 1}, ["body", key]),
        ([ADULT_RECORD, {**ADULT_RECORD, key: {"nested": [1, 2]}}], ["body", 1, key]),
    ):
        error = rejected(v, json.dumps(body, ensure_ascii=False).encode())
        assert error.status == 422
        assert error.reasons == ("unknown_field",)  # never the client's key: the label set stays bounded
        [item] = error.detail
        assert item["loc"] == loc
        assert item["type"] == "extra_forbidden"
        assert f"unknown field '{key}'" in item["msg"]
        assert "the fields are age, workclass" in item["msg"]
        if meant is None:
            assert "did you mean" not in item["msg"]
        else:
            assert f"(did you mean '{meant}'?)" in item["msg"]


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_a_record_shaped_as_a_raw_row_is_taken_and_its_dropped_columns_ignored(name: str) -> None:
    schema, record = SCHEMAS[name], RECORDS[name]
    ignored = ignored_columns(schema)
    assert ignored  # each bundled schema drops a column or has an identifier
    assert all(c.pii == "drop" or c.role == "identifier" for c in ignored)
    raw = {**record, **{c.name: "x7" for c in ignored}}
    items, batch = parse(validator(schema), json.dumps(raw).encode(), "a record")
    assert not batch
    # columns() reads the request fields alone: an ignored value reaches neither the model nor the log.
    assert set(columns(items, names_of(schema))) == set(names_of(schema))
    assert all(c.name not in columns(items, names_of(schema)) for c in ignored)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_label_in_a_record_is_refused_with_where_it_goes(name: str) -> None:
    schema = SCHEMAS[name]
    label = schema.label
    assert label.categories is not None
    body = json.dumps({**RECORDS[name], label.name: label.categories[0]}).encode()
    error = rejected(validator(schema), body)
    assert error.status == 422
    assert error.reasons == ("label_field",)
    [item] = error.detail
    assert item["loc"] == ["body", label.name]
    assert f"'{label.name}' is the label the model predicts" in item["msg"]
    assert "/feedback" in item["msg"]


@pytest.mark.parametrize("body", [b"3", b"-1.5", b'"a record"', b"null", b"true", b"false", b'  "{}"', b"1e400"])
@pytest.mark.parametrize("endpoint", ["record", "feedback"])
def test_a_json_scalar_body_is_a_422_at_the_body(body: bytes, endpoint: str) -> None:
    v, what = (validator(ADULT), "a record") if endpoint == "record" else (feedback_validator(ADULT), "a feedback")
    error = rejected(v, body, what)
    assert error.status == 422
    assert error.reasons == ("body",)
    [item] = error.detail
    assert item["loc"] == ["body"]
    assert f"expected {what} (a JSON object) or a batch of them (a JSON array)" == item["msg"]


@pytest.mark.parametrize(
    "body",
    [
        b"",  # empty
        b" \n ",
        b"{",  # truncated
        b'{"age": 39',
        b'{"age": 39,',
        b"[",
        b'[{"age": 39}',
        b'[{"age": 39},',
        b"hello",  # not JSON at all
        b"age=39&sex=Male",
        b"{'age': 39}",  # Python, not JSON
        b'{"age": 39} trailing',
        b'{"age": 39}{"age": 40}',
        b"\xff\xfe{}",  # not UTF-8
        b'{"sex": "\xff"}',
        b'{"sex": "Male\xc3"}',  # a cut multi-byte character
        b'{"age": 0x27}',
        b"[" * 1000 + b"]" * 1000,  # nested past the parser's limit
    ],
)
def test_a_body_that_is_not_json_is_a_400(body: bytes) -> None:
    for v, what in ((validator(ADULT), "a record"), (feedback_validator(ADULT), "a feedback object")):
        error = rejected(v, body, what)
        assert error.status == 400
        assert error.reasons == ("invalid_json",)
        assert error.detail.startswith("the body is not valid JSON (")
        assert error.detail.endswith(f"send {what} as JSON")


@pytest.mark.parametrize("body", [b"[]", b" [ ] "])
def test_an_empty_batch_is_a_422(body: bytes) -> None:
    error = rejected(validator(ADULT), body)
    assert error.status == 422
    assert error.reasons == ("body",)
    [item] = error.detail
    assert item["loc"] == ["body"]
    assert item["type"] == "too_short"
    assert "at least 1 item" in item["msg"]


@pytest.mark.parametrize("bad", [[1], ["record"], [None], [[]], [True]])
def test_a_batch_item_that_is_not_an_object_is_a_422_at_its_place(bad: list[Any]) -> None:
    error = rejected(validator(ADULT), json.dumps([ADULT_RECORD, *bad]).encode())
    assert error.status == 422
    assert error.reasons == ("body",)
    [item] = error.detail
    assert item["loc"] == ["body", 1]
    assert "valid dictionary" in item["msg"] or "object" in item["msg"]


@pytest.mark.parametrize("max_items", [1, 3, 10])
def test_a_batch_over_max_items_is_a_413(max_items: int) -> None:
    v = validator(ADULT, max_items)
    for items in ([ADULT_RECORD] * (max_items + 1), [{"age": "bad"}] * (max_items + 1), [ADULT_RECORD] * 3 * max_items):
        error = rejected(v, json.dumps(items).encode())
        assert error.status == 413  # too big, even where the items are also bad
        assert error.reasons == ("batch_size",)
        assert f"more than {max_items} items" in error.detail
        assert "serve.max_batch" in error.detail
    assert parse(v, json.dumps([ADULT_RECORD] * max_items).encode(), "a record")[0] == [ADULT_RECORD] * max_items


@pytest.mark.parametrize(
    "value",
    ["x" * 10_000, {"a": "x" * 10_000}, ["x" * 100] * 100, {"nested": {"deeper": list(range(1000))}}],
)
def test_a_large_bad_value_is_not_echoed(value: Any) -> None:
    v = validator(ADULT)
    for field in ("sex", "age", "workclass"):
        error = rejected(v, json.dumps({**ADULT_RECORD, field: value}).encode())
        [item] = error.detail
        assert item["loc"] == ["body", field]
        assert "input" not in item
        assert len(json.dumps(error.detail)) < 1000


def test_feedback_validates_its_id_index_and_label() -> None:
    v = feedback_validator(ADULT)
    rid = "0123456789abcdef" * 2
    assert parse(v, json.dumps({"request_id": rid, "label": ">50K"}).encode(), "f") == (
        [{"request_id": rid, "label": ">50K"}], False,
    )  # fmt: skip
    last = float(MAX_ITEMS - 1)
    items, batch = parse(v, json.dumps([{"request_id": rid, "index": last, "label": "<=50K"}]).encode(), "f")
    assert batch
    assert items == [{"request_id": rid, "index": MAX_ITEMS - 1, "label": "<=50K"}]
    assert type(items[0]["index"]) is int
    bad = [
        ("request_id", rid.upper()),
        ("request_id", rid[:-1]),
        ("request_id", rid + "0"),
        ("request_id", rid + "\n"),  # `$` must not match before a trailing newline
        ("request_id", "g" * 32),
        ("request_id", 12345678901234567890123456789012),
        ("request_id", None),
        ("label", ">50K."),
        ("label", "yes"),
        ("label", 1),
        ("label", None),
        ("index", -1),
        ("index", MAX_ITEMS),  # past the largest batch: no record has that place
        ("index", 0.5),
        ("index", "1"),
        ("index", True),
        ("index", None),
    ]
    for field, value in bad:
        error = rejected(v, json.dumps({"request_id": rid, "index": 0, "label": ">50K", field: value}).encode(), "f")
        assert error.status == 422
        assert error.reasons == (field,)
        assert [item["loc"] for item in error.detail] == [["body", field]]
    for missing in ("request_id", "label"):
        without = {k: x for k, x in {"request_id": rid, "label": ">50K"}.items() if k != missing}
        error = rejected(v, json.dumps(without).encode(), "f")
        assert [(item["loc"], item["type"]) for item in error.detail] == [(["body", missing], "missing")]
    error = rejected(v, json.dumps({"request_id": rid, "label": ">50K", "score": 0.5}).encode(), "f")
    assert error.reasons == ("unknown_field",)


@pytest.mark.parametrize(
    ("minimum", "maximum", "text", "expected"),
    [
        (0, 10, "3", 3),
        (0, 10, "3.0", 3),
        (0, 10, "0", 0),
        (0, 10, "-0.0", 0),
        (0, 10, "10", 10),
        (None, None, "123456789", 123456789),
        (None, None, "-5", -5),
        (None, None, str(2**53 - 1), 2**53 - 1),
        (None, None, f"{-(2**53 - 1)}.0", -(2**53 - 1)),
        (None, None, str(2**53), None),  # from 2**53 a float no longer holds every whole number:
        (None, None, str(2**53 + 1), None),  # 2**53 + 1 parses as 2**53, so both are refused
        (None, None, str(2**53 + 2), None),
        (None, None, "1e300", None),
        (0, 10, "3.5", None),
        (0, 10, "1e-10", None),
        (0, 10, "9.999999999", None),
        (0, 10, '"3"', None),
        (0, 10, "true", None),
        (0, 10, "null", None),
        (0, 10, "11", None),
        (0, 10, "-1", None),
        (0, 10, "NaN", None),
        (None, None, "Infinity", None),
    ],
)
def test_whole_number_takes_integers_as_json_schema_means_them(
    minimum: float | None, maximum: float | None, text: str, expected: int | None
) -> None:
    adapter: TypeAdapter[int] = TypeAdapter(whole_number(minimum, maximum))
    if expected is None:
        with pytest.raises(ValidationError):
            adapter.validate_json(text)
    else:
        value = adapter.validate_json(text)
        assert value == expected
        assert type(value) is int


@pytest.mark.parametrize(
    ("minimum", "maximum", "documented"),
    [
        (0, 10, {"type": "integer", "minimum": 0, "maximum": 10}),
        (1.0, None, {"type": "integer", "minimum": 1, "maximum": EXACT}),
        (0.5, 99.5, {"type": "integer", "minimum": 0.5, "maximum": 99.5}),
        (None, None, {"type": "integer", "minimum": -EXACT, "maximum": EXACT}),  # where floats hold every integer
    ],
)
def test_whole_number_is_documented_as_an_integer(
    minimum: float | None, maximum: float | None, documented: dict[str, Any]
) -> None:
    schema = TypeAdapter(whole_number(minimum, maximum)).json_schema()
    assert schema == documented
    assert all(type(schema[k]) is type(documented[k]) for k in documented)  # 1, not 1.0


def property_schema(prop: dict[str, Any], nullable: bool) -> dict[str, Any]:
    """The non-null branch of a property's schema."""
    if not nullable:
        assert "anyOf" not in prop
        return prop
    branches = prop["anyOf"]
    assert {"type": "null"} in branches
    [value] = [b for b in branches if b != {"type": "null"}]
    return value  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_openapi_schema_lists_every_field_with_its_type_and_domain(name: str) -> None:
    schema = SCHEMAS[name]
    body, defs = validator(schema).schema(REF)
    assert body == {
        "anyOf": [
            {"$ref": "#/components/schemas/Record"},
            {"type": "array", "items": {"$ref": "#/components/schemas/Record"}, "minItems": 1, "maxItems": MAX_ITEMS},
        ]
    }
    record = defs["Record"]
    assert record["type"] == "object"
    assert record["additionalProperties"] is False
    ignored = [c.name for c in ignored_columns(schema)]
    assert list(record["properties"]) == [*names_of(schema), *ignored]
    assert record["required"] == [c.name for c in request_columns(schema) if not c.nullable]
    for name in ignored:  # a raw row's dropped columns: documented as ignored, never required
        assert "ignored" in record["properties"][name]["description"]
    for column in request_columns(schema):
        prop = property_schema(record["properties"][column.name], column.nullable)
        if column.dtype == "categorical":
            assert prop["type"] == "string"
            gen = column.generalization
            categories = list(column.categories or ())
            groups = [g for g in (gen.group_names if gen and gen.group_names else ()) if g not in categories]
            assert prop["enum"] == [*categories, *groups]
        else:
            assert prop["type"] == {"integer": "integer", "float": "number"}[column.dtype]
            implicit = (-EXACT, EXACT) if column.dtype == "integer" else (None, None)
            bounds = zip(("minimum", "maximum"), (column.minimum, column.maximum), implicit, strict=True)
            for key, declared, default in bounds:
                bound = default if declared is None else declared
                if bound is None:
                    assert key not in prop
                else:
                    assert prop[key] == bound
        assert json.dumps([body, defs], allow_nan=False)


def test_the_openapi_schema_of_a_generalised_column_takes_raw_categories_and_group_names() -> None:
    _, adult_defs = validator(ADULT).schema(REF)
    country = property_schema(adult_defs["Record"]["properties"]["native-country"], nullable=True)
    assert {"United-States", "Holand-Netherlands", "Europe", "Asia", "Central-America-Caribbean"} <= set(
        country["enum"]
    )
    assert len(country["enum"]) == len(set(country["enum"]))  # "Canada" is a category and a group: listed once
    _, toy_defs = validator(TOY).schema(REF)
    city = property_schema(toy_defs["Record"]["properties"]["city"], nullable=True)
    assert city["enum"] == ["Berlin", "Hamburg", "Munich", "Lyon", "Paris", "Nice", "Germany", "France"]


def test_the_openapi_schema_of_feedback_restricts_the_label_to_the_classes() -> None:
    body, defs = feedback_validator(ADULT).schema(REF)
    feedback = defs["Feedback"]
    assert body["anyOf"][0] == {"$ref": "#/components/schemas/Feedback"}
    assert feedback["additionalProperties"] is False
    assert feedback["required"] == ["request_id", "label"]
    assert feedback["properties"]["label"]["enum"] == ["<=50K", ">50K"]
    assert feedback["properties"]["request_id"]["pattern"] == "^[0-9a-f]{32}$"
    assert feedback["properties"]["index"]["type"] == "integer"
    assert feedback["properties"]["index"]["minimum"] == 0
    assert feedback["properties"]["index"]["maximum"] == MAX_ITEMS - 1


# The property-style check: records drawn at random from the schema's declared domain parse;
# one field at a time made invalid, they are rejected at that field.


def allowed_strings(column: Column) -> list[str]:
    gen = column.generalization
    return [*(column.categories or ()), *(gen.group_names if gen and gen.group_names else ())]


def valid_value(column: Column, rng: random.Random) -> tuple[str, Any]:
    """Raw JSON of a value inside the column's domain, and the value parse returns for it."""
    if column.nullable and rng.random() < 0.15:
        return "null", None
    if column.dtype == "categorical":
        value = rng.choice(allowed_strings(column))
        return json.dumps(value), value
    low = column.minimum if column.minimum is not None else -1e6
    high = column.maximum if column.maximum is not None else 1e6
    if column.dtype == "integer":
        number = rng.choice([int(low), int(high), rng.randint(int(low), int(high))])
        return rng.choice([str(number), f"{number}.0", f"{number}e0"]), number
    number_f = float(rng.choice([low, high, rng.uniform(low, high), round(rng.uniform(low, high))]))
    texts = [repr(number_f), *([str(int(number_f))] if number_f.is_integer() else [])]  # 5 for 5.0 too
    return rng.choice(texts), number_f


def invalid_values(column: Column) -> list[str]:
    """Raw JSON of values outside the column's domain, one of each kind that applies."""
    bad = ["{}", '{"a": 1}', "[]", "[1]", "true", "false", "NaN", "Infinity", "-Infinity"]
    if not column.nullable:
        bad.append("null")
    if column.dtype == "categorical":
        first = (column.categories or ("x",))[0]
        bad += ["1", "0.5", json.dumps(first.lower() + "?"), json.dumps(f" {first}"), json.dumps(f"{first} "), '""']
        bad.append(json.dumps(first.upper()) if first.upper() not in allowed_strings(column) else '"?"')
        return bad
    low = column.minimum
    high = column.maximum
    bad += ['"1"', '"a"', '""', "1e400", "-1e400"]
    if low is not None:
        bad += [repr(low - 1), repr(low - 1e-9), repr(-1e300)]
    if high is not None:
        bad += [repr(high + 1), repr(high + 1e-6), repr(1e300)]
    if column.dtype == "integer":
        middle = int(low if low is not None else 0) + 1
        bad += [f"{middle}.5", f"{middle + 1e-6}", "1e-10" if (low or 0) <= 0 else f"{middle}.000001"]
    return bad


@pytest.mark.parametrize("name", SCHEMAS)
def test_random_records_from_the_schema_domain_parse_and_any_one_bad_field_is_caught(name: str) -> None:
    rng = random.Random(20240601)
    v = validator(SCHEMAS[name], max_items=1000)
    fields = request_columns(SCHEMAS[name])
    bad_values = {column.name: invalid_values(column) for column in fields}
    bodies, expected = [], []
    rejected_count = 0
    for _ in range(300):
        raw, parsed = {}, {}
        for column in fields:
            text, value = valid_value(column, rng)
            if value is None and rng.random() < 0.5:
                continue  # a nullable field left out
            raw[column.name], parsed[column.name] = text, value
        body = body_of(raw)
        assert parse(v, body, "a record") == ([parsed], False), body
        bodies.append(body.decode())
        expected.append(parsed)
        for column in fields:
            mutated = {**raw, column.name: rng.choice(bad_values[column.name])}
            error = rejected(v, body_of(mutated))
            assert error.status == 422, mutated
            assert [item["loc"] for item in error.detail] == [["body", column.name]], mutated
            assert error.reasons == (column.name,)
            rejected_count += 1
    items, batch = parse(v, f"[{','.join(bodies)}]".encode(), "a record")
    assert batch
    assert items == expected
    assert rejected_count == 300 * len(fields)


def test_every_kind_of_invalid_value_is_caught_for_every_field() -> None:
    for schema in SCHEMAS.values():
        v = validator(schema)
        record = raw_fields(RECORDS[schema.name])
        for column in request_columns(schema):
            for text in invalid_values(column):
                error = rejected(v, body_of({**record, column.name: text}))
                assert [item["loc"] for item in error.detail] == [["body", column.name]], (column.name, text)


# The anonymiser: what ingest does to stored data, done to requests.

TOY_BINNED = DatasetSchema.from_config(
    toy_config(
        columns={
            **TOY_CONFIG["columns"],
            "age": {**TOY_CONFIG["columns"]["age"], "pii": "generalize", "generalize": {"bins": [30, 50]}},
            "balance": {**TOY_CONFIG["columns"]["balance"], "nullable": True, "generalize": {"bins": [100, 999.5]}},
        }
    ),
    "toy with bins",
)


def same(served: Any, stored: Any) -> bool:
    """Equal values, missing as None on the server's side and None or NaN on ingest's."""
    if served is None:
        return stored is None or (isinstance(stored, float) and math.isnan(stored))
    if isinstance(served, str) or isinstance(stored, str):
        return type(served) is type(stored) and served == stored
    return float(served) == float(stored)


def raw_value(column: Column, rng: random.Random) -> Any:
    if column.nullable and rng.random() < 0.2:
        return None
    if column.dtype == "categorical":
        return rng.choice(column.categories or ())
    gen = column.generalization
    edges = [*(gen.bins or ()), *([gen.top_code] if gen and gen.top_code is not None else [])] if gen else []
    low = column.minimum if column.minimum is not None else 0.0
    high = column.maximum if column.maximum is not None else 9000.0
    if edges and rng.random() < 0.3:  # exactly on an edge, and either side of it
        edge = rng.choice(edges)
        value: float = rng.choice([edge, edge - 1, edge + 1] if column.dtype == "integer" else [edge, edge - 0.01])
        return max(low, value)
    return rng.randint(int(low), int(high)) if column.dtype == "integer" else round(rng.uniform(low, high), 2)


@pytest.mark.parametrize("schema", [TOY, TOY_BINNED], ids=["toy", "toy-binned"])
def test_the_anonymiser_gives_what_ingest_gives(schema: DatasetSchema) -> None:
    rng = random.Random(7)
    fields = request_columns(schema)
    generalised = [c for c in fields if c.generalization is not None]
    assert generalised
    records = [{c.name: raw_value(c, rng) for c in fields} for _ in range(500)]
    items, _ = parse(validator(schema, 1000), json.dumps(records).encode(), "a record")
    table = columns(items, names_of(schema))
    Anonymizer(schema)(table)
    for column in fields:
        raw = [r[column.name] for r in records]
        if column.generalization is None:
            assert table[column.name] == raw  # untouched
            continue
        stored = anonymize_values(column, raw, None).tolist()
        mismatched = [(r, s, t) for r, s, t in zip(raw, stored, table[column.name], strict=True) if not same(t, s)]
        assert not mismatched, (column.name, mismatched[:5])
        assert {None if v is None else type(v) for v in table[column.name]} <= {None, str, int, float}
        if column.nullable:
            assert None in raw


def stored_forms(column: Column) -> list[Any]:
    """Values of a generalised column as stored data has them: group names, band labels, top-coded numbers."""
    gen = column.generalization
    assert gen is not None
    if gen.group_names is not None:
        return list(gen.group_names)
    if gen.bin_labels is not None:
        return list(gen.bin_labels)
    assert gen.top_code is not None
    return [column.minimum or 0, gen.top_code]


@pytest.mark.parametrize("schema", [TOY, TOY_BINNED, ADULT], ids=["toy", "toy-binned", "adult"])
def test_the_anonymiser_passes_stored_forms_and_none_through(schema: DatasetSchema) -> None:
    stored = {c.name: [*stored_forms(c), None] for c in request_columns(schema) if c.generalization is not None}
    assert stored
    table = {name: list(values) for name, values in stored.items()}
    Anonymizer(schema)(table)
    assert table == stored


@pytest.mark.parametrize("schema", [TOY, TOY_BINNED, ADULT], ids=["toy", "toy-binned", "adult"])
def test_every_value_the_validator_takes_anonymises_into_the_stored_domain(schema: DatasetSchema) -> None:
    accepted: dict[str, list[Any]] = {}
    for column in request_columns(schema):
        if column.dtype == "categorical":
            accepted[column.name] = allowed_strings(column)
        else:
            bounds = [column.minimum or 0, column.maximum or 1e9]
            gen = column.generalization
            accepted[column.name] = [*bounds, *(gen.bin_labels or () if gen else ())]
        if column.nullable:
            accepted[column.name].append(None)
    width = max(len(values) for values in accepted.values())
    records = [{name: values[i % len(values)] for name, values in accepted.items()} for i in range(width)]
    items, _ = parse(validator(schema, width), json.dumps(records).encode(), "a record")
    table = columns(items, names_of(schema))
    Anonymizer(schema)(table)
    for column in request_columns(schema):
        gen = column.generalization
        out = set(table[column.name]) - {None}
        if column.output_categories is not None:
            assert out <= set(column.output_categories), column.name
        if gen is not None and gen.top_code is not None:
            assert max(out) <= gen.top_code


def test_the_anonymiser_applies_the_top_code_and_keeps_values_below_it() -> None:
    raw = [0.0, 4999.99, 5000, 5000.01, 1e12]
    table: dict[str, list[Any]] = {"city": ["Berlin", "Nice", None], "balance": list(raw)}
    Anonymizer(TOY)(table)
    assert table == {"city": ["Germany", "France", None], "balance": [0.0, 4999.99, 5000, 5000, 5000]}
    assert np.array_equal(anonymize_values(TOY.column("balance"), raw, None), np.array(table["balance"], dtype=float))
