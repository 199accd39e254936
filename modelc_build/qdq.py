"""Precision in the graph, made on the CPU with NVIDIA ModelOpt: INT8 as an explicit Q/DQ ONNX
graph (calibrated), FP16 as AutoCast's mixed-precision graph.

TensorRT 10 (strongly typed) and 11 take INT8 only this way: the precision lives in the graph as
QuantizeLinear/DequantizeLinear pairs, not in builder flags or calibrator classes. ModelOpt's ONNX
post-training quantization places the pairs where TensorRT fuses them (Conv, Gemm, MatMul, …),
quantizes weights symmetrically per output channel and activations per tensor with the recipe's
calibration method. The same graph runs on onnxruntime's CPU provider, which is how modelc checks
it before any GPU sees it.

Packaging: `nvidia-modelopt[onnx]` pulls `onnxruntime-gpu` (same module name as the CPU
`onnxruntime`), cupy and an older onnx. The `modelopt` extra installs `nvidia-modelopt` without
that extra, plus the pieces its ONNX quantizer imports, and keeps the CPU onnxruntime:
`calibration_eps=["cpu"]` needs nothing more.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from modelc_build.errors import BackendUnavailable, CompileError, InputError, ModelcError, first_line
from modelc_build.feeds import fixed_batch, model_feed, split
from modelc_build.recipe import Quantization, TensorSpec

INSTALL_HINT = "pip install 'modelc-build[modelopt]'"


def _modelopt_quantize() -> Callable[..., None]:
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise BackendUnavailable(
            f"Q/DQ INT8 (onnxruntime/tensorrt int8) needs NVIDIA ModelOpt's ONNX quantizer, which is not installed "
            f"({exc.msg.splitlines()[0]}): run {INSTALL_HINT}") from exc
    return quantize


class FeedReader:
    """onnxruntime's CalibrationDataReader protocol (plus ModelOpt's `get_first`) over modelc's
    batches: one batch in memory at a time, at most `limit` samples, each feed cut to the model's
    batch size where that is fixed (a `[1, 3, H, W]` model is fed one sample at a time)."""

    def __init__(self, feeds: Callable[[], Iterator[dict[str, Any]]], limit: int,
                 inputs: tuple[TensorSpec, ...] = ()) -> None:
        self._feeds = lambda: _fitted(feeds(), inputs)
        self._inputs = inputs
        self._limit = limit
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._given = 0
        self.samples = 0

    def get_next(self) -> dict[str, Any] | None:
        if self._iterator is None:
            self._iterator = self._feeds()
        if self._given >= self._limit:
            return None
        feed = next(self._iterator, None)
        if feed is None:
            return None
        room = self._limit - self._given
        feed = {name: array[:room] for name, array in feed.items()}
        count = len(next(iter(feed.values())))
        self._given += count
        self.samples = self._given
        return model_feed(self._inputs, feed)

    def get_first(self) -> dict[str, Any] | None:
        """ModelOpt peeks at one feed to try the session; it does not move the reader."""
        first = next(iter(self._feeds()), None)
        return None if first is None else model_feed(self._inputs, {name: array[:self._limit] for name, array in first.items()})

    def samples_per_feed(self) -> int:
        """How many samples the first feed holds (the model's fixed batch, or a data batch)."""
        first = next(iter(self._feeds()), None)
        return 0 if first is None else min(self._limit, len(next(iter(first.values()))))

    def rewind(self) -> None:
        self._iterator = None
        self._given = 0


def _fitted(feeds: Iterator[dict[str, Any]], inputs: tuple[TensorSpec, ...]) -> Iterator[dict[str, Any]]:
    """Sample-first feeds cut to the model's fixed batch (a short remainder is dropped)."""
    size = fixed_batch(inputs)
    for feed in feeds:
        for call, _ in split(feed, size, pad=False):
            yield call


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


def quantize_qdq(onnx_model: Path, inputs: tuple[TensorSpec, ...], feeds: Callable[[], Iterator[dict[str, Any]]],
                 options: Quantization, destination: Path, nodes_to_quantize: list[str] | None = None) -> dict[str, Any]:
    """Write the Q/DQ graph to `destination`; returns its notes (samples used, what stayed float)."""
    quantize = _modelopt_quantize()
    reader = FeedReader(feeds, options.subset_size, inputs)
    exclude = excluded_nodes(onnx_model, options)
    _quiet_modelopt()
    try:
        # histogram notes go to stdout, progress bars to stderr; failures raise. ModelOpt writes
        # intermediate graphs beside its input: the input is a private copy, never a cache entry.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                _private_copy(onnx_model) as private:
            quantize(str(private), quantize_mode="int8", calibration_data_reader=reader,
                     calibration_method=options.calibration_method, calibration_eps=["cpu"],
                     nodes_to_quantize=nodes_to_quantize, nodes_to_exclude=exclude or None, op_types_to_exclude=list(options.ignore_types) or None,
                     high_precision_dtype="fp32", dq_only=True, output_path=str(destination), log_level="ERROR")
    except ModelcError:  # e.g. bad calibration data: its own message and exit code
        raise
    except Exception as exc:
        raise CompileError(f"ModelOpt Q/DQ quantization of {onnx_model.name} failed: "
                           f"{first_line(exc)}") from exc
    if not destination.is_file():
        raise CompileError(f"ModelOpt wrote no Q/DQ graph for {onnx_model.name}")
    return {"method": "NVIDIA ModelOpt ONNX post-training quantization (Q/DQ, int8 weights per channel)",
            "calibration_method": options.calibration_method, "calibration_samples": reader.samples,
            "kept_in_float": {"nodes": exclude, "op_types": list(options.ignore_types)}}


def autocast_fp16(onnx_model: Path, destination: Path) -> dict[str, Any]:
    """ModelOpt AutoCast: the graph with its nodes in fp16 where that is safe (it keeps in fp32 the
    nodes whose values overflow fp16 or that reduce over long axes), inputs and outputs kept fp32.
    TensorRT 10/11 is strongly typed: this graph, not a builder flag, is what makes an FP16 engine."""
    import onnx

    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as exc:
        raise BackendUnavailable(f"TensorRT fp16 needs NVIDIA ModelOpt's AutoCast, which is not installed "
                                 f"({exc.msg.splitlines()[0]}): run {INSTALL_HINT}") from exc
    _quiet_modelopt()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
                _private_copy(onnx_model) as private:
            converted = convert_to_mixed_precision(str(private), low_precision_type="fp16", keep_io_types=True,
                                                   providers=["cpu"])
    except Exception as exc:
        raise CompileError(f"ModelOpt AutoCast (fp16) of {onnx_model.name} failed: {first_line(exc)}") from exc
    onnx.save(converted, str(destination))
    float16 = onnx.TensorProto.FLOAT16
    kinds = [node for node in converted.graph.node if node.op_type != "Cast"]
    typed = {v.name: v.type.tensor_type.elem_type for v in list(converted.graph.value_info) + list(converted.graph.output)}
    in_fp16 = sum(1 for node in kinds if any(typed.get(o) == float16 for o in node.output))
    return {"method": "NVIDIA ModelOpt AutoCast (fp16, inputs and outputs kept fp32)", "nodes": len(kinds),
            "nodes_in_fp16": in_fp16}


def _quiet_modelopt() -> None:
    """ModelOpt's ONNX loggers print INFO and WARNING lines to the stdout it saw at import (a
    redirect does not reach them): errors only, which then become modelc's own messages."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("modelopt"):
            logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def _private_copy(onnx_model: Path) -> Iterator[Path]:
    """The graph copied into a scratch folder of its own, for libraries that write beside their input."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="modelc-modelopt-") as scratch:
        private = Path(scratch) / onnx_model.name
        shutil.copyfile(onnx_model, private)
        yield private
