"""compile:<target>: one artifact (OpenVINO IR, TorchScript, ONNX for onnxruntime, TensorRT) from
the graph it needs, through the target's backend."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from modelc_build.fingerprint import DataSource
from modelc_build.recipe_types import ModelSource, Quantization, Target, Task
from modelc_build.steps import Step, StepInputs, tool_versions
from modelc_build.steps.qdq import warn_shortfall

if TYPE_CHECKING:
    from modelc_build.backends import Capabilities



def compile_step_id(target: Target) -> str:
    return f"compile:{target.id}"


def table(target: Target) -> Capabilities:
    from modelc_build.backends import capabilities

    return capabilities(target.backend)


def backend_tools(target: Target, calibrating: bool = False) -> tuple[str, ...]:
    """The distributions whose versions key the target's artifact (its backend's table)."""
    found = table(target)
    return found.tools + (found.calibration_tools if calibrating else ())


@dataclass(frozen=True)
class AccuracyControlSpec:
    """Accuracy-controlled quantization: the gate's drop, scored on `data` with the task metric."""

    max_drop: float
    task: Task
    output: str
    data: DataSource


@dataclass(frozen=True)
class FallbackSpec:
    """Mixed precision where full INT8 misses `min_cosine`, tuned on `data` (the validation role)."""

    min_cosine: float
    data: DataSource
    max_float_layers: int
    task: Task | None = None  # where the recipe gates the task metric's drop: held too, at most max_drop
    output: str | None = None
    max_drop: float | None = None


