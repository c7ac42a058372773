"""export stage: the trained network -> models/model.onnx, checked against torch on the whole test split.

The ONNX graph takes the preprocessed matrix (`features`, float32, any number of rows) and gives
the positive-class probability (`probability`, one per row). The preprocessing spec's SHA-256 is
stored in the model's metadata (gitml.bundle.SPEC_KEY): loading the bundle refuses a spec that does not
belong to the model.
"""

from __future__ import annotations

import logging
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gitml.bundle import SPEC_KEY
from gitml.bundle.runtime import INPUT, OUTPUT, onnx_scores
from gitml.checked_config import ConfigReader
from gitml.config import dataset_schema, section
from gitml.data.features import PreprocessSpec, matrices
from gitml.data.split import load_split
from gitml.errors import GitmlError
from gitml.io import write_json
from gitml.model.network import Probability, build_network
from gitml.paths import Paths


def load_network(paths: Paths) -> tuple[torch.nn.Module, int]:
    """The trained network and its input width, from the train stage's Lightning checkpoint.

    The checkpoint holds the model config (its hyperparameters) and the weights under `network.`;
    they are read with torch alone, without importing Lightning, which would be most of the stage's
    time.
    """
    if not paths.checkpoint.is_file():
        raise GitmlError(f"{paths.checkpoint}: not found; run the train stage first (dvc repro train).")
    try:
        checkpoint = torch.load(paths.checkpoint, map_location="cpu", weights_only=True)
        hparams = checkpoint["hyper_parameters"]
        width = int(hparams["in_features"])
        network = build_network(
            hparams["model"], width, hparams.get("numeric_columns", ()), hparams.get("training_rows")
        )
        prefix = "network."
        weights = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        network.load_state_dict(weights)
    except KeyError as exc:
        raise GitmlError(
            f"{paths.checkpoint}: holds no {exc}; not a checkpoint the train stage writes. Re-run `dvc repro train`."
        ) from exc
    except (OSError, EOFError, RuntimeError, TypeError, ValueError, pickle.UnpicklingError) as exc:
        raise GitmlError(
            f"{paths.checkpoint}: not readable as a checkpoint the train stage writes ({type(exc).__name__}). "
            "Re-run `dvc repro train`."
        ) from exc
    return network.eval(), width


def export_onnx(model: torch.nn.Module, width: int, path: Path, opset: int, metadata: Mapping[str, str]) -> None:
    """Export with the torch.export-based exporter; the batch axis is dynamic."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter reports optional torchvision operators it skips; they are not used here.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(),
            (torch.zeros(2, width),),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    assert program is not None
    proto = program.model_proto
    # The exporter annotates every node with its Python stack trace (absolute paths, line
    # numbers): dropped, so that the same weights give the same file in any clone.
    for node in proto.graph.node:
        del node.metadata_props[:]
    for function in proto.functions:
        for node in function.node:
            del node.metadata_props[:]
    for key, value in sorted(metadata.items()):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))


def verify_parity(path: Path, model: torch.nn.Module, x: npt.NDArray[np.float32], tolerance: float) -> dict[str, Any]:
    """Compare ONNX Runtime with torch on every row; raise if any score differs by more than `tolerance`."""
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy().reshape(-1)
    actual = onnx_scores(path, x)
    if actual.shape != expected.shape:
        raise GitmlError(f"{path}: gives {actual.shape[0]} scores for {expected.shape[0]} rows; the export is broken.")
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    worst = int(np.nanargmax(diff)) if np.isfinite(diff).any() else 0
    max_diff = float(np.max(diff)) if np.isfinite(diff).all() else float("inf")
    return {
        "rows": len(x),
        "max_abs_diff": max_diff,
        "worst_row": worst,
        "tolerance": tolerance,
        "passed": bool(max_diff <= tolerance),
    }


def read_config(cfg: Mapping[str, Any], source: str) -> tuple[int, float]:
    """The export section, checked: (opset, parity_tolerance)."""
    reader = ConfigReader(source, "export", cfg, {"opset", "parity_tolerance"})
    opset = reader.integer("opset", minimum=7)
    tolerance = reader.bounded("parity_tolerance", 0)
    return opset, tolerance


def run(cfg: Mapping[str, Any], paths: Paths) -> dict[str, Any]:
    """Export the checkpoint to ONNX and check parity on the test split; returns the export report."""
    source = paths.params.name
    opset, tolerance = read_config(section(cfg, "export", paths.params), source)
    schema = dataset_schema(cfg, paths.params)
    spec = PreprocessSpec.load(paths.preprocess)
    network, width = load_network(paths)
    if width != spec.width:
        raise GitmlError(
            f"{paths.checkpoint} takes {width} inputs but {paths.preprocess} gives "
            f"{spec.width}; they come from different runs. Re-run `dvc repro train`."
        )
    model = Probability(network).eval()
    metadata = {
        "gitml.dataset": spec.dataset,
        SPEC_KEY: spec.sha256,
        "gitml.inputs": ",".join(spec.input_columns),
        "gitml.width": str(spec.width),
    }
    export_onnx(model, spec.width, paths.onnx, opset, metadata)
    x_test, _ = matrices(spec, schema, load_split(paths, "test"))
    report = {**verify_parity(paths.onnx, model, x_test, tolerance), "opset": opset, "bytes": paths.onnx.stat().st_size}
    write_json(paths.export_report, report)
    if not report["passed"]:
        raise GitmlError(
            f"ONNX parity check failed: ONNX Runtime and torch differ by {report['max_abs_diff']:.3g} on test row "
            f"{report['worst_row']} (tolerance {tolerance:g}; {paths.export_report}). The exported graph does not "
            "compute what the trained network does: check custom layers in conf/model/ export to ONNX, or the opset."
        )
    return report


def message(report: dict[str, Any], paths: Paths) -> str:
    return (
        f"export: {paths.onnx.relative_to(paths.root)} ({report['bytes']:,} bytes); parity on {report['rows']:,} "
        f"test rows: max |p_torch - p_onnx| = {report['max_abs_diff']:.2g} <= {report['tolerance']:g}"
    )
