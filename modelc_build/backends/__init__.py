"""Backends: one module per target, registered by name and imported only when used.

A backend turns the simplified ONNX graph (or, for TorchScript, the torch model) into files,
and gives a `Runner` over those files for the accuracy check and the latency measurement.
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator

import numpy as np

from modelc_build.errors import BackendUnavailable, InputError
from modelc_build.manifest import QUANTIZATION_NOTES
from modelc_build.recipe import Quantization, Target, Task, TensorSpec


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


class Backend(ABC):
    name: str = ""

    @abstractmethod
    def compile(self, request: CompileRequest) -> list[Path]:
        """Write the artifact's files into request.out_dir and return them."""

    @abstractmethod
    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
               config: dict[str, str] | None = None) -> Runner:
        """`config`: runtime settings as a deploy stage would pass them (OpenVINO compile_model
        properties); None or {} is the runtime's own defaults."""

    def versions(self) -> dict[str, str]:
        """Versions of the libraries this backend used, for the manifest."""
        return {}


_REGISTRY: dict[str, str] = {
    "onnxruntime": "modelc_build.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "modelc_build.backends.openvino:OpenVinoBackend",
    "torchscript": "modelc_build.backends.torchscript:TorchScriptBackend",
    "tensorrt": "modelc_build.backends.tensorrt:TensorRtBackend",
}


def backend_names() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    if name not in _REGISTRY:
        raise BackendUnavailable(f"no backend named '{name}'; known backends: {', '.join(backend_names())}")
    module_name, _, class_name = _REGISTRY[name].partition(":")
    module = importlib.import_module(module_name)
    backend: Backend = getattr(module, class_name)()
    return backend


def require(module: str, backend: str, extra: str) -> Any:
    """Import an optional dependency or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise BackendUnavailable.missing_package(backend, module, extra) from None
