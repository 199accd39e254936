"""ONNX for onnxruntime: the simplified graph itself, run on the CPU execution provider; int8 is
onnxruntime's own static quantization, laid out for its CPU kernels.

INT8 choices, measured on a real ImageNet MobileNetV2 (see benchmarks/int8.py): QDQ format, weights
per output channel, MinMax calibration with a moving average (plain MinMax: cosine 0.966 → 0.984),
and **uint8 weights with uint8 activations**. The usual uint8×int8 kernel multiplies with
VPMADDUBSW on CPUs without VNNI (AVX2, AVX-512 without VNNI), whose int16 sums saturate: cosine
0.91 there against 0.98 on VNNI CPUs. onnxruntime's MLAS has no switch like oneDNN's to emulate the
older kernels on a VNNI machine, so modelc ships by default the one layout that is exact on every
x86 CPU; `quantization.onnxruntime_weights: int8` trades some accuracy for the faster uint8×int8
kernel with 7-bit weights (reduce_range), which cannot saturate either.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from modelc_build.backends import Backend, Capabilities, CompileRequest, Runner, require, write_quantization_notes
from modelc_build.errors import CompileError, ModelcError, first_line
from modelc_build.recipe_types import Quantization, TensorSpec

if TYPE_CHECKING:  # NumPy loads when an artifact runs: the backend's table is read without it
    import numpy as np


class OnnxRuntimeRunner(Runner):
    def __init__(self, model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...], threads: int | None = None,
                 variant: str | None = None) -> None:
        super().__init__(inputs, outputs)
        self.model = model
        self.threads = threads
        self.variant = variant  # which layout of an int8 artifact this is, for people
        self._session: Any = None
        self._profile_folder: str | None = None

    def activate(self) -> None:
        ort = require("onnxruntime", "onnxruntime", "onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:  # a step beside others: its share of the cores
            options.intra_op_num_threads = self.threads
        if self.record_kernels:
            self._profile_folder = tempfile.mkdtemp(prefix="modelc-ort-profile-")
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(self._profile_folder) / "profile")
        self._session = ort.InferenceSession(str(self.model), options, providers=["CPUExecutionProvider"])

    def deactivate(self) -> None:
        self._session = None
        if self._profile_folder:
            shutil.rmtree(self._profile_folder, ignore_errors=True)
            self._profile_folder = None

    def effective_settings(self) -> dict[str, str]:
        return {"variant": self.variant} if self.variant else {}

    def kernels_used(self) -> list[str]:
        """The operator kernels the calls ran, by time (e.g. `QLinearConv`: an integer convolution),
        from onnxruntime's profiler."""
        import json

        if self._session is None or not self.record_kernels:
            return []
        spent: dict[str, float] = {}
        for event in json.loads(Path(self._session.end_profiling()).read_text()):
            args = event.get("args") or {}
            if event.get("cat") == "Node" and "op_name" in args:
                spent[args["op_name"]] = spent.get(args["op_name"], 0.0) + float(event.get("dur", 0))
        return [name for name, _ in sorted(spent.items(), key=lambda item: -item[1])]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None
        values = self._session.run(list(self.outputs), feed)
        return dict(zip(self.outputs, values))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    capabilities = Capabilities(
        precisions=frozenset({"fp32", "int8"}), deploy_extra="onnxruntime", runtime_modules=("numpy", "onnxruntime"),
        tools=("onnxruntime",), in_process_float=True, emulated_int8=True, cpu_variants=("vnni",),
        preload=("onnxruntime",), mixed_precision=True)

    def compile(self, request: CompileRequest) -> list[Path]:
        require("onnxruntime", self.name, "onnxruntime")
        destination = request.out_dir / "model.onnx"
        if request.target.precision == "int8":
            portable = "u8s8-7bit" if request.quantization.onnxruntime_weights == "int8" else "u8u8"
            layouts = {portable: destination}
            if "vnni" in request.cpu_variants:
                layouts["u8s8"] = request.out_dir / VNNI_FILE
            notes = quantize_for_cpu(request, layouts)
            notes["variants"] = {"model.onnx": {"format": portable, "for": "every x86 CPU"}}
            if "vnni" in request.cpu_variants:
                notes["variants"][VNNI_FILE] = {"format": "u8s8", "for": "CPUs with VNNI (AVX-512 VNNI, AVX-VNNI, AMX)",
                                                "requires_any": list(VNNI_FLAGS)}
            return [*layouts.values(), write_quantization_notes(request.out_dir, notes)]
        shutil.copyfile(request.onnx_model, destination)
        return [destination]

    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
               config: dict[str, str] | None = None, threads: int | None = None) -> Runner:
        path, variant = variant_file(files, config)
        return OnnxRuntimeRunner(path, inputs, outputs, threads, variant=variant)

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": require("onnxruntime", self.name, "onnxruntime").__version__}

    def float_runner(self, model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> Runner:
        return OnnxRuntimeRunner(model, inputs, outputs)

    def warm_up(self) -> None:
        require("onnxruntime", self.name, "onnxruntime")


MOVING_AVERAGE_MIN_SAMPLES = 8
VNNI_FILE = "model-vnni.onnx"


def variant_file(files: list[Path], config: dict[str, str] | None = None) -> tuple[Path, str | None]:
    """The file of an onnxruntime artifact this machine runs, and which variant it is (None for an
    artifact with one file): an int8 artifact with a VNNI variant runs it where this CPU has VNNI
    (its kernels are right there and only there), model.onnx elsewhere; `config` may pin one:
    variant=vnni|portable."""
    from modelc_build.host import cpu_info

    vnni = next((f for f in files if f.name == VNNI_FILE), None)
    if vnni is None:
        return next(f for f in files if f.name != VNNI_FILE and f.suffix == ".onnx"), None
    chosen = (config or {}).get("variant") or ("vnni" if cpu_info()["vnni"] else "portable")
    if chosen == "vnni":
        return vnni, f"{VNNI_FILE} (u8s8, for VNNI)"
    return next(f for f in files if f.name == "model.onnx"), "model.onnx (portable, every x86 CPU)"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # /proc/cpuinfo flags of CPUs whose u8s8 kernel is exact


@dataclass(frozen=True)
class Int8Format:
    """How onnxruntime's QDQ int8 graph is laid out, which decides the CPU kernel that runs it:
    unsigned activations x signed weights is VNNI's VPDPBUSD (fast there); on CPUs without VNNI the
    same layout runs through VPMADDUBSW, whose int16 sums saturate unless the weights are 7-bit."""

    name: str
    activations: str  # QUInt8 | QInt8
    weights: str
    reduce_range: bool  # 7-bit weights

    def words(self) -> str:
        weights = {"QUInt8": "uint8", "QInt8": "int8"}[self.weights] + (" (7-bit)" if self.reduce_range else "")
        return f"{weights} weights per channel, {'uint8' if self.activations == 'QUInt8' else 'int8'} activations"


INT8_FORMATS = {f.name: f for f in (
    Int8Format("u8u8", "QUInt8", "QUInt8", False),  # exact on every x86 CPU; slow on VNNI (no u8u8 VNNI kernel)
    Int8Format("u8s8", "QUInt8", "QInt8", False),  # VNNI's kernel: fast there, saturates without VNNI
    Int8Format("u8s8-7bit", "QUInt8", "QInt8", True),  # cannot saturate; loses a bit of weight precision
    Int8Format("s8s8", "QInt8", "QInt8", False),
)}


def quantize_for_cpu(request: CompileRequest, destinations: dict[str, Path]) -> dict[str, Any]:
    """onnxruntime `quantize_static` on the recipe's calibration data, once, written in each of
    `destinations`' formats (format name -> file): the calibration ranges are computed once and
    kept in a cache file the other formats reuse. Where the request asks for it (`fallback`) and
    full INT8 misses the cosine it must hold on the validation data, the layers that cost most are
    kept in float until it holds (modelc_build/backends/mixed_precision.py)."""
    with Int8Writer(request) as writer:
        notes = writer.write(destinations)
        if request.fallback is not None:
            from modelc_build.backends.mixed_precision import find_mixed_precision

            notes["fallback"] = find_mixed_precision(writer, destinations, request.fallback)
            notes["kept_in_float"]["nodes"] = writer.exclude + notes["fallback"]["kept_in_float"]
    return notes


class Int8Writer:
    """One calibration of a graph, then as many INT8 graphs from it as asked for (each format, and
    each set of layers kept in float): quantize_static reads the ranges from a cache file."""

    def __init__(self, request: CompileRequest) -> None:
        self.request = request
        self._scratch: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Int8Writer:
        from modelc_build.feeds import FeedReader
        from modelc_build.onnx_graph import excluded_nodes

        request = self.request
        if request.calibration is None:
            raise CompileError("an int8 target needs data.calibration")
        options = request.quantization
        self.reader = FeedReader(request.calibration, options.subset_size, request.inputs)
        self.exclude = excluded_nodes(request.onnx_model, options)
        if options.float_input_layers:
            self.exclude += [name for name in _input_layers(request.onnx_model) if name not in self.exclude]
        if options.float_output_head:
            from modelc_build.onnx_graph import output_head

            self.exclude += [name for name in output_head(request.onnx_model) if name not in self.exclude]
        # a moving average of each feed's extremes narrows the ranges when feeds are small (a model
        # with a fixed batch of 1: a streaming model's INT8 lost every positive decision that way)
        self.per_feed = self.reader.samples_per_feed()  # reads one batch (runs the float model for a stateful one): once
        self.moving_average = self.per_feed >= MOVING_AVERAGE_MIN_SAMPLES
        self._scratch = tempfile.TemporaryDirectory(prefix="modelc-ort-int8-")
        folder = Path(self._scratch.name)
        self.prepared, self.ranges = folder / "prepared.onnx", folder / "ranges.json"
        with self._failures():
            quant_pre_process = _quantization_module("shape_inference").quant_pre_process
            with contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(request.onnx_model), str(self.prepared), skip_symbolic_shape=True)
            self.converted = _at_least_opset(self.prepared, PER_CHANNEL_OPSET)
            _flatten_gemm_biases(self.prepared)
            self.op_types = _quantized_op_types(self.prepared, options)
            # pieces only where every input keeps its samples on axis 0 and none is a fixed value
            chunk = CALIBRATION_CHUNK if all(spec.batch_axis == 0 and spec.value is None for spec in request.inputs) else None
            with contextlib.redirect_stdout(io.StringIO()):
                _calibrate(self.prepared, self.reader, self.op_types, self.moving_average, self.ranges, folder, chunk)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()

    @contextlib.contextmanager
    def _failures(self) -> Iterator[None]:
        try:
            yield
        except ModelcError:  # e.g. bad calibration data: its own message and exit code
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise CompileError(f"onnxruntime static quantization of {self.request.onnx_model.name} failed: {first}") from exc

    def quantize(self, layout_name: str, destination: Path, also_float: tuple[str, ...] = ()) -> None:
        """The graph in `layout_name`'s format with the recipe's float layers and `also_float` kept in float."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        layout = INT8_FORMATS[layout_name]
        with self._failures(), contextlib.redirect_stdout(io.StringIO()):
            quantize_static(str(self.prepared), str(destination), None, quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=getattr(QuantType, layout.activations),
                            weight_type=getattr(QuantType, layout.weights), reduce_range=layout.reduce_range,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=self.exclude + list(also_float),
                            op_types_to_quantize=self.op_types, calibration_cache_path=str(self.ranges),
                            extra_options={"CalibMovingAverage": self.moving_average})

    def weighted_only(self) -> list[str] | None:
        """Q/DQ on the weighted layers alone (every other op kind kept in float), or None where that
        is what is quantized already (a transformer, or a graph with nothing else to quantize)."""
        import onnx

        from modelc_build.onnx_graph import WEIGHTED_LAYERS

        present = {node.op_type for node in onnx.load(str(self.prepared), load_external_data=False).graph.node}
        weighted = sorted(present & set(WEIGHTED_LAYERS) - set(self.request.quantization.ignore_types))
        current = set(self.op_types) if self.op_types is not None else present
        return weighted if weighted and current - set(weighted) else None

    def write(self, destinations: dict[str, Path], also_float: tuple[str, ...] = ()) -> dict[str, Any]:
        for name, destination in destinations.items():
            self.quantize(name, destination, also_float)
        ranges_words = "MinMax, moving average" if self.moving_average else f"MinMax over all feeds ({self.per_feed} per feed)"
        if self.converted:
            ranges_words += f"; the graph converted from opset {self.converted} to {PER_CHANNEL_OPSET} for per-channel Q/DQ"
        return {"method": f"onnxruntime static quantization (QDQ, {ranges_words})",
                "formats": {name: INT8_FORMATS[name].words() for name in destinations},
                "calibration_samples": self.reader.samples,
                "quantized_op_types": self.op_types or "onnxruntime's default list",
                "kept_in_float": {"nodes": self.exclude + list(also_float), "op_types": list(self.request.quantization.ignore_types)}}


def _flatten_gemm_biases(model: Path) -> None:
    """Gemm biases of shape [1, N] rewritten as [N] (the same under Gemm's broadcasting).
    onnxruntime's pre-processing fuses MatMul + Add into such Gemms (a JAX export's dense
    layers), and its QDQ quantizer's int32-bias check then indexes the 2-D bias per channel and
    fails ("The truth value of an array with more than one element is ambiguous": magika 1.0)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model))
    initializers = {tensor.name: tensor for tensor in graph.graph.initializer}
    users: dict[str, int] = {}
    for node in graph.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    flattened = 0
    for node in graph.graph.node:
        bias = initializers.get(node.input[2]) if node.op_type == "Gemm" and len(node.input) > 2 else None
        if bias is not None and len(bias.dims) == 2 and bias.dims[0] == 1 and users[bias.name] == 1:
            bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias).reshape(-1), bias.name))
            flattened += 1
            stale = [info for info in graph.graph.value_info if info.name == bias.name]
            for info in stale:
                graph.graph.value_info.remove(info)
    if flattened:
        onnx.save(graph, str(model))