@dataclass(frozen=True)
class CompileStep(Step):
    target: Target
    graph: str  # id of the step whose model.onnx is compiled; `export` for TorchScript (made from torch)
    model: ModelSource
    calibration: DataSource | None = None  # int8 targets that calibrate themselves
    quantization: Quantization = Quantization()
    accuracy_control: AccuracyControlSpec | None = None
    cpu_variants: tuple[str, ...] = ()  # onnxruntime int8: extra layouts for CPU classes ("vnni")
    fallback: FallbackSpec | None = None  # int8: mixed precision where full INT8 misses the gate's cosine
    kind = "compile"

    @property
    def memory_peak_hint(self) -> float:
        """Calibration holds the graph several times over (onnxruntime's pre-processing, the
        calibration session, one quantizer per layout); a float compile about twice."""
        if self.calibration is None:
            return 2.0
        return 4.5 if table(self.target).cpu_variants else 4.0

    @property
    def cost_hint(self) -> float:
        """Calibrating is the slow part; OpenVINO's NNCF more so, with accuracy control most."""
        if self.calibration is None:
            return 0.7
        if self.accuracy_control is not None:
            return 5.0
        return 3.5 if table(self.target).calibration_tools else 2.0

    @property
    def id(self) -> str:  # type: ignore[override]
        return compile_step_id(self.target)

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.graph,)

    @property
    def fresh_process(self) -> bool:  # type: ignore[override]
        return not table(self.target).in_process_float or self.calibration is not None

    @property
    def description(self) -> str:  # type: ignore[override]
        if table(self.target).graph(self.target.precision) == "torch":
            source = f"the torch model ({self.target.mode or 'trace'})"
        elif self.graph.startswith("quantize"):
            source = "the Q/DQ ONNX graph"
        elif self.graph.startswith("autocast"):
            source = "the AutoCast FP16 ONNX graph"
        else:
            source = "the ONNX graph"
        what = f"engines for {', '.join(self.target.gpus)}" if self.target.gpus else ""
        return f"build {self.target.backend} {self.target.precision} {what + ' ' if what else ''}from {source}"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        """TorchScript is made from the torch model, so its input is the source, not the graph; an
        int8 build that calibrates itself also depends on the data and how it is read."""
        facts = inputs.fingerprints
        from_torch = table(self.target).graph(self.target.precision) == "torch"
        graph: Any = facts.source(self.model) if from_torch else inputs.digest(self.graph, "model.onnx")
        material: dict[str, Any] = {"target": self.target.material(), "graph": graph}
        if self.calibration is not None:
            material["calibration"] = facts.data(self.calibration)
            material["quantization"] = asdict(self.quantization)
        if self.cpu_variants:
            material["cpu_variants"] = list(self.cpu_variants)
        if self.fallback is not None:
            material["fallback"] = {"min_cosine": self.fallback.min_cosine, "data": facts.data(self.fallback.data),
                                    "max_float_layers": self.fallback.max_float_layers}
            if self.fallback.task is not None:
                material["fallback"].update(task=facts.task(self.fallback.task), output=self.fallback.output,
                                            max_drop=self.fallback.max_drop)
        if self.accuracy_control is not None:
            control = self.accuracy_control
            material["accuracy_control"] = {"max_drop": control.max_drop, "task": facts.task(control.task),
                                            "output": control.output, "data": facts.data(control.data)}
        material["tools"] = tool_versions(backend_tools(self.target, calibrating=self.calibration is not None))
        return material

    def run(self, inputs: StepInputs, out: Path) -> None:
        from modelc_build.backends import CompileRequest, get_backend
        from modelc_build.feeds import with_carried_state

        facts = inputs.fingerprints
        torch_model: Callable[[], Any] | None = None
        if self.model.kind != "onnx":
            torch_model = partial(_load_torch_model, self.model)
        calibration = None
        reader = None
        if self.calibration is not None:
            reader = facts.reader(self.calibration)
            warn_shortfall(reader)
            calibration = with_carried_state(reader.feeds, inputs.file(self.graph, "model.onnx"), self.model.inputs)
        request = CompileRequest(self.target, inputs.file(self.graph, "model.onnx"), self.model.inputs,
                                 self.model.outputs, out, torch_model, calibration, self.quantization,
                                 self._accuracy_control(inputs), self.cpu_variants, self._fallback(inputs))
        backend = get_backend(self.target.backend)
        files = backend.compile(request)
        if reader is not None:
            _note_samples_available(out, len(reader))
        if self.target.precision == "int8":
            _check_coverage(self.target, files, out, self.quantization, _sample_shapes(calibration, self.model.inputs))
        _check_it_runs(self.target, backend, files, self.model.inputs, self.model.outputs, inputs.threads)

    def _fallback(self, inputs: StepInputs) -> Any:
        if self.fallback is None:
            return None
        from modelc_build.backends import Fallback
        from modelc_build.feeds import with_carried_state

        reader = inputs.fingerprints.reader(self.fallback.data)
        graph = inputs.file(self.graph, "model.onnx")
        tuning = with_carried_state(reader.feeds, graph, self.model.inputs)
        spec = self.fallback
        task_drop = None
        if spec.task is not None and spec.output is not None and spec.max_drop is not None:
            from modelc_build.accuracy import TaskDrop
            from modelc_build.backends import get_backend

            float_graph = get_backend(self.target.backend).float_runner(graph, self.model.inputs, self.model.outputs)
            float_graph.activate()
            task_drop = TaskDrop(reader.batches, self.model.inputs, spec.task, spec.output, float_graph.infer_impl)
        return Fallback(spec.min_cosine, tuning, spec.max_float_layers, task_drop, spec.max_drop)

    def _accuracy_control(self, inputs: StepInputs) -> Any:
        if self.accuracy_control is None:
            return None
        from modelc_build.accuracy import task_metric
        from modelc_build.backends import AccuracyControl

        control = self.accuracy_control
        reader = inputs.fingerprints.reader(control.data)
        metric = partial(_scored, task_metric, self.model.inputs, control.task, control.output)
        return AccuracyControl(control.max_drop, control.task, control.output, reader.batches, metric)


def _scored(task_metric: Callable[..., float], model_inputs: Any, task: Task, output: str, infer: Any, batches: Any) -> float:
    return task_metric(infer, batches, model_inputs, task, output)


