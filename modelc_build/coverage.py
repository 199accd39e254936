"""Quantization coverage: how much of an INT8 artifact really runs in INT8.

An "int8" file can hold no quantized layer at all (a quantizer that does not enter the branches of
an `If`, or was told to skip every operator type): its accuracy then equals the float model's and
every gate passes. Coverage counts the weighted layers (convolutions, matrix products) and those
that run on 8-bit integers, inside control-flow subgraphs too, and their share of the
multiply-accumulates where shapes are known, so the report says it and a build with none fails.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

WEIGHTED_ONNX = ("Conv", "ConvTranspose", "Gemm", "MatMul")
INTEGER_ONNX = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm")
WEIGHTED_OPENVINO = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData", "MatMul")
# recurrent layers: (index of W, index of R) among their inputs; their MACs are steps x directions x
# gates*hidden x (input + hidden) per sample, which for an LSTM model is nearly all of them
RECURRENT_ONNX = {"LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2), "DynamicQuantizeLSTM": (1, 2)}
RECURRENT_OPENVINO = {"LSTMSequence": (4, 5), "GRUSequence": (3, 4), "RNNSequence": (3, 4)}


@dataclass(frozen=True)
class Coverage:
    layers: int  # weighted layers in the artifact
    quantized: int  # of them, running on 8-bit integers
    in_subgraphs: int  # weighted layers inside If/Loop/Scan bodies
    quantized_in_subgraphs: int
    mac_share: float | None  # percent of the multiply-accumulates in quantized layers (None: shapes unknown)
    float_layers: list[str] = field(default_factory=list)  # a few of those left in float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def words(self) -> str:
        share = f", {self.mac_share:.1f} % of the multiply-accumulates" if self.mac_share is not None else ""
        inside = f"; {self.in_subgraphs} inside If/Loop bodies, {self.quantized_in_subgraphs} of them quantized" \
            if self.in_subgraphs else ""
        return f"{self.quantized} of {self.layers} weighted layers in INT8{share}{inside}"

    def why_none(self) -> str:
        """Why nothing was quantized, as far as the graph tells."""
        if self.layers == 0:
            return "the graph has no convolution, matrix product or recurrent layer to quantize"
        if self.in_subgraphs == self.layers:
            return (f"all {self.layers} weighted layers sit inside If/Loop bodies, which the quantizer does not enter: "
                    "export the model with the branch it takes fixed (for a torch source, pass the condition as a "
                    "Python value, model.arguments, so that tracing keeps one branch) so that its layers reach the "
                    "main graph")
        return "the quantizer left every weighted layer in float (quantization.ignore / model_type exclude them?)"


def _macs(per_output: list[int], output_dims: list[int]) -> int:
    """A layer's multiply-accumulates per sample: the weight dimensions each output value sums over,
    times the output values (the output's dimensions after the batch)."""
    return math.prod(per_output) * math.prod(output_dims)


def _subgraphs(node: Any) -> Iterator[Any]:
    import onnx

    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        elif attribute.type == onnx.AttributeProto.GRAPHS:
            yield from attribute.graphs


def onnx_coverage(path: Path, sample_shapes: dict[str, tuple[int, ...]] | None = None) -> Coverage:
    """Q/DQ (a DequantizeLinear feeds the layer's weight) or QOperator (integer ops) layouts, the
    main graph and every subgraph. `sample_shapes` (a calibration sample's input shapes) fixes the
    graph's dynamic axes so that MACs are known for a model with a dynamic width or length.
    Products of two activations (attention's QK^T and AV) count as layers with their MACs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for graph_input in model.graph.input:
        shape = (sample_shapes or {}).get(graph_input.name)
        dims = graph_input.type.tensor_type.shape.dim
        if shape is not None and len(shape) == len(dims):
            for dim, size in zip(dims, shape):
                dim.Clear()
                dim.dim_value = int(size)
    try:
        shaped = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shapes are a nicety here
        shaped = model
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
              for v in list(shaped.graph.value_info) + list(shaped.graph.output) + list(shaped.graph.input)}
    counts = {"layers": 0, "quantized": 0, "sub": 0, "sub_q": 0}
    macs = {"all": 0, "int8": 0, "unknown": False}
    floats: list[str] = []

    def layer(label: str, quantized: bool, inside: bool, layer_macs: int | None) -> None:
        """One weighted layer counted: in INT8 or float (a few float ones named), and its MACs
        (None: its shapes are unknown)."""
        counts["layers"] += 1
        counts["quantized"] += quantized
        counts["sub"] += inside
        counts["sub_q"] += inside and quantized
        if not quantized and len(floats) < 8:
            floats.append(label)
        if layer_macs is None:
            macs["unknown"] = True
            return
        macs["all"] += layer_macs
        macs["int8"] += layer_macs if quantized else 0

    def visit(graph: Any, inside: bool) -> None:
        initializers = {i.name: list(i.dims) for i in graph.initializer}
        producers = {out: node for node in graph.node for out in node.output}
        for node in graph.node:
            for sub in _subgraphs(node):
                visit(sub, True)
            if node.op_type in RECURRENT_ONNX:
                recurrent(node, initializers, producers, inside)
                continue
            integer = node.op_type in INTEGER_ONNX
            if node.op_type not in WEIGHTED_ONNX and not integer:
                continue
            weight_index = {"QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3}.get(node.op_type, 1)
            weight = node.input[weight_index] if len(node.input) > weight_index else ""
            producer = producers.get(weight)
            quantized = integer or (producer is not None and producer.op_type == "DequantizeLinear")
            source = producer.input[0] if producer is not None and producer.op_type == "DequantizeLinear" else weight
            if node.op_type in ("MatMul", "QLinearMatMul", "MatMulInteger") and source not in initializers:
                product(node, quantized, inside)  # two activations (attention): no weight
                continue
            weight_shape = initializers.get(weight) or initializers.get(producer.input[0] if producer is not None else "")
            out_shape = shapes.get(node.output[0], [])
            layer(node.name or node.op_type, quantized, inside,
                  _macs(_summed_dims(node, weight_shape), out_shape[1:]) if weight_shape and out_shape and all(out_shape[1:])
                  else None)

    def product(node: Any, quantized: bool, inside: bool) -> None:
        """A MatMul of two activations: in INT8 where both sides come through DequantizeLinear
        (or it is an integer op); its MACs from the output and the inner dimension."""
        left, out_shape = shapes.get(node.input[0], []), shapes.get(node.output[0], [])
        known = bool(left and out_shape and all(out_shape[1:]) and left[-1])
        layer(f"{node.name or node.op_type} (activation product)", quantized, inside,
              _macs([left[-1]], out_shape[1:]) if known else None)

    def recurrent(node: Any, initializers: dict[str, list[int]], producers: dict[str, Any], inside: bool) -> None:
        """An LSTM/GRU/RNN: quantized where its weights come through a DequantizeLinear (or it is
        onnxruntime's integer LSTM); its MACs from W, R and the steps of its output."""
        w_index, r_index = RECURRENT_ONNX[node.op_type]
        weight = node.input[w_index] if len(node.input) > w_index else ""
        producer = producers.get(weight)
        quantized = node.op_type.startswith("DynamicQuantize") or (producer is not None and producer.op_type == "DequantizeLinear")
        w = initializers.get(weight) or initializers.get(producer.input[0] if producer is not None else "")
        recurrence = node.input[r_index] if len(node.input) > r_index else ""
        r = initializers.get(recurrence) or initializers.get((producers.get(recurrence) or node).input[0])
        steps = (shapes.get(node.output[0]) or [0])[0]  # Y: [steps, directions, batch, hidden]
        layer(f"{node.name or node.op_type} ({node.op_type})", quantized, inside,
              steps * _recurrent_macs(w, r) if w and r and steps else None)

    visit(model.graph, False)
    share = 100.0 * macs["int8"] / macs["all"] if macs["all"] and not macs["unknown"] else None
    return Coverage(counts["layers"], counts["quantized"], counts["sub"], counts["sub_q"], share, floats)


def _summed_dims(node: Any, weight: list[int]) -> list[int]:
    """The weight dimensions one output value sums over: a convolution's [in/groups, kh, kw]; a
    MatMul's [in, out] weight its first; a Gemm's by its transB ([out, in] when set)."""
    if node.op_type in ("Conv", "QLinearConv", "ConvInteger"):
        return weight[1:]
    transposed = any(attribute.name == "transB" and attribute.i for attribute in node.attribute)
    return weight[1:2] if node.op_type in ("Gemm", "QGemm") and transposed else weight[:1]


def _recurrent_macs(w: list[int], r: list[int]) -> int:
    """One step of a recurrent layer, per sample: W [directions, gates*hidden, input] and R
    [directions, gates*hidden, hidden] each multiply their vector once per step."""
    return w[0] * w[1] * w[2] + r[0] * r[1] * r[2]


# Ops OpenVINO's low-precision transformations run in the precision of their input (data in input
# 0), and Concat, which stays integer when every input is: a C2f block's Split and Concat carry
# INT8 from the FakeQuantize before them to the convolutions after them.
_PRECISION_PRESERVING = {"Convert", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Split", "VariadicSplit",
                         "StridedSlice", "MaxPool"}


def _fed_by_fake_quantize(node: Any, depth: int = 0) -> bool:
    kind = node.get_type_name()
    if kind == "FakeQuantize":
        return True
    if depth > 32 or not node.get_input_size():
        return False
    if kind == "Concat":
        return all(_fed_by_fake_quantize(value.get_node(), depth + 1) for value in node.input_values())
    if kind in _PRECISION_PRESERVING:
        return _fed_by_fake_quantize(node.input_value(0).get_node(), depth + 1)
    return False


def _runtime_int8(model: Any) -> set[str] | None:
    """The IR layers the CPU plugin runs on 8-bit integers, by the names its runtime model records
    for each of its layers (None where the IR does not compile here). It is the plugin's own
    answer: an embedding whose weights NNCF compressed to int8 feeds the convolution after it i8
    data with no FakeQuantize in between (a byte classifier's INT8 IR read "no INT8 layer")."""
    import openvino as ov

    try:
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    except Exception:  # noqa: BLE001 - the IR's own analysis stands alone then
        return None
    found: set[str] = set()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info and info["runtimePrecision"].astype(str) in ("i8", "u8") and "originalLayersNames" in info:
            found.update(name for name in info["originalLayersNames"].astype(str).split(",") if name)
    return found


def _runs_int8(name: str, runtime: set[str]) -> bool:
    return name in runtime or any(original.startswith(name + "/") for original in runtime)


def openvino_coverage(xml: Path, sample_shapes: dict[str, tuple[int, ...]] | None = None) -> Coverage:
    """NNCF's INT8 IR: a layer runs on integers where the CPU plugin's runtime model says it does,
    or where a FakeQuantize feeds its activations, directly or through ops that keep their input's
    precision (both agree on the YOLOv8 and MobileNetV2 IRs tested). `sample_shapes` fixes the
    dynamic axes (a calibration sample's shapes) so that MACs are known."""
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    fixed = {port.get_any_name(): ov.PartialShape(list(sample_shapes[port.get_any_name()]))
             for port in model.inputs if sample_shapes and port.get_any_name() in sample_shapes
             and port.get_partial_shape().rank.get_length() == len(sample_shapes[port.get_any_name()])}
    if fixed:
        try:
            model.reshape(fixed)
        except Exception:  # noqa: BLE001 - a model that cannot be reshaped keeps its dynamic axes (MACs unknown)
            model = ov.Core().read_model(str(xml))
    runtime = _runtime_int8(model) or set()
    layers = quantized = 0
    macs_all = macs_int8 = 0
    unknown = False
    floats: list[str] = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in WEIGHTED_OPENVINO and kind not in RECURRENT_OPENVINO:
            continue
        layers += 1
        is_int8 = _fed_by_fake_quantize(op.input_value(0).get_node()) or _runs_int8(op.get_friendly_name(), runtime)
        quantized += is_int8
        if not is_int8 and len(floats) < 8:
            floats.append(op.get_friendly_name())
        if kind in RECURRENT_OPENVINO:
            w_index, r_index = RECURRENT_OPENVINO[kind]
            w, r, x = (op.input(i).get_partial_shape() for i in (w_index, r_index, 0))  # X: [batch, steps, input]
            if w.is_static and r.is_static and x.rank.is_static and x[1].is_static:
                layer = x[1].get_length() * _recurrent_macs([d.get_length() for d in w], [d.get_length() for d in r])
                macs_all += layer
                macs_int8 += layer if is_int8 else 0
            else:
                unknown = True
            continue
        weights, out = op.input(1).get_partial_shape(), op.output(0).get_partial_shape()
        if weights.is_static and out.rank.is_static and all(d.is_static for d in list(out)[1:]):
            dims = [d.get_length() for d in weights]
            transposed = bool(op.get_attributes().get("transpose_b")) if kind == "MatMul" else False
            per_output = dims[1:] if "Convolution" in kind else dims[-1:] if transposed else dims[-2:-1] or dims[:1]
            layer = _macs(per_output, [d.get_length() for d in list(out)[1:]])
            macs_all += layer
            macs_int8 += layer if is_int8 else 0
        else:
            unknown = True
    share = 100.0 * macs_int8 / macs_all if macs_all and not unknown else None
    return Coverage(layers, quantized, 0, 0, share, floats)
