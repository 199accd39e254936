"""Backends: one module per target, registered by name and imported only when used.

A backend turns the simplified ONNX graph (or, for TorchScript, the torch model) into files,
and gives a `Runner` over those files for the accuracy check and the latency measurement.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping

from modelc_build.errors import BackendUnavailable, InputError
from modelc_build.manifest import QUANTIZATION_NOTES
from modelc_build.recipe_types import Quantization, Target, Task, TensorSpec

if TYPE_CHECKING:  # NumPy loads when an artifact runs: the backend's table is read without it
    import numpy as np


class Runner(ABC):
    """Runs one artifact. Use as a context manager: the session lives between enter and exit."""

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self._active = False
        self.record_kernels = False  # set before entering: `kernels_used()` then names what ran

    def __enter__(self) -> Runner:
        self.activate()
        self._active = True
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._active = False
        self.deactivate()

    def activate(self) -> None:  # load the model, open a session
        pass

    def deactivate(self) -> None:
        pass

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check the feed once here; subclasses only write `infer_impl`."""
        if not self._active:
            raise RuntimeError("Runner.infer called outside `with runner:`")
        expected = {spec.name for spec in self.inputs}
        if set(feed) != expected:
            raise InputError(f"feed has inputs {sorted(feed)}, the model takes {sorted(expected)}")
        result = self.infer_impl(feed)
        missing = [name for name in self.outputs if name not in result]
        if missing:
            raise RuntimeError(f"runner {type(self).__name__} returned no output named {missing}")
        import numpy as np

        return {name: np.asarray(result[name]) for name in self.outputs}

    @abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ...

    def kernels_used(self) -> list[str]:
        """The kernels the calls so far ran (with `record_kernels` set), most used first; [] where
        the runtime cannot say."""
        return []

    def effective_settings(self) -> dict[str, str]:
        """What the runtime actually runs with (e.g. OpenVINO's inference precision), read back
        from it after loading; {} where there is nothing to read."""
        return {}

    def kernel_profile(self, feed: dict[str, np.ndarray], runs: int = 10) -> list[dict[str, Any]] | None:
        """Where a call's time goes, by kernel (most first), where the runtime can say; else None."""
        return None


@dataclass(frozen=True)
class AccuracyControl:
    """Quantize, then give back to float the layers that cost most until the task metric on the
    validation data is within `max_drop` points of the float model (the recipe's int8 gate). The
    metric comes with the request, so a backend never imports the accuracy module."""

    max_drop: float
    task: Task
    output: str
    evaluation: Callable[[], Iterator[Any]]  # labelled batches (modelc_build.data.Batch) to tune on
    # metric(infer, batches) -> percent; infer maps a feed to {output: array}
    metric: Callable[[Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], Any], float]


@dataclass(frozen=True)
class Fallback:
    """Mixed precision where full INT8 misses: keep the layers that cost most in float until every
    output holds `min_cosine` against the float graph on the tuning (validation) data, with at most
    `max_float_layers` in float; refuse the artifact when the mixed graph is no faster than FP32."""

    min_cosine: float
    tuning: Callable[[], Iterator[dict[str, np.ndarray]]]  # validation feeds (input name -> batch), never evaluation
    max_float_layers: int = 8
    # where the recipe gates the task metric: a model's drop below the float graph on the tuning
    # data (accuracy.TaskDrop: called with the model's infer), held at most `max_drop`
    task_drop: Callable[[Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]], float] | None = None
    max_drop: float | None = None

    def holds(self, cosine: float, infer: Callable[[], Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]],
              record: dict[str, Any], key: str) -> bool:
        """Whether a candidate holds the cosine aim and, where the recipe gates it, the task-metric
        aim (its drop recorded under `key`). `infer` makes the candidate's infer function: it is
        made and run only where the cosine holds."""
        if cosine < self.min_cosine:
            return False
        if self.task_drop is None or self.max_drop is None:
            return True
        drop = self.task_drop(infer())
        record[key] = round(drop, 4)
        return drop <= self.max_drop

    def aims(self) -> str:
        """The aims in words, for a verdict."""
        return f"min_cosine {self.min_cosine}" + (f" and a task-metric drop of at most {self.max_drop:g}"
                                                  if self.max_drop is not None else "")


@dataclass(frozen=True)
class CompileRequest:
    """Everything a backend may use: a step sees only these typed inputs."""

    target: Target
    onnx_model: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    out_dir: Path
    torch_model: Callable[[], Any] | None = None  # lazily built reference model, torch sources only
    # int8 only: representative data, one feed (input name -> batch of samples) at a time
    calibration: Callable[[], Iterator[dict[str, np.ndarray]]] | None = None
    quantization: Quantization = Quantization()
    accuracy_control: AccuracyControl | None = None
    cpu_variants: tuple[str, ...] = ()  # onnxruntime int8: extra layouts for CPU classes ("vnni")
    fallback: Fallback | None = None  # int8: mixed precision where full INT8 misses (backends with mixed_precision)


def write_quantization_notes(out_dir: Path, notes: dict[str, Any]) -> Path:
    """What an int8 artifact's calibration used and kept in float: shipped beside the artifact
    (so it is signed with it) and read into the report."""
    import json

    path = out_dir / QUANTIZATION_NOTES
    path.write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")
    return path


