"""OpenVINO IR (.xml + .bin) converted from the simplified ONNX graph; FP16 compresses the weights.

The runner takes the compile_model properties a deploy stage passes: none (the CPU plugin's own
defaults, which run FP32/FP16 IR in bf16 on CPUs that have it) or, e.g., INFERENCE_PRECISION_HINT
f32 to measure the IR itself.
"""
from __future__ import annotations

import contextlib
import io
import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from modelc_build.backends import Backend, Capabilities, CompileRequest, Fallback, Runner, pick, require, write_quantization_notes
from modelc_build.errors import CompileError, ModelcError, first_line
from modelc_build.recipe_types import TensorSpec

if TYPE_CHECKING:  # NumPy loads when an artifact runs: the backend's table is read without it
    import numpy as np

KERNELS_KEPT = 5


class OpenVinoRunner(Runner):
    def __init__(self, xml: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
                 config: dict[str, str] | None = None, threads: int | None = None) -> None:
        super().__init__(inputs, outputs)
        self.xml = xml
        self.threads = threads  # a step beside others: its share of the cores (not a deploy setting)
        self.config = dict(config or {})  # {}: the CPU plugin's defaults (bf16 on CPUs that have it)
        self._compiled: Any = None
        self._request: Any = None

    def activate(self) -> None:
        ov = require("openvino", "openvino", "openvino")
        core = ov.Core()
        config: dict[str, Any] = {**self.config, **({"PERF_COUNT": True} if self.record_kernels else {})}
        if self.threads and "INFERENCE_NUM_THREADS" not in config:
            config["INFERENCE_NUM_THREADS"] = self.threads
        self._compiled = core.compile_model(str(self.xml), "CPU", config)
        self._request = self._compiled.create_infer_request()

    def deactivate(self) -> None:
        self._request = None
        self._compiled = None

    def effective_settings(self) -> dict[str, str]:
        """The precision the CPU plugin really computes in (bf16 by default on CPUs that have it)."""
        assert self._compiled is not None
        precision = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        return {"INFERENCE_PRECISION_HINT": precision.to_string() if hasattr(precision, "to_string") else str(precision)}

    def kernels_used(self) -> list[str]:
        """Layer types with the kernels that ran them, by time spent (e.g. `Convolution (jit_avx2_I8)`)."""
        if self._request is None or not self.record_kernels:
            return []
        spent: dict[str, float] = {}
        for layer in self._request.get_profiling_info():
            if layer.exec_type and layer.exec_type != "undef":
                kernel = f"{layer.node_type} ({layer.exec_type})"
                spent[kernel] = spent.get(kernel, 0.0) + layer.real_time.total_seconds()
        return [kernel for kernel, _ in sorted(spent.items(), key=lambda item: -item[1])]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._request is not None
        self._request.infer(feed)
        import numpy as np

        return {name: np.array(self._request.get_tensor(name).data) for name in self.outputs}

    def kernel_profile(self, feed: dict[str, np.ndarray], runs: int = 10) -> list[dict[str, Any]] | None:
        """The CPU plugin's own per-layer counters, summed by layer type and kernel: an INT8 model
        slower than FP32 shows why (on a CPU without VNNI its fully connected layers ran as
        `FullyConnectedQuantizedLegacy (jit_gemm_i8)`, slower than the f32 `brgemm` ones)."""
        ov = require("openvino", "openvino", "openvino")
        request = ov.Core().compile_model(str(self.xml), "CPU", {**self.config, "PERF_COUNT": True}).create_infer_request()
        spent: dict[str, float] = {}
        for _ in range(max(runs, 1)):
            request.infer(feed)
            for layer in request.get_profiling_info():
                kernel = f"{layer.node_type} ({layer.exec_type})"
                spent[kernel] = spent.get(kernel, 0.0) + layer.real_time.total_seconds() * 1e6 / max(runs, 1)
        total = sum(spent.values()) or 1.0
        ranked = sorted(spent.items(), key=lambda item: -item[1])[:KERNELS_KEPT]
        return [{"kernel": kernel, "us": round(us, 1), "share": round(100.0 * us / total, 1)} for kernel, us in ranked]


