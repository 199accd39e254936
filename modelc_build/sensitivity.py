"""Per-layer INT8 sensitivity: the drop when only one layer is quantized.

For every layer the Q/DQ quantizer would quantize (Conv, Gemm, MatMul, … where TensorRT fuses),
a graph is made with that layer alone in INT8 (ModelOpt, on the CPU) and scored on the evaluation
set with onnxruntime: the task metric (top-1 or mAP@0.5) when the recipe has one, and the lowest
cosine similarity of the outputs to the float graph's. The worst layers are the ones to keep in
float (`quantization.ignore`). Costs one quantization and one evaluation pass per layer, so it is
opt-in (`quantization.sensitivity_layers`).
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from modelc_build.recipe_types import Quantization, Task, TensorSpec

if TYPE_CHECKING:
    from modelc_build.accuracy import TaskMetric


@dataclass(frozen=True)
class LayerSensitivity:
    layer: str
    op_type: str
    metric_drop: float | None  # task-metric points lost against the float graph
    min_cosine: float  # lowest cosine similarity of any output to the float graph's


def quantized_layers(qdq_model: Path) -> list[tuple[str, str]]:
    """(name, op type) of the nodes fed by a DequantizeLinear: the layers that run in INT8."""
    import onnx

    graph = onnx.load(str(qdq_model)).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [(node.name, node.op_type) for node in graph.node
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and dequantized & set(node.input)]


def _score(model: Path, reference: Path, batches: Callable[[], Iterator[Any]], inputs: tuple[TensorSpec, ...],
           outputs: tuple[str, ...], task: Task) -> tuple[TaskMetric | None, float]:
    """`model` against the float graph `reference`: the task metric of both (None for a generic
    task) and the lowest per-output cosine."""
    from modelc_build.accuracy import evaluate
    from modelc_build.backends.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(model, inputs, outputs) as runner, OnnxRuntimeRunner(reference, inputs, outputs) as float_runner:
        result = evaluate(float_runner, {"int8": runner}, batches(), inputs, outputs, task)["int8"]
    return result.task, min(m.cosine for m in result.outputs)


def measure_sensitivity(onnx_model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
                        calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
                        evaluation: Callable[[], Iterator[Any]], task: Task, options: Quantization) -> dict[str, Any]:
    """Every quantizable layer alone in INT8, worst first; plus the whole graph in INT8."""
    from modelc_build.qdq import quantize_qdq

    only_named = Quantization(**{**asdict(options), "ignore_names": (), "ignore_patterns": (), "ignore_types": ()})
    with tempfile.TemporaryDirectory(prefix="modelc-sensitivity-") as scratch:
        folder = Path(scratch)
        whole = folder / "all.onnx"
        quantize_qdq(onnx_model, inputs, calibration, options, whole)
        all_metric, all_cosine = _score(whole, onnx_model, evaluation, inputs, outputs, task)
        layers = []
        for index, (name, op_type) in enumerate(quantized_layers(whole)):
            single = folder / f"layer-{index}.onnx"
            quantize_qdq(onnx_model, inputs, calibration, only_named, single, nodes_to_quantize=[re.escape(name)])
            metric, cosine = _score(single, onnx_model, evaluation, inputs, outputs, task)
            layers.append(LayerSensitivity(name, op_type, None if metric is None else metric.drop, cosine))
            single.unlink()
    layers.sort(key=lambda s: (-(s.metric_drop or 0.0), s.min_cosine))
    return {"method": "each layer alone in INT8 (ModelOpt Q/DQ), scored with onnxruntime on data.evaluation",
            "metric": None if all_metric is None else all_metric.name,
            "float_metric": None if all_metric is None else all_metric.reference,
            "all_layers": {"metric_drop": None if all_metric is None else all_metric.drop, "min_cosine": all_cosine},
            "layers": [asdict(s) for s in layers]}
