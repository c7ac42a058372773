"""Scoring the exported model with ONNX Runtime (no torch): the evaluate stage, the parity check and the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

INPUT, OUTPUT = "features", "probability"


def session(path: Path) -> Any:
    """An ONNX Runtime session on one thread: the same bytes in give the same scores out.

    One thread is also what the server wants: it answers one request at a time on its event
    loop, and a request's rows are too few for threads to pay for their hand-over.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(onnx: Any, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Positive-class probabilities of an open session, one per row."""
    out: npt.NDArray[np.float32] = onnx.run([OUTPUT], {INPUT: x})[0]
    return out.reshape(-1)


def onnx_scores(path: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Positive-class probabilities, one per row, from the model file at `path`."""
    return run(session(path), x)