def pick(files: list[Path], suffix: str) -> Path:
    """The artifact's model file among its files."""
    return next(f for f in files if f.suffix == suffix)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, in the one table it owns (its class's `capabilities`): the recipe's
    checks and schema, the plan, the compile step, the runtime and the emulated checks read it, and
    keep no list of backends of their own. Reading it imports no runtime (a core install reads it).
    """

    precisions: frozenset[str]  # what a recipe may ask of it
    deploy_extra: str  # the pip extra that installs its runtime (`pip install 'modelc-build[EXTRA]'`)
    runtime_modules: tuple[str, ...]  # what must import to run one of its artifacts (NumPy and the runtime)
    tools: tuple[str, ...]  # distributions whose versions are part of its compile step's cache key
    refused: Mapping[str, str] = field(default_factory=dict)  # precision -> why it is not offered and what to ask instead
    options: tuple[str, ...] = ()  # target keys it takes beyond backend and precisions (the schema lists them)
    graphs: Mapping[str, str] = field(default_factory=dict)  # precision -> the graph it compiles: onnx (default), qdq, autocast, torch
    calibration_tools: tuple[str, ...] = ()  # more key tools when it calibrates int8 itself
    runnable: bool = True  # modelc loads and runs its artifacts (verify, `verify --run`, runtime.load)
    in_process_float: bool = False  # a float compile is cheap (a copy): it runs in the build's process
    emulated_int8: bool = False  # its INT8 kernels differ by CPU class: checked on verify.cpus under QEMU
    emulated_code: bool = False  # its artifact is machine code for an ISA: checked on verify.cpus at every precision
    x86_only: bool = False  # its artifacts run on x86-64 only: the ARM64 CPUs of verify.cpus do not apply
    no_arm_check: str = ""  # why its artifacts cannot be run on an emulated ARM64 CPU (the check is said not run)
    cpu_variants: tuple[str, ...] = ()  # int8 layouts it adds for CPU classes the build machine can verify ("vnni")
    precision_hint: bool = False  # its CPU runtime may compute an FP32 artifact in bf16: the deploy setting pins it
    accuracy_control: bool = False  # its int8 can be tuned to the task metric on validation data
    gpu: bool = False  # engines per GPU generation (target.gpus), run only where that GPU is
    gpu_precisions: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)  # flavour -> generation -> precisions
    preload: tuple[str, ...] = ()  # modules a build's fork server imports once for its steps
    check_cost: float = 0.7  # a check of one of its artifacts, relative to others (the engine's order)
    mixed_precision: bool = False  # its int8 can keep the layers that cost most in float (CompileRequest.fallback)
    build_extra: str = ""  # the pip extra a job that compiles its artifacts installs beyond `graph` (and `build` for torch)

    def graph(self, precision: str) -> str:
        return self.graphs.get(precision, self.graphs.get("*", "onnx"))

    def refusal(self, precision: str) -> str | None:
        """Why a recipe may not ask this backend for `precision` (None: it may)."""
        if precision in self.precisions:
            return None
        return self.refused.get(precision) or f"supports {', '.join(sorted(self.precisions))}"


class Backend(ABC):
    name: str = ""
    capabilities: ClassVar[Capabilities]

    @abstractmethod
    def compile(self, request: CompileRequest) -> list[Path]:
        """Write the artifact's files into request.out_dir and return them."""

    @abstractmethod
    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
               config: dict[str, str] | None = None, threads: int | None = None) -> Runner:
        """`config`: runtime settings as a deploy stage would pass them (OpenVINO compile_model
        properties); None or {} is the runtime's own defaults. `threads`: how many threads it may
        use beside other work (a build's share of the cores; None: the runtime's default)."""

    def versions(self) -> dict[str, str]:
        """Versions of the libraries this backend used, for the manifest."""
        return {}

    def float_runner(self, model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> Runner:
        """A plain FP32 ONNX model in this runtime, on its float kernels (the emulation's canary)."""
        raise BackendUnavailable(f"{self.name} runs no ONNX canary: it is not checked under emulation")

    def warm_up(self) -> None:
        """Import the runtime and load its CPU kernels once (a warm emulated service does this
        before its first request)."""


# One line per backend: name -> the module and class that implement it and own its table.
# Backends installed as plug-ins register the same way under the `modelc_build.backends` entry-point group.
_REGISTRY: dict[str, str] = {
    "onnxruntime": "modelc_build.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "modelc_build.backends.openvino:OpenVinoBackend",
    "torchscript": "modelc_build.backends.torchscript:TorchScriptBackend",
    "tensorrt": "modelc_build.backends.tensorrt:TensorRtBackend",
    "aoti": "modelc_build.backends.aoti:AotiBackend",
    "executorch": "modelc_build.backends.executorch:ExecuTorchBackend",
}
ENTRY_POINT_GROUP = "modelc_build.backends"


@lru_cache(maxsize=1)
def _registry() -> dict[str, str]:
    """The built-in backends and the installed plug-ins (a plug-in cannot replace a built-in)."""
    from importlib.metadata import entry_points

    found = {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    return {**found, **_REGISTRY}


def backend_names() -> list[str]:
    return sorted(_registry())


def backend_class(name: str) -> type[Backend]:
    """The class of backend `name` (imports its module, which loads no runtime)."""
    registry = _registry()
    if name not in registry:
        raise BackendUnavailable(f"no backend named '{name}'; known backends: {', '.join(backend_names())}")
    module_name, _, class_name = registry[name].partition(":")
    found: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return found


def capabilities(name: str) -> Capabilities:
    return backend_class(name).capabilities


def get_backend(name: str) -> Backend:
    return backend_class(name)()


def require(module: str, backend: str, extra: str) -> Any:
    """Import an optional dependency or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailable.missing_package(backend, module, extra) from None
