"""The server's endpoints: one function each, registered with its method, path and OpenAPI description.

Each `@endpoint` function takes the server's state (gitml.serve.state) and returns the handler
that answers the endpoint's requests: it reads what the handler needs from the state once, so a
request looks nothing up that it need not. `add_routes` routes every endpoint in ENDPOINTS, in
order; docs/serving.md's endpoint table lists them (tests/serve/test_routes.py holds the two in step).

Handlers are `async def` and do their work on the event loop: validation (pydantic-core, from
the bytes), encoding and ONNX Runtime take tens of microseconds for one record, less than a
hand-over to a thread pool would. Bodies are read and answered as bytes, so FastAPI adds its
routing and nothing else. A handler has no docstring: FastAPI would put it in the OpenAPI document.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Route

import gitml
from gitml.serve.metrics import ServerMetrics
from gitml.serve.openapi import JSON, REF, ref, request_body, responses
from gitml.serve.predlog import FEEDBACK, PREDICTIONS, REJECTIONS
from gitml.serve.requests import RequestError, Validator, columns, parse
from gitml.serve.state import ServerState

Handler = Callable[..., Awaitable[Response]]  # takes the Request (a POST's) or nothing (a GET's)
MakeHandler = Callable[[ServerState], Handler]


@dataclass(frozen=True)
class Endpoint:
    """One endpoint: its method and path, the function that makes its handler, and its documentation."""

    method: Literal["GET", "POST"]
    path: str
    make: MakeHandler  # its name names the route (and the OpenAPI operationId)
    summary: str
    responses: dict[int | str, Any]
    status_code: int | None = None  # the success status, when not 200
    body: Callable[[ServerState], Validator] | None = None  # a POST's validator: its types document the body


ENDPOINTS: list[Endpoint] = []


def endpoint(
    method: Literal["GET", "POST"],
    path: str,
    *,
    summary: str,
    responses: dict[int | str, Any],
    status_code: int | None = None,
    body: Callable[[ServerState], Validator] | None = None,
) -> Callable[[MakeHandler], MakeHandler]:
    """Add the decorated handler maker to ENDPOINTS as `method path`."""

    def register(make: MakeHandler) -> MakeHandler:
        ENDPOINTS.append(Endpoint(method, path, make, summary, responses, status_code, body))
        return make

    return register


def paths() -> tuple[str, ...]:
    """The endpoints' paths (the metrics' endpoint labels)."""
    return tuple(e.path for e in ENDPOINTS)


def add_routes(app: FastAPI, state: ServerState) -> dict[str, Any]:
    """Route each endpoint to its handler for `state`; the component schemas that the bodies refer to.

    FastAPI documents every route (OpenAPI, /docs). A POST is answered by a plain Starlette Route
    to the same handler, in front of FastAPI's: FastAPI's own route spends some 40 us a request
    resolving dependencies these handlers do not have, a third of the time of a one-record
    prediction (benchmarks/serve.py measures both kinds of route answering a constant).
    """
    components: dict[str, Any] = {}
    for one in ENDPOINTS:
        handler, name = one.make(state), one.make.__name__
        extra = None
        if one.body is not None:
            schema, defs = one.body(state).schema(REF)
            components.update(defs)
            extra = request_body(schema)
        app.add_api_route(
            one.path,
            handler,
            methods=[one.method],
            name=name,
            summary=one.summary,
            status_code=one.status_code,
            responses=one.responses,
            openapi_extra=extra,
        )
        if one.method == "POST":
            app.router.routes.insert(0, Route(one.path, handler, methods=["POST"], name=name, include_in_schema=False))
    return components


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


async def _body(request: Request, limit: int) -> bytes:
    """The request body, or 413 once it is past `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise RequestError(413, f"the body is {declared} bytes; this server takes at most {limit}", ["body_size"])
        return await request.body()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the body is over {limit} bytes, the most this server takes", ["body_size"])
        chunks.append(chunk)
    return b"".join(chunks)


def _rejected(state: ServerState, path: str, error: RequestError) -> Response:
    """The answer to a request the server does not accept: counted by its reasons, and logged to the
    rejections stream by field and reason (never a value: see gitml.serve.predlog)."""
    metrics: ServerMetrics = state.metrics
    for reason in set(error.reasons):
        metrics.validation_failures.labels(path, reason).inc()
    line: dict[str, Any] = {
        "time": state.clock(),
        "endpoint": path,
        "status": error.status,
        "errors": [{"field": field, "reason": reason} for field, reason in error.errors],
    }
    if error.records is not None:
        line["records"] = error.records
    state.log.append(REJECTIONS, orjson.dumps(line))
    return _json({"detail": error.detail}, error.status)


def _unavailable(state: ServerState) -> Response:
    return _json({"detail": "; ".join(state.not_ready())}, 503)


@endpoint(
    "POST",
    "/predict",
    summary="Score one record, or a batch (a JSON array) of records",
    responses=responses({"oneOf": [ref("PredictionResponse"), ref("BatchResponse")]}, 400, 413, 422, 503),
    body=lambda state: state.records,
)
def predict(state: ServerState) -> Handler:
    """Score records: answer, log and count each prediction, and remember its decision for feedback."""
    records, anonymize, model = state.records, state.anonymize, state.model
    log, live, metrics, clock = state.log, state.live, state.metrics, state.clock
    names, version, classes = records.names, model.lineage.model_version, model.classes
    limit = state.config.max_body_bytes

    async def handler(request: Request) -> Response:
        if not state.ready or not log.healthy:
            return _unavailable(state)
        try:
            items, batch = parse(records, await _body(request, limit), "a record")
        except RequestError as error:
            return _rejected(state, "/predict", error)
        inputs = columns(items, names)
        anonymize(inputs)
        scores, decisions = model.predict(inputs, len(items))
        request_id = os.urandom(16).hex()  # 128 random bits, as uuid4 has, at a fifth of its cost
        score_list, decision_list = scores.tolist(), decisions.tolist()
        log.append(
            PREDICTIONS,
            orjson.dumps(
                {
                    "time": clock(),
                    "request_id": request_id,
                    "model_version": version,
                    "inputs": inputs,
                    "scores": score_list,
                    "decisions": decision_list,
                }
            ),
        )
        live.remember(request_id, decision_list)
        metrics.answered(scores, score_list, decision_list)
        answer: dict[str, Any] = {"request_id": request_id, "model_version": version}
        if batch:
            answer["predictions"] = [
                {"score": s, "decision": d, "class": classes[d]} for s, d in zip(score_list, decision_list, strict=True)
            ]
        else:
            answer.update(score=score_list[0], decision=decision_list[0], **{"class": classes[decision_list[0]]})
        return Response(orjson.dumps(answer), media_type=JSON, headers={"x-request-id": request_id})

    return handler


@endpoint(
    "POST",
    "/feedback",
    summary="The true label of an earlier prediction (or a JSON array of them)",
    status_code=202,
    responses=responses(ref("FeedbackResponse"), 400, 404, 413, 422, 503, ok_status=202),
    body=lambda state: state.feedbacks,
)
def feedback(state: ServerState) -> Handler:
    """Take true labels: score them for live accuracy, log them for the offline join, count them."""
    feedbacks, log, live, metrics, clock = state.feedbacks, state.log, state.live, state.metrics, state.clock
    limit = state.config.max_body_bytes

    async def handler(request: Request) -> Response:
        if not log.healthy:
            return _unavailable(state)
        try:
            items, _ = parse(feedbacks, await _body(request, limit), "a feedback object")
            matched = [live.score(item["request_id"], item.get("index", 0), item["label"]) for item in items]
        except RequestError as error:
            return _rejected(state, "/feedback", error)
        now = clock()
        for item in items:
            log.append(
                FEEDBACK,
                orjson.dumps(
                    {
                        "time": now,
                        "request_id": item["request_id"],
                        "index": item.get("index", 0),
                        "label": item["label"],
                    }
                ),
            )
        hits = sum(matched)
        if hits:
            metrics.feedback.labels("matched").inc(hits)
        if hits < len(items):
            metrics.feedback.labels("unmatched").inc(len(items) - hits)
        return _json({"accepted": len(items), "matched": hits}, 202)

    return handler


@endpoint("GET", "/health", summary="Liveness: the process answers", responses=responses(ref("Health")))
def health(state: ServerState) -> Handler:
    async def handler() -> Response:
        return _json({"status": "ok"})

    return handler


@endpoint(
    "GET",
    "/ready",
    summary="Readiness: the model is loaded and warmed up, and the prediction log keeps up",
    responses={
        **responses(ref("Ready")),
        503: {"description": "Not ready", "content": {JSON: {"schema": ref("Ready")}}},
    },
)
def ready(state: ServerState) -> Handler:
    async def handler() -> Response:
        reasons = state.not_ready()
        return _json({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)

    return handler


@endpoint(
    "GET",
    "/version",
    summary="The model version, the commit and the training data's hash",
    responses=responses(ref("Version")),
)
def version_info(state: ServerState) -> Handler:
    model = state.model
    body = {
        **asdict(model.lineage),
        "threshold": model.threshold,
        "dataset": model.schema.name,
        "positive_class": model.schema.positive_class,
        "gitml": gitml.__version__,
    }

    async def handler() -> Response:
        return _json(body)

    return handler


@endpoint(
    "GET",
    "/metrics",
    summary="Prometheus metrics",
    responses={200: {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def prometheus(state: ServerState) -> Handler:
    registry = state.metrics.registry

    async def handler() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return handler
