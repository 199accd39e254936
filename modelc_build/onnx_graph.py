"""What modelc reads off an ONNX graph to decide how to quantize it: its weighted layers, the tail
after them (a detector's decode head), and the nodes a recipe names to keep in float. Shared by
every quantizer (onnxruntime, OpenVINO, ModelOpt): backends read it, none owns it."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from modelc_build.errors import InputError
from modelc_build.recipe_types import Quantization

WEIGHTED_LAYERS = ("Conv", "Gemm", "MatMul")  # the layers INT8 is for


def output_head(onnx_model: Path) -> list[str]:
    """Nodes from which no Conv/Gemm/MatMul can be reached: the graph's tail after its last layers
    with weights (a detector's box decode, concatenations, activations of the outputs)."""
    import onnx

    graph = onnx.load(str(onnx_model), load_external_data=False).graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_a_layer: dict[str, bool] = {}

    def reaches_layer(node: Any) -> bool:
        if node.name in feeds_a_layer:
            return feeds_a_layer[node.name]
        feeds_a_layer[node.name] = False  # graphs are acyclic; this only guards the recursion
        found = any(consumer.op_type in WEIGHTED_LAYERS or reaches_layer(consumer)
                    for output in node.output for consumer in consumers.get(output, []))
        feeds_a_layer[node.name] = found
        return found

    return [node.name for node in graph.node
            if node.op_type not in WEIGHTED_LAYERS and node.name and not reaches_layer(node)]


def excluded_nodes(onnx_model: Path, options: Quantization) -> list[str]:
    """ONNX node names kept in higher precision: `ignore.names` must exist, `ignore.patterns` match."""
    import onnx

    names = [node.name for node in onnx.load(str(onnx_model), load_external_data=False).graph.node]
    unknown = [n for n in options.ignore_names if n not in names]
    if unknown:
        raise InputError(f"quantization.ignore.names: {', '.join(unknown)} not in the ONNX graph; "
                         f"its nodes include {', '.join(names[:8])}…")
    chosen = list(options.ignore_names)
    for pattern in options.ignore_patterns:
        chosen += [n for n in names if re.fullmatch(pattern, n) and n not in chosen]
    return chosen


