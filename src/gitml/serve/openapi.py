"""The server's OpenAPI document: the answers' schemas, the error responses, and the document itself.

The handlers answer with orjson, not response models, so the answers' JSON Schemas are written out
here; the request bodies' schemas are generated from the validators' types (gitml.serve.requests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gitml.serve.model import Lineage

JSON = "application/json"
REF = "#/components/schemas/{model}"

ERRORS = {
    400: "The body is not JSON.",
    404: "The request_id is known, but it made no prediction at that index.",
    413: "The body or the batch is larger than the server takes.",
    422: "A field is missing, unknown, of the wrong type, out of range, or not a known category.",
    503: "Not ready: starting, stopping, or the prediction log cannot keep up.",
}


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema `name`."""
    return {"$ref": REF.format(model=name)}


def responses(ok: Any, *errors: int, ok_status: int = 200) -> dict[int | str, Any]:
    """An operation's responses: `ok` (a schema) at `ok_status`, and the errors in ERRORS it answers."""
    out: dict[int | str, Any] = {ok_status: {"description": "OK", "content": {JSON: {"schema": ok}}}}
    for status in errors:
        out[status] = {"description": ERRORS[status], "content": {JSON: {"schema": ref("Error")}}}
    return out


def request_body(schema: dict[str, Any]) -> dict[str, Any]:
    """An operation's `openapi_extra` for a required JSON body of `schema`."""
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required}


def response_schemas(classes: tuple[str, str]) -> dict[str, dict[str, Any]]:
    """The JSON Schemas of the answers (written out: the handlers answer with orjson, not models)."""
    string, integer, boolean = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
    prediction = {
        "score": {"type": "number", "minimum": 0, "maximum": 1, "description": "probability of the positive class"},
        "decision": {**boolean, "description": "score >= the model's threshold"},
        "class": {"type": "string", "enum": list(classes), "description": "the class decided on"},
    }
    common = {"request_id": {**string, "description": "quote it in POST /feedback"}, "model_version": string}
    lineage = (*(f.name for f in fields(Lineage)), "dataset", "positive_class", "gitml")
    return {
        "Prediction": _object(prediction),
        "PredictionResponse": _object({**common, **prediction}),
        "BatchResponse": _object({**common, "predictions": {"type": "array", "items": ref("Prediction")}}),
        "FeedbackResponse": _object({"accepted": integer, "matched": integer}),
        "ErrorItem": _object(
            {
                "loc": {"type": "array", "items": {"anyOf": [string, integer]}},
                "msg": string,
                "type": string,
                "input": {},
            },
            required=["loc", "msg", "type"],
        ),
        "Error": _object({"detail": {"anyOf": [string, {"type": "array", "items": ref("ErrorItem")}]}}),
        "Health": _object({"status": {"type": "string", "enum": ["ok"]}}),
        "Ready": _object({"ready": boolean, "reasons": {"type": "array", "items": string}}),
        "Version": _object({**dict.fromkeys(lineage, string), "threshold": {"type": "number"}}),
    }


def components(bodies: dict[str, Any], example: dict[str, Any], classes: tuple[str, str]) -> dict[str, Any]:
    """The document's component schemas: the request bodies' (a record with `example`), then the answers'."""
    bodies.setdefault("Record", {})["examples"] = [example]
    return {**bodies, **response_schemas(classes)}


def document(app: FastAPI, components: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """`app.openapi`: FastAPI's document of the app's routes, with `components` among its schemas, built once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            built = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            built.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = built
        return app.openapi_schema

    return openapi
