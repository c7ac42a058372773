"""Request and response models of the server, generated from the one dataset schema.

A record has one field per model input (and per protected attribute, which the log keeps for
fairness monitoring), named as in the dataset config, typed from it:
  integer / float   a JSON number (an integer column takes whole numbers only) within min / max
  categorical       one of the declared categories; a column the pipeline generalises also takes
                    its group names (or, for numeric bands, the band labels), as stored data has them
  nullable          may be null or left out
Unknown fields are errors, so a misspelt name is caught instead of read as missing. A record
shaped as a row of the raw data is accepted: columns ingest drops (pii: drop) and identifiers
may be there and are ignored, never used or logged; the label is refused with where it goes.

Validation runs in pydantic-core straight from the request bytes; its errors become the 422's
field-level messages. `Anonymizer` then applies the dataset's generalisation (what ingest does),
so the model and the prediction log see records as the training data has them.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, GetPydanticSchema, TypeAdapter, ValidationError, WithJsonSchema, with_config
from pydantic_core import core_schema
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from gitml.checked_config import suggest
from gitml.data.schema import Column, DatasetSchema

Record = dict[str, Any]


def request_columns(schema: DatasetSchema) -> tuple[Column, ...]:
    """The fields of a record: the model's inputs, then protected attributes that are not inputs."""
    inputs = schema.feature_columns
    return (*inputs, *(c for c in schema.protected_columns if c not in inputs))


def _describe(column: Column) -> str:
    parts = [column.description] if column.description else []
    if column.generalization is not None:
        parts.append("generalised before the model sees it, as in training")
    if column.nullable:
        parts.append("may be null or left out")
    return "; ".join(parts) or f"{column.dtype} column of the dataset"


def _field_type(column: Column) -> Any:
    gen = column.generalization
    if column.dtype == "categorical":
        assert column.categories is not None
        allowed = list(column.categories)
        if gen is not None and gen.group_names is not None:
            allowed += [g for g in gen.group_names if g not in allowed]
        kind: Any = Literal[tuple(allowed)]
    elif column.dtype == "integer":
        kind = whole_number(column.minimum, column.maximum)
        if gen is not None and gen.bin_labels is not None:
            kind = kind | Literal[gen.bin_labels]
    elif column.dtype == "float":
        kind = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=column.minimum, le=column.maximum)]
        if gen is not None and gen.bin_labels is not None:
            kind = kind | Literal[gen.bin_labels]
    else:
        kind = Annotated[str, Field(max_length=1024)]
    kind = Annotated[kind, Field(description=_describe(column))]
    return NotRequired[kind | None] if column.nullable else kind


# The largest whole number a float holds with its neighbours: 2**53 itself is also what 2**53 + 1
# parses to, so a bound of 2**53 would take 2**53 + 1 (which the OpenAPI schema refuses).
EXACT_INTEGER = 2**53 - 1


def _plain(number: float) -> float | int:
    return int(number) if float(number).is_integer() else number


def whole_number(minimum: float | None = None, maximum: float | None = None) -> Any:
    """An integer as JSON Schema means it: 23 and 23.0 are, 23.5, "23" and true are not.

    A strict float (no strings, no booleans, finite, in range) then an exact conversion to int,
    both in pydantic-core: no Python call per value on the hot path. (Pydantic's own strict int
    refuses 23.0; its lax int takes "23"; its float `multiple_of` has a tolerance that lets
    1e-10 through.) Without declared bounds the range is +-(2**53 - 1), past which floats stop
    holding every whole number.
    """
    minimum = -EXACT_INTEGER if minimum is None else minimum
    maximum = EXACT_INTEGER if maximum is None else maximum
    steps = core_schema.chain_schema(
        [core_schema.float_schema(strict=True, allow_inf_nan=False, ge=minimum, le=maximum), core_schema.int_schema()]
    )
    documented: dict[str, Any] = {"type": "integer", "minimum": _plain(minimum), "maximum": _plain(maximum)}
    return Annotated[int, GetPydanticSchema(lambda _type, _handler: steps), WithJsonSchema(documented)]


def ignored_columns(schema: DatasetSchema) -> tuple[Column, ...]:
    """Columns of the raw data that a record may hold and the server ignores: those ingest drops
    (pii: drop) and identifiers, which are never model inputs. A record shaped as a raw row (the
    label aside) is then accepted as it is; their values are neither used nor logged."""
    fields = {c.name for c in request_columns(schema)}
    return tuple(c for c in schema.columns if c.name not in fields and c.role != "label")


