"""The FastAPI app: /predict, /feedback, /health, /ready, /version, /metrics.

Handlers are `async def` and do their work on the event loop: validation (pydantic-core, from
the bytes), encoding and ONNX Runtime take tens of microseconds for one record, less than a
hand-over to a thread pool would. Bodies are read and answered as bytes, so FastAPI adds its
routing and nothing else; the OpenAPI document is built from the same generated types.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.routing import Route

import gitml
from gitml.config import load_params, section
from gitml.errors import GitmlError
from gitml.paths import Paths
from gitml.serve.config import ServeConfig
from gitml.serve.metrics import MetricsMiddleware, ServerMetrics
from gitml.serve.model import Lineage, ServedModel
from gitml.serve.predlog import FEEDBACK, PREDICTIONS, Clock, PredictionLog
from gitml.serve.requests import (
    Anonymizer,
    RequestError,
    Validator,
    columns,
    feedback_type,
    parse,
    record_type,
    request_columns,
)

JSON = "application/json"
REF = "#/components/schemas/{model}"
ENDPOINTS = ("/predict", "/feedback", "/health", "/ready", "/version", "/metrics")
WARM_UP_ROUNDS = 20


class LiveAccuracy:
    """Decisions of recent predictions, scored against feedback as it arrives.

    A window of up to 100,000 requests stays in memory, so its entries are bytes (one per
    decision), which the garbage collector does not track: a dict of lists would make every full
    collection walk them all, and the server's tail latency with it.
    """

    def __init__(self, window: int, positive: str) -> None:
        self.window = window
        self.positive = positive
        self.recent: dict[str, bytes] = {}
        self.labels: dict[tuple[str, int], bool] = {}  # (request, index) -> was the decision right
        self.correct = 0

    def remember(self, request_id: str, decisions: list[bool]) -> None:
        if self.window == 0:
            return
        self.recent[request_id] = bytes(decisions)
        if len(self.recent) > self.window:
            oldest = next(iter(self.recent))  # dicts keep insertion order
            for index in range(len(self.recent.pop(oldest))):
                self.correct -= self.labels.pop((oldest, index), False)

    def score(self, request_id: str, index: int, label: str) -> bool:
        """Count a label; False when the prediction is not in memory (the offline join still has it)."""
        decisions = self.recent.get(request_id)
        if decisions is None:
            return False
        if index >= len(decisions):
            raise RequestError(  # the request exists, the prediction does not: 404, as for any missing resource
                404,
                [
                    {
                        "loc": ["body", "index"],
                        "msg": f"request {request_id} made {len(decisions)} predictions; "
                        f"index {index} is not one of them (0 to {len(decisions) - 1})",
                        "type": "index_out_of_range",
                    }
                ],
                ["index"],
            )
        correct = bool(decisions[index]) == (label == self.positive)
        self.correct += correct - self.labels.get((request_id, index), False)  # a correction replaces a label
        self.labels[(request_id, index)] = correct
        return True

    @property
    def labelled(self) -> int:
        return len(self.labels)

    @property
    def accuracy(self) -> float | None:
        return self.correct / len(self.labels) if self.labels else None


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required}


def _response_schemas(classes: tuple[str, str]) -> dict[str, dict[str, Any]]:
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
        "BatchResponse": _object({**common, "predictions": {"type": "array", "items": _ref("Prediction")}}),
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
        "Error": _object({"detail": {"anyOf": [string, {"type": "array", "items": _ref("ErrorItem")}]}}),
        "Health": _object({"status": {"type": "string", "enum": ["ok"]}}),
        "Ready": _object({"ready": boolean, "reasons": {"type": "array", "items": string}}),
        "Version": _object({**dict.fromkeys(lineage, string), "threshold": {"type": "number"}}),
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(model=name)}


def _responses(ok: Any, *errors: int, ok_status: int = 200) -> dict[int | str, Any]:
    described = {
        400: "The body is not JSON.",
        404: "The request_id is known, but it made no prediction at that index.",
        413: "The body or the batch is larger than the server takes.",
        422: "A field is missing, unknown, of the wrong type, out of range, or not a known category.",
        503: "Not ready: starting, stopping, or the prediction log cannot keep up.",
    }
    out: dict[int | str, Any] = {ok_status: {"description": "OK", "content": {JSON: {"schema": ok}}}}
    for status in errors:
        out[status] = {"description": described[status], "content": {JSON: {"schema": _ref("Error")}}}
    return out


Handler = Callable[[Request], Awaitable[Response]]


def post(app: FastAPI, path: str, **documented: Any) -> Callable[[Handler], Handler]:
    """Route POST `path` to a handler that takes the Request and answers a Response.

    FastAPI documents the route (OpenAPI, /docs) from `documented`; a plain Starlette Route to the
    same handler goes in front of it and answers. FastAPI's own route spends some 40 us a request
    resolving dependencies these handlers do not have: a third of the time of a one-record
    prediction (benchmarks/serve.py measures both kinds of route answering a constant).
    """

    def register(handler: Handler) -> Handler:
        app.post(path, **documented)(handler)
        app.router.routes.insert(0, Route(path, handler, methods=["POST"], include_in_schema=False))
        return handler

    return register


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


def create_app(
    paths: Paths,
    env: Mapping[str, str] | None = None,
    host: str | None = None,
    port: int | None = None,
    log_dir: Path | None = None,
) -> FastAPI:
    """The server of the model in `paths.models`, configured by params.yaml's `serve` and the overrides."""
    params = load_params(paths.params)
    config = ServeConfig.from_config(section(params, "serve", paths.params), paths.params.name, paths.root)
    config = config.with_overrides(host, port, log_dir)
    model = ServedModel(paths.models, os.environ if env is None else env)
    lineage = model.lineage
    schema = model.schema
    log = PredictionLog(config.log)
    log.prepare()
    metrics = ServerMetrics(asdict(lineage))
    live = LiveAccuracy(config.live_window, schema.positive_class)
    records = Validator(record_type(schema), config.max_batch, tuple(c.name for c in request_columns(schema)))
    feedbacks = Validator(feedback_type(schema, config.max_batch), config.max_batch, ("request_id", "index", "label"))
    anonymize = Anonymizer(schema)
    version, classes = lineage.model_version, model.classes
    names = records.names
    state = {"ready": False}
    clock = Clock()

    metrics.gauge(
        "gitml_live_accuracy", "Accuracy on the labels fed back for predictions in memory.", lambda: live.accuracy
    )
    metrics.gauge("gitml_live_labelled", "Predictions in memory that received a label.", lambda: float(live.labelled))
    metrics.gauge("gitml_prediction_log_pending", "Log lines queued, not yet written.", lambda: float(log.pending))
    metrics.gauge("gitml_prediction_log_lines", "Log lines written.", lambda: float(log.lines_written), counter=True)
    metrics.gauge(
        "gitml_prediction_log_write_errors",
        "Failed log writes (retried).",
        lambda: float(log.write_errors),
        counter=True,
    )
    metrics.gauge("gitml_ready", "1 when /ready answers 200.", lambda: float(not _not_ready()))

    def _not_ready() -> list[str]:
        reasons = [] if state["ready"] else ["the model is not warmed up, or the server is stopping"]
        if not log.healthy:
            reasons.append(f"the prediction log is not keeping up ({log.pending} lines queued; {log.last_error})")
        return reasons

    example = model.example()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        log.start()
        for n in (1, 100) * WARM_UP_ROUNDS:  # ONNX Runtime's first runs allocate: do them before traffic
            model.predict(columns([example] * n, names), n)
        # Everything built so far (modules, the app, the model) lives as long as the process: out of
        # the garbage collector's sight, full collections stay short under load.
        gc.collect()
        gc.freeze()
        state["ready"] = True
        try:
            yield
        finally:  # uvicorn comes here on SIGTERM once in-flight requests are answered
            state["ready"] = False
            log.close()

    app = FastAPI(
        title="gitml model server",
        version=gitml.__version__,
        description=(
            f"Scores records of the `{schema.name}` dataset with model {version}: the probability of "
            f"{schema.label.name} = {schema.positive_class!r} and the decision at threshold {model.threshold:g}."
        ),
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, endpoints=ENDPOINTS)

    def rejected(endpoint: str, error: RequestError) -> Response:
        for reason in set(error.reasons):
            metrics.validation_failures.labels(endpoint, reason).inc()
        return _json({"detail": error.detail}, error.status)

    def unavailable() -> Response:
        return _json({"detail": "; ".join(_not_ready())}, 503)

    record_body, record_defs = records.schema(REF)
    record_defs.setdefault("Record", {})["examples"] = [example]

    @post(
        app,
        "/predict",
        summary="Score one record, or a batch (a JSON array) of records",
        responses=_responses({"oneOf": [_ref("PredictionResponse"), _ref("BatchResponse")]}, 400, 413, 422, 503),
        openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": record_body}}}},
    )
    async def predict(request: Request) -> Response:
        if not state["ready"] or not log.healthy:
            return unavailable()
        try:
            items, batch = parse(records, await _body(request, config.max_body_bytes), "a record")
        except RequestError as error:
            return rejected("/predict", error)
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

    feedback_body, feedback_defs = feedbacks.schema(REF)

    @post(
        app,
        "/feedback",
        summary="The true label of an earlier prediction (or a JSON array of them)",
        status_code=202,
        responses=_responses(_ref("FeedbackResponse"), 400, 404, 413, 422, 503, ok_status=202),
        openapi_extra={"requestBody": {"required": True, "content": {JSON: {"schema": feedback_body}}}},
    )
    async def feedback(request: Request) -> Response:
        if not log.healthy:
            return unavailable()
        try:
            items, _ = parse(feedbacks, await _body(request, config.max_body_bytes), "a feedback object")
            matched = [live.score(item["request_id"], item.get("index", 0), item["label"]) for item in items]
        except RequestError as error:
            return rejected("/feedback", error)
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

    @app.get("/health", summary="Liveness: the process answers", responses=_responses(_ref("Health")))
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get(
        "/ready",
        summary="Readiness: the model is loaded and warmed up, and the prediction log keeps up",
        responses={
            **_responses(_ref("Ready")),
            503: {"description": "Not ready", "content": {JSON: {"schema": _ref("Ready")}}},
        },
    )
    async def ready() -> Response:
        reasons = _not_ready()
        return _json({"ready": not reasons, "reasons": reasons}, 503 if reasons else 200)

    version_body = {
        **asdict(lineage),
        "threshold": model.threshold,
        "dataset": schema.name,
        "positive_class": schema.positive_class,
        "gitml": gitml.__version__,
    }

    @app.get(
        "/version",
        summary="The model version, the commit and the training data's hash",
        responses=_responses(_ref("Version")),
    )
    async def version_info() -> Response:
        return _json(version_body)

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        responses={200: {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    components = {**record_defs, **feedback_defs, **_response_schemas(classes)}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            document.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.config, app.state.model, app.state.log, app.state.metrics, app.state.live = (
        config,
        model,
        log,
        metrics,
        live,
    )
    return app


def serve(paths: Paths, host: str | None, port: int | None, log_dir: Path | None) -> None:
    """Run the app under uvicorn (uvloop and httptools when installed) until SIGTERM or Ctrl-C."""
    import uvicorn

    app = create_app(paths, host=host, port=port, log_dir=log_dir)
    model: ServedModel = app.state.model
    config: ServeConfig = app.state.config
    print(
        f"gitml serve: model {model.lineage.model_version} (commit {model.lineage.git_sha[:12]}, threshold "
        f"{model.threshold:g}) on http://{config.host}:{config.port}; prediction log in {config.log.directory}",
        flush=True,
    )
    try:
        # One worker: replicas scale it (Kubernetes' HorizontalPodAutoscaler), and /metrics is per process.
        uvicorn.run(
            app,
            host=config.host,
            port=config.port,
            loop="auto",
            http="auto",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=20,
            log_level="info",
        )
    except SystemExit as exc:  # uvicorn exits 1 when the port is taken; its log says why
        raise GitmlError(f"the server stopped: could not listen on {config.host}:{config.port}.") from exc
