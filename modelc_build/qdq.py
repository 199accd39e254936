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
from pathlib import Path
from typing import Any, Callable, Iterator

from modelc_build.errors import BackendUnavailable, CompileError, ModelcError, first_line
from modelc_build.feeds import FeedReader
from modelc_build.onnx_graph import WEIGHTED_LAYERS, excluded_nodes, output_head  # noqa: F401 - one place for callers
from modelc_build.recipe_types import Quantization, TensorSpec

INSTALL_HINT = "pip install 'modelc-build[modelopt]'"


def _modelopt_quantize() -> Callable[..., None]:
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise BackendUnavailable(
            f"Q/DQ INT8 (onnxruntime/tensorrt int8) needs NVIDIA ModelOpt's ONNX quantizer, which is not installed "
            f"({exc.msg.splitlines()[0]}): run {INSTALL_HINT}") from exc
    return quantize


MODE_SETTINGS: dict[str, dict[str, Any]] = {
    "int8": {"quantize_mode": "int8", "dq_only": True},
    "fp8": {"quantize_mode": "fp8", "dq_only": True},  # TensorRT runs FP8 on sm89 and later
    # weight-only INT4 on the MatMuls (blocks of 128 along the input axis), round-to-nearest with
    # double quantization: no activation is quantized (ModelOpt's default AWQ calibration gave a
    # graph TensorRT for RTX could not parse and onnxruntime could not run: a block scale per Gemm)
    "int4-wo": {"quantize_mode": "int4", "calibration_method": "rtn_dq", "op_types_to_quantize": ["MatMul"]},
}
METHOD_WORDS = {"int8": "Q/DQ, int8 weights per channel", "fp8": "FP8 E4M3 Q/DQ", "int4-wo": "weight-only INT4 MatMul, RTN"}


def quantize_qdq(onnx_model: Path, inputs: tuple[TensorSpec, ...], feeds: Callable[[], Iterator[dict[str, Any]]],
                 options: Quantization, destination: Path, nodes_to_quantize: list[str] | None = None,
                 mode: str = "int8") -> dict[str, Any]:
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
            settings = {"calibration_method": options.calibration_method, **MODE_SETTINGS[mode]}
            quantize(str(private), calibration_data_reader=reader, calibration_eps=["cpu"],
                     nodes_to_quantize=nodes_to_quantize, nodes_to_exclude=exclude or None, op_types_to_exclude=list(options.ignore_types) or None,
                     high_precision_dtype="fp32", output_path=str(destination), log_level="ERROR", **settings)
    except ModelcError:  # e.g. bad calibration data: its own message and exit code
        raise
    except Exception as exc:
        raise CompileError(f"ModelOpt Q/DQ quantization of {onnx_model.name} failed: "
                           f"{first_line(exc)}") from exc
    if not destination.is_file():
        raise CompileError(f"ModelOpt wrote no Q/DQ graph for {onnx_model.name}")
    return {"method": f"NVIDIA ModelOpt ONNX post-training quantization ({METHOD_WORDS[mode]})",
            "calibration_method": MODE_SETTINGS[mode].get("calibration_method", options.calibration_method), "calibration_samples": reader.samples,
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
    float16 = onnx.TensorProto.FLOAT16
    kinds = [node for node in converted.graph.node if node.op_type != "Cast"]
    typed = {v.name: v.type.tensor_type.elem_type for v in list(converted.graph.value_info) + list(converted.graph.output)}
    in_fp16 = sum(1 for node in kinds if any(typed.get(o) == float16 for o in node.output))
    # AutoCast's shape annotations of intermediate values hold sizes of the sample it ran (a
    # transformer's attention reshapes came out fixed); onnxruntime's buffer reuse trusts them and
    # failed at any other batch ("Shape mismatch attempting to re-use buffer"). Dropped: every
    # consumer infers shapes itself.
    del converted.graph.value_info[:]
    onnx.save(converted, str(destination))
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