IGNORED = Annotated[Any, Field(description="a column of the raw data the model does not use: ignored, never logged")]


def record_type(schema: DatasetSchema) -> Any:
    """The TypedDict of one record (TypedDict, not a model class: validating into dicts is the fast path)."""
    fields = {column.name: _field_type(column) for column in request_columns(schema)}
    fields.update({column.name: NotRequired[IGNORED] for column in ignored_columns(schema)})
    record = TypedDict("Record", fields)  # type: ignore[misc]  # a functional TypedDict built at run time
    return with_config(ConfigDict(extra="forbid", title="Record"))(record)


def feedback_type(schema: DatasetSchema, max_batch: int) -> Any:
    """Feedback with the label restricted to the dataset's classes."""
    label = schema.label
    assert label.categories is not None
    fields = {
        "request_id": Annotated[
            str, Field(pattern=r"^[0-9a-f]{32}$", description="the request_id /predict answered with")
        ],
        "index": NotRequired[
            Annotated[whole_number(0, max_batch - 1), Field(description="the record's place in its batch (default 0)")]
        ],
        "label": Annotated[Literal[tuple(label.categories)], Field(description=f"the true {label.name}")],
    }
    feedback = TypedDict("Feedback", fields)  # type: ignore[misc]  # a functional TypedDict built at run time
    return with_config(ConfigDict(extra="forbid", title="Feedback"))(feedback)


def columns(items: list[Record], names: Sequence[str]) -> dict[str, list[Any]]:
    """Validated records as {field: values}; a nullable field left out is None."""
    return {name: [item.get(name) for item in items] for name in names}