def _quantization_module(name: str) -> Any:
    import importlib

    return importlib.import_module(f"onnxruntime.quantization.{name}")


CALIBRATION_CHUNK = 1  # samples per calibration run (peak memory grows by a sample's activations per sample; time does not fall)


def _calibrate(model: Path, reader: Any, op_types: list[str] | None, moving_average: bool, cache: Path, scratch: Path,
               chunk: int | None) -> None:
    """onnxruntime's MinMax calibration, written to the calibration cache that `quantize_static`
    then reads. Its calibration session holds every activation of a run at once (MobileNetV2:
    ~110 MB a sample, 1.9 GB for a feed of 16; ResNet-50 ~210 MB a sample), so each feed runs in
    pieces of CALIBRATION_CHUNK samples and the pieces' minima and maxima are combined into the
    feed's own: the same ranges, moving average included, in a fraction of the memory. Measured
    in-process on 64 samples, both layouts: MobileNetV2 peak 569 MiB with pieces of 4, 270 MiB with
    pieces of 1 (3.2 s, 3.3 s); ResNet-50 1167 MiB against 536 MiB (11.2 s, 9.3 s)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    types = op_types or sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # quantize_static's default
    calibrator = create_calibrator(model, types, augmented_model_path=str(scratch / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax, extra_options={"moving_average": moving_average})
    session = calibrator.infer_session
    names = [output.name for output in session.get_outputs()]
    originals = calibrator.model_original_outputs
    feed = reader.get_next()
    while feed:
        runs = [session.run(None, piece) for piece in (_pieces(feed, chunk) if chunk else [feed])]
        calibrator.intermediate_outputs.append([None if name in originals else _extreme(name, [run[i] for run in runs])
                                                for i, name in enumerate(names)])
        feed = reader.get_next()
    if not calibrator.intermediate_outputs:
        raise CompileError("the calibration data gave no sample: check data.calibration")
    save_tensors_data(calibrator.compute_data(), cache)


def _pieces(feed: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """A feed cut along axis 0 into pieces of `size` samples; a feed whose inputs disagree on
    their first axis is run whole."""
    import numpy as np

    counts = {np.shape(value)[0] if np.ndim(value) else None for value in feed.values()}
    if len(counts) != 1 or None in counts:
        return [feed]
    total = counts.pop()
    assert total is not None
    return [{name: value[start:start + size] for name, value in feed.items()} for start in range(0, total, size)] or [feed]


def _extreme(name: str, values: list[np.ndarray]) -> np.ndarray:
    """The ReduceMin/ReduceMax outputs of the pieces of one feed, combined into the feed's."""
    import numpy as np

    if name.endswith("_ReduceMin"):
        return np.minimum.reduce(values)
    if name.endswith("_ReduceMax"):
        return np.maximum.reduce(values)
    raise CompileError(f"onnxruntime's calibration model has an output modelc does not know how to combine: {name}")


PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis` (per-channel weights) exists from opset 13


def _at_least_opset(model: Path, opset: int) -> int | None:
    """Convert the graph in place to `opset` where it is older (onnxruntime's quantizer writes
    per-channel Q/DQ with an `axis` an opset-12 graph cannot hold: the result would not load);
    returns the opset it had, or None when nothing changed."""
    import onnx
    from onnx import version_converter

    graph = onnx.load(str(model))
    current = next((o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")), opset)
    if current >= opset:
        return None
    try:
        onnx.save(version_converter.convert_version(graph, opset), str(model))
    except Exception as exc:
        raise CompileError(f"the graph is opset {current}; per-channel INT8 needs opset {opset} and onnx could not convert "
                           f"it ({first_line(exc)}): export with export.opset: {opset} or newer") from exc
    return current


def _input_layers(model: Path) -> list[str]:
    """Conv/Gemm/MatMul nodes that read a graph input directly (the stem of a CNN)."""
    import onnx

    from modelc_build.onnx_graph import WEIGHTED_LAYERS

    graph = onnx.load(str(model), load_external_data=False).graph
    inputs = {i.name for i in graph.input} - {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type in WEIGHTED_LAYERS and inputs & set(n.input)]


TRANSFORMER_OPS = ("MatMul", "Gemm")


def _quantized_op_types(model: Path, options: Quantization) -> list[str] | None:
    """None (onnxruntime's own list) unless the recipe keeps some operator types in float. A
    transformer (`model_type: transformer`) gets Q/DQ on its MatMul/Gemm alone: quantizing the
    attention mask's Add (values down to -1e4) to 8 bits left a real encoder's INT8 embeddings at
    cosine 0.23 against the float model; Softmax, LayerNorm and GELU stay float too."""
    import onnx

    if options.model_type != "transformer" and not options.ignore_types:
        return None
    present = {node.op_type for node in onnx.load(str(model), load_external_data=False).graph.node}
    if options.model_type == "transformer":
        present &= set(TRANSFORMER_OPS)
    return sorted(present - set(options.ignore_types))
