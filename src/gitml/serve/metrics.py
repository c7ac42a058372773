"""Prometheus metrics of the server, and the ASGI middleware that times every request.

One registry per app (not the process-global one), so tests can run several apps side by side.
Per-prediction figures (the score distribution) are counted with NumPy in one step per request;
prometheus-client's `observe` per value would cost more than the model on a 100-record batch.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
SCORE_EDGES = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05, 0.10, ..., 1.0


class ScoreHistogram:
    """A histogram of scores added a whole request at a time."""

    def __init__(self, edges: Iterable[float]) -> None:
        self.edges = tuple(edges)
        self._edges = np.asarray(self.edges)
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)  # the last bucket is +Inf
        self.small = [0] * (len(self.edges) + 1)  # single records, counted in Python
        self.total = 0.0

    def add(self, scores: npt.NDArray[np.float32], values: list[float]) -> None:
        """Count `scores`; `values` are the same as Python floats (one record: no NumPy call)."""
        if len(values) == 1:
            self.small[bisect.bisect_left(self.edges, values[0])] += 1
            self.total += values[0]
            return
        self.counts += np.bincount(np.searchsorted(self._edges, scores, side="left"), minlength=self.counts.size)
        self.total += float(scores.sum(dtype=np.float64))

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative = np.cumsum(self.counts + np.array(self.small, dtype=np.int64))
        buckets = [(f"{edge:g}", float(c)) for edge, c in zip(self.edges, cumulative, strict=False)]
        buckets.append(("+Inf", float(cumulative[-1])))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


class ServerMetrics:
    """Every metric of /metrics."""

    def __init__(self, lineage: dict[str, str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        labels = ("endpoint", "method", "status")
        self.requests = Counter(
            "gitml_http_requests", "HTTP requests answered, by endpoint, method and status.", labels,
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "gitml_http_request_duration_seconds", "Time from request to the end of the response.", labels,
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "gitml_predict_batch_size", "Records per answered /predict request.", buckets=BATCH_BUCKETS,
            registry=self.registry,
        )  # fmt: skip
        self.predictions = Counter(
            "gitml_predictions", "Predictions answered, by decision.", ("decision",), registry=self.registry
        )
        self.validation_failures = Counter(
            "gitml_validation_failures",
            "Rejected requests by endpoint and reason: the field at fault, unknown_field, label_field, invalid_json, "
            "batch_size or body_size.",
            ("endpoint", "reason"),
            registry=self.registry,
        )
        self.feedback = Counter(
            "gitml_feedback",
            "Labels received; matched: the prediction is in this replica's memory and counts towards live accuracy.",
            ("outcome",),
            registry=self.registry,
        )
        Info("gitml_model", "The model served.", registry=self.registry).info(lineage)
        self.scores = ScoreHistogram(SCORE_EDGES)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._gauges: list[Callable[[], Metric]] = []
        self.registry.register(_Callbacks(self._gauges))
        self._gauges.append(
            lambda: self.scores.family("gitml_prediction_score", "Scores answered (the positive class's probability).")
        )
        self._decision_children = {True: self.predictions.labels("true"), False: self.predictions.labels("false")}

    def gauge(self, name: str, documentation: str, value: Callable[[], float | None], counter: bool = False) -> None:
        """A figure read when /metrics is scraped; None leaves it out (e.g. accuracy before any label)."""

        def family() -> Metric:
            current = value()
            kind = CounterMetricFamily if counter else GaugeMetricFamily
            metric = kind(name, documentation)
            if current is not None:
                metric.add_metric([], current)
            return metric

        self._gauges.append(family)

    def constants(self, name: str, documentation: str, label: str, values: dict[str, float]) -> None:
        """A gauge per value, labelled by its key: figures fixed for the life of the server."""
        family = GaugeMetricFamily(name, documentation, labels=(label,))
        for key, value in sorted(values.items()):
            family.add_metric([key], value)
        self._gauges.append(lambda: family)

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            label = str(status)
            children = self._children[key] = (
                self.requests.labels(endpoint, method, label),
                self.latency.labels(endpoint, method, label),
            )
        children[0].inc()
        children[1].observe(seconds)

    def answered(self, scores: npt.NDArray[np.float32], values: list[float], decisions: list[bool]) -> None:
        """One answered /predict: its batch size, its scores and its decisions."""
        n = len(values)
        self.batch_size.observe(n)
        self.scores.add(scores, values)
        positives = sum(decisions)
        if positives:
            self._decision_children[True].inc(positives)
        if positives < n:
            self._decision_children[False].inc(n - positives)


class _Callbacks(Collector):
    def __init__(self, families: list[Callable[[], Metric]]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family()


class MetricsMiddleware:
    """Counts and times every HTTP request by endpoint (known paths only: bounded labels) and status."""

    def __init__(self, app: Any, metrics: ServerMetrics, endpoints: Iterable[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.endpoints = frozenset(endpoints)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            path = scope["path"]
            endpoint = path if path in self.endpoints else "other"
            self.metrics.observe(endpoint, scope["method"], status, time.perf_counter() - start)