@dataclass(frozen=True)
class Validator:
    """One item or a batch of them, validated from JSON bytes."""

    item: Any
    max_items: int
    names: tuple[str, ...]
    label: str | None = None  # the dataset's label: a record holding it is told where it goes

    @property
    def batch(self) -> Any:
        return Annotated[list[self.item], Field(min_length=1, max_length=self.max_items)]  # type: ignore[name-defined]

    @cached_property
    def one(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.item)

    @cached_property
    def many(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.batch)

    def schema(self, ref_template: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The OpenAPI schema of `item | [item, ...]` and the component schemas it refers to."""
        schema = TypeAdapter(self.item | self.batch).json_schema(ref_template=ref_template)
        return {k: v for k, v in schema.items() if k != "$defs"}, schema.get("$defs", {})


class RequestError(Exception):
    """A request the server rejects: its status code and FastAPI-style `detail`.

    `reasons` (a field name or a kind per error) label the validation-failure counter; `errors`,
    (field, reason) pairs, go to the prediction log's rejections stream. Neither holds a value of
    the request: a field is a name of the schema or a kind, a reason an error type.
    """

    def __init__(
        self,
        status: int,
        detail: Any,
        reasons: Sequence[str],
        errors: Sequence[tuple[str, str]] | None = None,
        records: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.reasons = tuple(reasons)  # for the validation-failure counter: field names or a kind
        self._errors = errors
        self.records = records  # how many records the body held, where known without parsing it again

    @property
    def errors(self) -> list[tuple[str, str]]:
        """Each distinct (field, reason), in order. Unless given: a reason with the `type` of its
        detail item where the detail is a list of them, else the reason twice (invalid_json, body_size)."""
        pairs = self._errors
        if pairs is None:
            detail = self.detail
            if isinstance(detail, list) and len(detail) == len(self.reasons):
                pairs = [(r, str(d.get("type", r))) for r, d in zip(self.reasons, detail, strict=True)]
            else:
                pairs = [(r, r) for r in self.reasons]
        return list(dict.fromkeys(pairs))


def parse(validator: Validator, body: bytes, what: str) -> tuple[list[Record], bool]:
    """The items of a body and whether it was a batch; RequestError (400, 413 or 422) if not acceptable.

    Left-out nullable fields are absent from the items; `columns` reads them as None.
    """
    start = body.lstrip()[:1]
    adapter = validator.many if start == b"[" else validator.one
    try:
        value = adapter.validate_json(body)
    except ValidationError as exc:
        raise _rejection(exc, validator, what, start) from None
    return (value, True) if start == b"[" else ([value], False)


def _rejection(exc: ValidationError, validator: Validator, what: str, start: bytes) -> RequestError:
    errors = exc.errors(include_url=False, include_context=True)
    if any(e["type"] == "json_invalid" for e in errors):
        where = errors[0]["ctx"].get("error", "") if errors[0].get("ctx") else ""
        return RequestError(400, f"the body is not valid JSON ({where}); send {what} as JSON", ["invalid_json"])
    if start not in (b"[", b"{"):
        return RequestError(
            422,
            [
                {
                    "loc": ["body"],
                    "msg": f"expected {what} (a JSON object) or a batch of them (a JSON array)",
                    "type": "model_type",
                }
            ],
            ["body"],
        )
    if start == b"[" and any(e["type"] == "too_long" and e["loc"] == () for e in errors):
        return RequestError(
            413,
            f"the batch has more than {validator.max_items} items, the most this server takes in one request; "
            "split it (serve.max_batch)",
            ["batch_size"],
            records=_length(errors),
        )
    detail, reasons, pairs = [], [], []
    for error in errors:
        loc = list(error["loc"])
        field = next((part for part in loc if isinstance(part, str)), None)
        message = error["msg"]
        if error["type"] == "extra_forbidden" and field is not None and field == validator.label:
            message = (
                f"'{field}' is the label the model predicts, not an input: leave it out of the record, and "
                "send it to /feedback with the request_id once it is known"
            )
            reasons.append("label_field")
        elif error["type"] == "extra_forbidden" and field is not None:
            message = (
                f"unknown field '{field}'{suggest(field, validator.names)}; the fields are {', '.join(validator.names)}"
            )
            reasons.append("unknown_field")
        else:
            reasons.append(field if field in validator.names else "body")
        pairs.append((reasons[-1], error["type"]))
        item: dict[str, Any] = {"loc": ["body", *loc], "msg": message, "type": error["type"]}
        if _echoable(error.get("input")) and error["type"] != "missing":
            item["input"] = error["input"]
        detail.append(item)
    return RequestError(422, detail, reasons, pairs, 1 if start == b"{" else _length(errors))


def _length(errors: list[Any]) -> int | None:
    """The length of a batch that was too long or too short, which pydantic measured; None otherwise."""
    for error in errors:
        if error["loc"] == () and error["type"] in ("too_long", "too_short"):
            length = (error.get("ctx") or {}).get("actual_length")
            return length if isinstance(length, int) else None
    return None


def _echoable(value: Any) -> bool:
    """Short plain JSON values are echoed in an error; objects, long strings, NaN and huge numbers are not."""
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, int):
        return -(2**63) <= value < 2**63  # what every JSON library writes back without complaint
    return isinstance(value, str) and len(value) <= 200


class Anonymizer:
    """The dataset's generalisations applied to request columns (what ingest does to the data)."""

    def __init__(self, schema: DatasetSchema) -> None:
        self.steps: list[tuple[str, Callable[[Any], Any]]] = []
        for column in request_columns(schema):
            gen = column.generalization
            if gen is None:
                continue
            if gen.groups is not None:
                # A group name is taken as already generalised, unless it is also a raw category:
                # then it maps as ingest maps it.
                groups: dict[Any, Any] = {**{g: g for g in gen.group_names or ()}, **gen.groups, None: None}
                self.steps.append((column.name, groups.__getitem__))
            elif gen.top_code is not None:
                self.steps.append((column.name, _top_coder(gen.top_code)))
            elif gen.bins is not None and gen.bin_labels is not None:
                self.steps.append((column.name, _bander(gen.bins, gen.bin_labels)))

    def __call__(self, columns: dict[str, list[Any]]) -> None:
        for name, step in self.steps:
            columns[name] = [step(v) for v in columns[name]]


def _top_coder(top: float) -> Callable[[Any], Any]:
    def cap(value: Any) -> Any:
        return value if value is None else min(value, top)

    return cap


def _bander(edges: Sequence[float], labels: Sequence[str]) -> Callable[[Any], Any]:
    known = set(labels)

    def band(value: Any) -> Any:
        if value is None or value in known:
            return value
        return labels[bisect.bisect_right(edges, value)]

    return band
