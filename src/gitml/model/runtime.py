"""Scoring the exported model with ONNX Runtime (no torch): the evaluate stage and the parity check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

INPUT, OUTPUT = "features", "probability"


def onnx_scores(path: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Positive-class probabilities, one per row (one thread: the same bytes in give the same scores out)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    out: npt.NDArray[np.float32] = session.run([OUTPUT], {INPUT: x})[0]
    return out.reshape(-1)