class OpenVinoBackend(Backend):
    name = "openvino"
    capabilities = Capabilities(
        precisions=frozenset({"fp32", "fp16", "int8"}), deploy_extra="openvino-runtime", build_extra="openvino", runtime_modules=("numpy", "openvino"),
        tools=("openvino",), calibration_tools=("nncf",), emulated_int8=True, precision_hint=True, accuracy_control=True,
        preload=("openvino",), mixed_precision=True)

    def compile(self, request: CompileRequest) -> list[Path]:
        ov = require("openvino", self.name, "openvino")
        xml = request.out_dir / "model.xml"
        try:
            model = ov.convert_model(str(request.onnx_model))
        except Exception as exc:
            raise CompileError(f"OpenVINO could not convert {request.onnx_model.name}: {exc}") from exc
        files = [xml, xml.with_suffix(".bin")]
        if request.target.precision == "int8":
            model, notes = self._quantize(model, request)
            files.append(write_quantization_notes(request.out_dir, notes))
        ov.save_model(model, str(xml), compress_to_fp16=request.target.precision == "fp16")
        return files

    @staticmethod
    def _quantize(model: Any, request: CompileRequest) -> tuple[Any, dict[str, Any]]:
        """NNCF post-training quantization on the recipe's calibration data, streamed one sample
        per item; accuracy-controlled when the recipe gates the int8 task metric."""
        nncf = require("nncf", "openvino int8", "openvino")
        nncf.set_log_level(logging.ERROR)
        if request.calibration is None:
            raise CompileError("an int8 target needs data.calibration")
        options = request.quantization
        from modelc_build.onnx_graph import excluded_nodes, output_head

        excluded_nodes(request.onnx_model, options)  # unknown ignore.names: exit 3 here as for every backend
        head = output_head(request.onnx_model) if options.float_output_head else []
        samples = _Samples(request.calibration, request.inputs)
        names = [spec.name for spec in request.inputs]
        dataset = nncf.Dataset(samples, lambda item: item[names[0]] if len(names) == 1 else tuple(item[n] for n in names))
        settings: dict[str, Any] = dict(
            subset_size=options.subset_size,
            preset=nncf.QuantizationPreset.MIXED if options.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
            fast_bias_correction=options.fast_bias_correction,
            model_type=nncf.ModelType.TRANSFORMER if options.model_type == "transformer" else None,
            ignored_scope=nncf.IgnoredScope(names=list(options.ignore_names) + head, types=list(options.ignore_types),
                                            patterns=list(options.ignore_patterns), validate=False),
            advanced_parameters=_advanced(options.overflow_fix))
        notes: dict[str, Any] = {"method": "NNCF post-training quantization", "preset": options.preset,
                                 "overflow_fix": options.overflow_fix,
                                 "kept_in_float": {"names": list(options.ignore_names), "types": list(options.ignore_types),
                                                   "patterns": list(options.ignore_patterns), "output_head": head}}
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout
                if request.accuracy_control is None:
                    quantized = nncf.quantize(model, dataset, **settings)
                    if request.fallback is not None:
                        quantized = _cosine_fallback(nncf, model, quantized, dataset, request, settings, notes)
                else:
                    quantized = _quantize_with_accuracy_control(nncf, model, dataset, request, settings, notes)
        except ModelcError:  # e.g. bad calibration data: its own message and exit code
            raise
        except Exception as exc:
            raise CompileError(f"NNCF quantization failed: {first_line(exc)}") from exc
        notes["calibration_samples"] = min(samples.seen, options.subset_size)
        return quantized, notes

    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
               config: dict[str, str] | None = None, threads: int | None = None) -> Runner:
        return OpenVinoRunner(pick(files, ".xml"), inputs, outputs, config, threads)

    def versions(self) -> dict[str, str]:
        return {"openvino": require("openvino", self.name, "openvino").__version__}

    def float_runner(self, model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> Runner:
        return OpenVinoRunner(model, inputs, outputs, {"INFERENCE_PRECISION_HINT": "f32"})

    def warm_up(self) -> None:
        """Load the CPU plugin (a first compile costs ~1 s under emulation)."""
        import numpy as np

        ov = require("openvino", self.name, "openvino-runtime")
        import openvino.opset13 as ops

        parameter = ops.parameter([1, 4], np.float32)
        ov.Core().compile_model(ov.Model([ops.relu(parameter)], [parameter]), "CPU")


def _advanced(overflow_fix: str) -> Any:
    """NNCF's overflow fix: 7-bit weights where pre-VNNI 8-bit kernels would saturate; `enable`
    (modelc's default) applies it to every layer, NNCF's own default to the first only."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    fix = {"enable": OverflowFix.ENABLE, "first_layer": OverflowFix.FIRST_LAYER, "disable": OverflowFix.DISABLE}
    return AdvancedQuantizationParameters(overflow_fix=fix[overflow_fix])


class _Samples:
    """Calibration data as single samples, re-iterable (NNCF makes several passes), one batch in
    memory at a time; `seen` is the most samples one pass handed out."""

    def __init__(self, feeds: Callable[[], Iterator[dict[str, np.ndarray]]], inputs: tuple[TensorSpec, ...]) -> None:
        self._feeds = feeds
        self._inputs = inputs
        self.seen = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        from modelc_build.feeds import fixed_batch, model_feed, split

        count = 0
        for feed in self._feeds():
            for call, real in split(feed, fixed_batch(self._inputs) or 1, pad=False):
                count += real
                self.seen = max(self.seen, count)
                yield model_feed(self._inputs, call)


class _NncfLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _quantize_with_accuracy_control(nncf: Any, model: Any, calibration: Any, request: CompileRequest,
                                    settings: dict[str, Any], notes: dict[str, Any]) -> Any:
    """`nncf.quantize_with_accuracy_control` scored with modelc's own task metric; which
    quantizers it reverted (layers kept in float) is read from NNCF's log into the notes."""
    control = request.accuracy_control
    assert control is not None
    names = [spec.name for spec in request.inputs]

    def validate(compiled: Any, batches: Any) -> float:
        def infer(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            result = compiled(feed)
            import numpy as np

            return {port.get_any_name(): np.asarray(result[port]) for port in compiled.outputs}

        return control.metric(infer, batches) / 100.0

    from modelc_build.feeds import model_feed

    def feed(batch: Any) -> Any:
        complete = model_feed(request.inputs, batch.inputs)
        return complete[names[0]] if len(names) == 1 else tuple(complete[n] for n in names)

    validation = nncf.Dataset(_Batches(control.evaluation), feed)
    quantized, lines = _accuracy_aware(nncf, model, calibration, validation, validate, control.max_drop / 100.0, settings)
    notes["accuracy_control"] = {"max_drop_points": control.max_drop, "metric": control.task.type,
                                 "reverted_to_float": _reverted_layers(lines),
                                 "log": [line for line in lines if line.strip() and "Elapsed" not in line][-30:]}
    return quantized


def _accuracy_aware(nncf: Any, model: Any, calibration: Any, validation: Any, validate: Any, max_drop: float,
                    settings: dict[str, Any], **more: Any) -> tuple[Any, list[str]]:
    """`nncf.quantize_with_accuracy_control` (absolute drop), with NNCF's log kept: it names the
    quantizers it reverted to float nowhere else."""
    log = _NncfLog()
    nncf_logger = logging.getLogger("nncf")
    nncf_logger.addHandler(log)
    level = nncf_logger.level
    nncf_logger.setLevel(logging.INFO)
    try:
        tuned = {**settings, "advanced_quantization_parameters": settings["advanced_parameters"], **more}
        del tuned["advanced_parameters"]
        quantized = nncf.quantize_with_accuracy_control(model, calibration, validation, validation_fn=validate,
                                                        max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, **tuned)
    finally:
        nncf_logger.removeHandler(log)
        nncf_logger.setLevel(level)
    return quantized, log.lines


class _ReferenceOutputs:
    """The float model's outputs on the tuning feeds, and the lowest output cosine of another
    compiled model against them (the measure the int8 gate's min_cosine applies)."""

    def __init__(self, ov: Any, model: Any, feeds: list[dict[str, Any]], outputs: tuple[str, ...]) -> None:
        self.ov, self.feeds, self.outputs = ov, feeds, outputs
        float_model = self.compile(model)
        self.expected = [self.run(float_model, feed) for feed in feeds]

    def compile(self, model: Any) -> Any:
        return self.ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(self, compiled: Any, feed: dict[str, Any]) -> list[Any]:
        import numpy as np

        by_name = self.infer(compiled)(feed)
        return [np.asarray(by_name[name], dtype=np.float64).ravel() for name in self.outputs]

    def infer(self, compiled: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """The compiled model as a feed -> outputs-by-name function (for the task metric)."""
        import numpy as np

        def run(feed: dict[str, Any]) -> dict[str, Any]:
            result = compiled(feed)
            return {port.get_any_name(): np.asarray(result[port]) for port in compiled.outputs}

        return run

    def cosine(self, compiled: Any, indices: Any = None) -> float:
        import numpy as np

        chosen = list(range(len(self.feeds))) if indices is None else list(indices)
        got = [self.run(compiled, self.feeds[i]) for i in chosen]
        worst = 1.0
        for output in range(len(self.outputs)):
            a = np.concatenate([run[output] for run in got])
            b = np.concatenate([self.expected[i][output] for i in chosen])
            norm = float(np.linalg.norm(a) * np.linalg.norm(b))
            worst = min(worst, float(a @ b) / norm if norm else 1.0)
        return worst


def _cosine_fallback(nncf: Any, model: Any, quantized: Any, calibration: Any, request: CompileRequest,
                     settings: dict[str, Any], notes: dict[str, Any]) -> Any:
    """Full INT8 that misses the int8 gate's min_cosine on the tuning (validation) data goes back to
    NNCF's accuracy-aware quantization with that cosine as its metric: it ranks the quantizers and
    reverts the worst to float until the cosine holds (at most quantization.fallback_layers). Whether
    the mixed IR is faster than FP32 is the worth step's question (steps/worth.py)."""
    import openvino as ov

    from modelc_build.backends.mixed_precision import tuning_feeds

    fallback = request.fallback
    assert fallback is not None
    feeds, samples = tuning_feeds(fallback, request.inputs)
    reference = _ReferenceOutputs(ov, model, feeds, request.outputs)
    full_int8 = reference.compile(quantized)
    full = reference.cosine(full_int8)
    record: dict[str, Any] = {"min_cosine": fallback.min_cosine, "tuned_on": f"{samples} validation samples",
                              "full_int8_cosine": round(full, 6), "kept_in_float": []}
    notes["fallback"] = record
    if fallback.max_drop is not None:
        record["max_task_drop"] = fallback.max_drop
    if fallback.holds(full, lambda: reference.infer(full_int8), record, "full_int8_task_drop"):
        record["verdict"] = "full INT8 holds the gate: nothing kept in float"
        return quantized
    mixed, kept = _recurrent_in_float(nncf, model, calibration, settings, fallback, reference, record)
    if mixed is None:
        mixed, kept = _search(nncf, model, calibration, settings, fallback, reference, feeds, request.inputs, record)
        if mixed is None:  # NNCF's search failed: the gates judge full INT8
            mixed, kept = quantized, []
    compiled = reference.compile(mixed)
    cosine = reference.cosine(compiled)
    holds = fallback.holds(cosine, lambda: reference.infer(compiled), record, "task_drop")
    kinds = f" and {record['op_kinds_in_float']}" if "op_kinds_in_float" in record else ""
    summary = f"at cosine {cosine:.4f} with {len(kept)} layer(s){kinds} in float"
    record.update(mixed_cosine=round(cosine, 6), kept_in_float=kept, summary=summary)
    if not holds:  # the gates judge the best it found (the worth step times it against FP32)
        searched = (record["search_failed"] if "search_failed" in record else "NNCF's accuracy control found no IR within "
                    f"quantization.fallback_layers ({fallback.max_float_layers}) that holds {fallback.aims()}")
        record["verdict"] = f"{searched}; shipped to the gates: best mixed INT8 {summary}"
        return mixed
    record["verdict"] = f"mixed INT8 {summary}"
    return mixed


RECURRENT_OPS = ("LSTMSequence", "GRUSequence", "RNNSequence", "LSTMCell", "GRUCell", "RNNCell")


def _recurrent_in_float(nncf: Any, model: Any, calibration: Any, settings: dict[str, Any], fallback: Fallback,
                        reference: _ReferenceOutputs, record: dict[str, Any]) -> tuple[Any, list[str]]:
    """The op kind OpenVINO quantizes worst, first: a model with recurrent layers quantized again
    with them in float (one NNCF pass). Returns the IR where that holds every aim, else None."""
    present = sorted({op.get_type_name() for op in model.get_ops()} & set(RECURRENT_OPS))
    if not present:
        return None, []
    scope = settings["ignored_scope"]
    trial = {**settings, "ignored_scope": nncf.IgnoredScope(names=list(scope.names), types=list(scope.types) + present,
                                                             patterns=list(scope.patterns), validate=False)}
    candidate = nncf.quantize(model, calibration, **trial)
    compiled = reference.compile(candidate)
    cosine = reference.cosine(compiled)
    round_record: dict[str, Any] = {"op_kinds": present, "cosine": round(cosine, 6)}
    record["recurrent_in_float"] = round_record
    if not fallback.holds(cosine, lambda: reference.infer(compiled), round_record, "task_drop"):
        return None, []
    record["op_kinds_in_float"] = f"every {', '.join(present)}"
    return candidate, []


def _search(nncf: Any, model: Any, calibration: Any, settings: dict[str, Any], fallback: Fallback, reference: _ReferenceOutputs,
            feeds: list[dict[str, Any]], inputs: tuple[TensorSpec, ...], record: dict[str, Any]) -> tuple[Any, list[str]]:
    """NNCF's accuracy-aware search on the aims; (None, []) where NNCF itself fails on the graph
    (its quantizer-removal walk raised KeyError on a bidirectional LSTM's IR), recorded."""
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    names = [spec.name for spec in inputs]
    validation = nncf.Dataset(list(range(len(feeds))), lambda index: feeds[index][names[0]] if len(names) == 1
                              else tuple(feeds[index][n] for n in names))
    try:
        mixed, lines = _accuracy_aware(nncf, model, calibration, validation, partial(_aims_met, fallback, reference), 1.0, settings,
                                       advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
                                           max_num_iterations=fallback.max_float_layers))
    except Exception as exc:  # noqa: BLE001 - a library failure inside the search: the artifact goes to the gates
        record["search_failed"] = f"NNCF's accuracy control failed: {first_line(exc) or type(exc).__name__}"
        return None, []
    return mixed, _reverted_layers(lines)


def _aims_met(fallback: Fallback, reference: _ReferenceOutputs, compiled: Any, indices: Any = None) -> float:
    """NNCF's metric for the search: 1 for the float model, 0 where the candidate just meets every
    aim (the cosine, and the task-metric drop where gated), lower the further it misses one; NNCF
    reverts quantizers until the drop from 1 is at most 1 (not centred on 0: NNCF divides by the
    float model's value)."""
    cosine = reference.cosine(compiled, indices)
    score = (cosine - 1.0) / max(1.0 - fallback.min_cosine, 1e-9)
    if fallback.task_drop is not None and fallback.max_drop is not None:
        score = min(score, -fallback.task_drop(reference.infer(compiled)) / max(fallback.max_drop, 1e-9))
    return 1.0 + score


def _reverted_layers(lines: list[str]) -> list[str]:
    """NNCF ends with 'N out of M were reverted back to the floating-point precision:' and one
    layer per following tab-indented line (its only report of which layers it kept in float)."""
    for line in reversed(lines):
        if "reverted back to the floating-point precision" in line:
            return [part.strip() for part in line.split(":", 1)[1].split("\n") if part.strip()]
    return []


class _Batches:
    def __init__(self, batches: Callable[[], Iterator[Any]]) -> None:
        self._batches = batches

    def __iter__(self) -> Iterator[Any]:
        return self._batches()
