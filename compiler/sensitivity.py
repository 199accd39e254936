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
from typing import Any, Callable, Iterator

import numpy as np

from compiler.recipe import Quantization, Task, TensorSpec


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
           outputs: tuple[str, ...], task: Task) -> tuple[float | None, float]:
    """Task metric (or None) of `model`, and its lowest per-output cosine to `reference`."""
    from compiler.accuracy import _OutputAccumulator, _run, _TaskScorer
    from compiler.backends.onnxruntime import OnnxRuntimeRunner

    use_task = task.type in ("classification", "detection")
    scorer = _TaskScorer(task, task.output or outputs[0])
    cosines = {name: _OutputAccumulator() for name in outputs}
    with OnnxRuntimeRunner(model, inputs, outputs) as runner, OnnxRuntimeRunner(reference, inputs, outputs) as float_runner:
        for batch in batches():
            got = _run(runner, batch, inputs)
            expected = _run(float_runner, batch, inputs)
            for name in outputs:
                cosines[name].update(expected[name], got[name])
            if use_task:
                scorer.update(got, expected, batch)
    worst = min(cosines[name].result(name).cosine for name in outputs)
    return (scorer.value() if use_task else None), worst


def measure_sensitivity(onnx_model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
                        calibration: Callable[[], Iterator[dict[str, np.ndarray]]],
                        evaluation: Callable[[], Iterator[Any]], task: Task, options: Quantization) -> dict[str, Any]:
    """Every quantizable layer alone in INT8, worst first; plus the whole graph in INT8."""
    from compiler.qdq import quantize_qdq

    with tempfile.TemporaryDirectory(prefix="modelc-sensitivity-") as scratch:
        folder = Path(scratch)
        whole = folder / "all.onnx"
        quantize_qdq(onnx_model, inputs, calibration, options, whole)
        float_metric, _ = _score(onnx_model, onnx_model, evaluation, inputs, outputs, task)
        all_metric, all_cosine = _score(whole, onnx_model, evaluation, inputs, outputs, task)
        layers = []
        for index, (name, op_type) in enumerate(quantized_layers(whole)):
            single = folder / f"layer-{index}.onnx"
            only = Quantization(**{**asdict(options), "ignore_names": (), "ignore_patterns": (), "ignore_types": ()})
            quantize_qdq(onnx_model, inputs, calibration, only, single, nodes_to_quantize=[re.escape(name)])
            metric, cosine = _score(single, onnx_model, evaluation, inputs, outputs, task)
            drop = None if metric is None or float_metric is None else float_metric - metric
            layers.append(LayerSensitivity(name, op_type, drop, cosine))
            single.unlink()
    layers.sort(key=lambda s: (-(s.metric_drop or 0.0), s.min_cosine))
    return {"method": "each layer alone in INT8 (ModelOpt Q/DQ), scored with onnxruntime on data.evaluation",
            "metric": None if float_metric is None else ("top1_accuracy" if task.type == "classification" else "map50"),
            "float_metric": float_metric,
            "all_layers": {"metric_drop": None if float_metric is None or all_metric is None else float_metric - all_metric,
                           "min_cosine": all_cosine},
            "layers": [asdict(s) for s in layers]}
