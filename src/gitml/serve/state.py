"""What one server holds while it runs: its model, settings, validators, prediction log, metrics,
live accuracy and readiness. Nothing here speaks HTTP: the handlers (gitml.serve.routes) do."""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from gitml.config import load_params, section
from gitml.paths import Paths
from gitml.serve.config import ServeConfig
from gitml.serve.metrics import ServerMetrics
from gitml.serve.model import ServedModel
from gitml.serve.predlog import Clock, PredictionLog
from gitml.serve.requests import (
    Anonymizer,
    RequestError,
    Validator,
    columns,
    feedback_type,
    record_type,
    request_columns,
)

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


class ServerState:
    """One server's model, settings, validators, prediction log, metrics, live accuracy and readiness.

    Built once per app; the handlers read it, and only `start` and `stop` (the app's lifespan)
    change whether it is ready.
    """

    def __init__(self, config: ServeConfig, model: ServedModel) -> None:
        schema = model.schema
        self.config = config
        self.model = model
        self.log = PredictionLog(config.log)
        self.log.prepare()
        self.metrics = ServerMetrics(asdict(model.lineage))
        self.live = LiveAccuracy(config.live_window, schema.positive_class)
        self.records = Validator(
            record_type(schema), config.max_batch, tuple(c.name for c in request_columns(schema)), schema.label.name
        )
        self.feedbacks = Validator(
            feedback_type(schema, config.max_batch), config.max_batch, ("request_id", "index", "label")
        )
        self.anonymize = Anonymizer(schema)
        self.clock = Clock()
        self.example = model.example()  # a valid record: the warm-up's, and the API docs' example
        self.ready = False  # True from the end of the warm-up to the start of shutdown
        self._gauges()

    @classmethod
    def load(
        cls,
        paths: Paths,
        env: Mapping[str, str] | None = None,
        host: str | None = None,
        port: int | None = None,
        log_dir: Path | None = None,
    ) -> ServerState:
        """The state of a server of the model in `paths.models`, configured by params.yaml's `serve`
        and the command line's overrides."""
        config = ServeConfig.from_config(
            section(load_params(paths.params), "serve", paths.params), paths.params.name, paths.root
        )
        config = config.with_overrides(host, port, log_dir)
        return cls(config, ServedModel(paths.models, os.environ if env is None else env))

    def _gauges(self) -> None:
        """The figures /metrics reads from this state when it is scraped."""
        live, log, metrics = self.live, self.log, self.metrics
        metrics.gauge(
            "gitml_live_accuracy", "Accuracy on the labels fed back for predictions in memory.", lambda: live.accuracy
        )
        metrics.gauge(
            "gitml_live_labelled", "Predictions in memory that received a label.", lambda: float(live.labelled)
        )
        metrics.gauge("gitml_prediction_log_pending", "Log lines queued, not yet written.", lambda: float(log.pending))
        metrics.gauge(
            "gitml_prediction_log_lines", "Log lines written.", lambda: float(log.lines_written), counter=True
        )
        metrics.gauge(
            "gitml_prediction_log_write_errors",
            "Failed log writes (retried).",
            lambda: float(log.write_errors),
            counter=True,
        )
        metrics.gauge("gitml_ready", "1 when /ready answers 200.", lambda: float(not self.not_ready()))
        # What the evaluate stage measured on the test split (the manifest's metrics): what the
        # alerting rules (deploy/monitoring) hold live accuracy and the decision rate to.
        metrics.constants(
            "gitml_model_test_metric",
            "The served model's test-split metrics, as the evaluate stage recorded them in the bundle's manifest.",
            "metric",
            {k: float(v) for k, v in self.model.bundle.manifest.metrics.items()},
        )

    def not_ready(self) -> list[str]:
        """Why the server should not take predictions now; empty when it is ready."""
        reasons = [] if self.ready else ["the model is not warmed up, or the server is stopping"]
        if not self.log.healthy:
            reasons.append(
                f"the prediction log is not keeping up ({self.log.pending} lines queued; {self.log.last_error})"
            )
        return reasons

    def start(self) -> None:
        """Before traffic: start the log's writer, warm the model up, and become ready."""
        self.log.start()
        names, example = self.records.names, self.example
        for n in (1, 100) * WARM_UP_ROUNDS:  # ONNX Runtime's first runs allocate: do them before traffic
            self.model.predict(columns([example] * n, names), n)
        # Everything built so far (modules, the app, the model) lives as long as the process: out of
        # the garbage collector's sight, full collections stay short under load.
        gc.collect()
        gc.freeze()
        self.ready = True

    def stop(self) -> None:
        """At shutdown (uvicorn comes here on SIGTERM once in-flight requests are answered): stop
        taking predictions, then write out and fsync the log."""
        self.ready = False
        self.log.close()
