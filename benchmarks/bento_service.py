"""The BentoML baseline of benchmarks/serve.py: the same ONNX model and preprocessing, served by BentoML.

A BentoML 1.4 service with BentoML's defaults (one worker, a sync API run in its thread pool),
loading what `gitml serve` loads: the model bundle in models/ (`gitml.bundle.load`), scored through
`gitml.bundle.runtime` (one ONNX Runtime thread) behind `PreprocessSpec.transform` and the bundle's
threshold. It answers in gitml's batch shape.

It does less per request than gitml: no per-field validation (BentoML checks only that `records`
is a list of objects), no anonymisation (the benchmark sends rows of the processed test split,
already generalised), no prediction log and no model metrics of its own. So the ratio
gitml / BentoML is, if anything, in BentoML's favour.

    bentoml serve bento_service:GitmlBaseline --working-dir benchmarks --port 3000
    curl -d '{"records": [{...}]}' -H 'Content-Type: application/json' localhost:3000/predict

The repository root is the parent of this file's folder, or GITML_BENCH_ROOT.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import bentoml
import numpy as np

from gitml.bundle import load, runtime

ROOT = Path(os.environ.get("GITML_BENCH_ROOT") or Path(__file__).resolve().parent.parent)


@bentoml.service
class GitmlBaseline:
    """Scores records of the dataset with models/model.onnx, as `gitml serve` does."""

    def __init__(self) -> None:
        bundle = load(ROOT / "models")  # verified as `gitml serve` verifies it
        self.spec = bundle.spec
        self.session = bundle.session
        self.cutoff = np.float32(bundle.threshold.value)
        self.names = self.spec.input_columns
        negative, positive = bundle.classes
        self.classes = {False: negative, True: positive}

    @bentoml.api  # type: ignore[untyped-decorator]  # BentoML types it with a bare Callable
    def predict(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        columns = {name: [record.get(name) for record in records] for name in self.names}
        scores = runtime.run(self.session, self.spec.transform(columns))
        decisions = scores >= self.cutoff
        return {
            "request_id": uuid.uuid4().hex,
            "model_version": "bentoml-baseline",
            "predictions": [
                {"score": score, "decision": decision, "class": self.classes[decision]}
                for score, decision in zip(scores.tolist(), decisions.tolist(), strict=True)
            ],
        }