def _load_torch_model(model: ModelSource) -> Any:
    from modelc_build.sources import load_torch_model

    return load_torch_model(model)


def _note_samples_available(out: Path, available: int) -> None:
    """The report's calibration line reads this (so a no-op rebuild needs no data reader)."""
    from modelc_build.manifest import QUANTIZATION_NOTES

    notes_file = out / QUANTIZATION_NOTES
    if notes_file.is_file():
        notes = json.loads(notes_file.read_text())
        notes["calibration_samples_available"] = available
        notes_file.write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")


def _sample_shapes(calibration: Callable[[], Any] | None, inputs: Any) -> dict[str, tuple[int, ...]] | None:
    """One calibration sample's input shapes (batch 1 where the batch is on axis 0): the sizes a
    model with dynamic axes (a text line's width) is counted at."""
    if calibration is None:
        return None
    feed = next(iter(calibration()), None)
    if not feed:
        return None
    axis0 = {spec.name for spec in inputs if spec.batch_axis == 0}
    shapes = {}
    for name, value in feed.items():
        shape = tuple(int(size) for size in getattr(value, "shape", ()))
        shapes[name] = (1, *shape[1:]) if name in axis0 and shape else shape
    return shapes


def _check_coverage(target: Target, files: list[Path], out: Path, quantization: Quantization,
                    sample_shapes: dict[str, tuple[int, ...]] | None = None) -> None:
    """How much of an int8 artifact runs in INT8 (into its quantization.json); none at all fails
    the build unless the recipe accepts it (quantization.allow_unquantized)."""
    from modelc_build.coverage import onnx_coverage, openvino_coverage
    from modelc_build.errors import CompileError
    from modelc_build.manifest import QUANTIZATION_NOTES

    measured = {}
    for file in files:
        if file.suffix == ".xml":
            measured[file.name] = openvino_coverage(file, sample_shapes)
        elif file.suffix == ".onnx":
            measured[file.name] = onnx_coverage(file, sample_shapes)
    if not measured:
        return
    notes_file = out / QUANTIZATION_NOTES
    notes = json.loads(notes_file.read_text()) if notes_file.is_file() else {}
    notes["coverage"] = {name: coverage.to_json() for name, coverage in measured.items()}
    notes_file.write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")
    if notes_file not in files:
        files.append(notes_file)
    empty = [(name, coverage) for name, coverage in measured.items() if coverage.quantized == 0]
    if empty and not quantization.allow_unquantized:
        name, coverage = empty[0]
        raise CompileError(f"{target.id}: {name} holds no INT8 layer ({coverage.words()}): {coverage.why_none()}; "
                           "or set quantization.allow_unquantized: true to ship it as it is")


def _check_it_runs(target: Target, backend: Any, files: list[Path], inputs: Any, outputs: tuple[str, ...],
                   threads: int | None) -> None:
    """Every artifact is loaded in the runtime that will run it and run once on an example, where
    it is made: a file the runtime refuses fails here, naming this step, not later in verify."""
    from modelc_build.errors import CompileError, ModelcError, first_line
    from modelc_build.feeds import ModelCaller, random_samples

    configs: list[dict[str, str]] = [{}]
    if any(f.name == "model-vnni.onnx" for f in files):
        configs = [{"variant": "portable"}, {"variant": "vnni"}]
    for config in configs:
        try:
            with backend.runner(files, inputs, outputs, config, threads) as runner:
                ModelCaller(inputs, runner.infer)(random_samples(inputs, 1, seed=5))
        except ModelcError:
            raise
        except Exception as exc:  # noqa: BLE001 - the point of the check
            which = f" ({config['variant']} layout)" if config else ""
            raise CompileError(f"compile:{target.id}: the artifact{which} does not run in {target.backend}: "
                               f"{first_line(exc)[:300]}") from exc
