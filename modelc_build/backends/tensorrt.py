"""TensorRT engines, strongly typed: the precision is in the ONNX graph the engine is built from (the
plain graph for fp32, ModelOpt AutoCast's mixed graph for fp16, ModelOpt's Q/DQ graph for int8);
no builder precision flags, no calibrators (TensorRT 10/11 removed them).

One artifact per precision: `model.onnx` (the graph the engines were built from), one
`<gpu>.engine` per GPU generation (`sm86.engine`, …) and `engines.json`, which stamps each engine
with the TensorRT flavour and version, compute capability, CUDA major version, the graph's sha256,
the optimization profile and the build time.

Builders: TensorRT for RTX (`tensorrt_rtx`) builds ahead of time, with no GPU, for the generations it
targets; full TensorRT (`tensorrt`) builds for the GPU of the machine it runs on (SM90/SM100).
Running an engine needs its GPU: where none is here, the runner measures the engines' source graph
on onnxruntime's CPU provider and says so (`effective_settings`), and the engines are reported as
built, not run.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelc_build.backends import Backend, Capabilities, CompileRequest, Runner, pick
from modelc_build.backends.engine_process import build_in_own_process
from modelc_build.backends.engine_process import tensorrt_module as _module
from modelc_build.backends.onnxruntime import OnnxRuntimeRunner
from modelc_build.errors import BackendUnavailable, CompileError
from modelc_build.manifest import package_version, sha256_file
from modelc_build.recipe_types import TensorSpec

if TYPE_CHECKING:  # NumPy loads when an artifact runs: the backend's table is read without it
    import numpy as np

ENGINES_FILE = "engines.json"
FORMAT_VERSION = 1
RTX_PACKAGES = ("tensorrt-rtx-cu13-libs", "tensorrt-rtx-cu12-libs", "tensorrt-rtx-cu13", "tensorrt-rtx-cu12")
FULL_PACKAGES = ("tensorrt-cu13-libs", "tensorrt-cu12-libs", "tensorrt-cu13", "tensorrt-cu12", "tensorrt")
PRECISIONS = frozenset({"fp32", "fp16", "int8", "fp8", "int4-wo"})  # what a recipe may ask a tensorrt target for


def _by_generation() -> dict[str, dict[str, frozenset[str]]]:
    """flavour -> GPU generation -> the recipe precisions its engines run (modelc_build.gpus holds
    NVIDIA's table, with its sources)."""
    from modelc_build.gpus import PRECISION_TABLE

    return {flavour: {gpu: runs & PRECISIONS for gpu, runs in generations.items()} for flavour, generations in PRECISION_TABLE.items()}


PRECISIONS_BY_GENERATION = _by_generation()


def cuda_major(flavour: str) -> int | None:
    """The CUDA major version the installed TensorRT wheels were built for (their name says: -cu13)."""
    from modelc_build.gpus import RTX

    for package in RTX_PACKAGES if flavour == RTX else FULL_PACKAGES:
        if package_version(package) is not None and "-cu" in package:
            return int(package.split("-cu")[1].split("-")[0])
    return None


def profile(inputs: tuple[TensorSpec, ...], opt_batch: int, max_batch: int) -> dict[str, dict[str, list[int]]]:
    """min/opt/max shapes per input: the batch axis from 1 to max_batch where it is dynamic, other
    named axes at their example sizes (an image's height and width from data.preprocess)."""
    shapes = {}
    for spec in inputs:
        dynamic = spec.batch_axis is not None and isinstance(spec.shape[spec.batch_axis], str)
        sizes = (1, opt_batch, max_batch) if dynamic else (1, 1, 1)
        shapes[spec.name] = {name: list(spec.concrete_shape(size)) for name, size in zip(("min", "opt", "max"), sizes)}
    return shapes


class GraphOnCpuRunner(OnnxRuntimeRunner):
    """The engines' source graph on onnxruntime's CPU provider: what a machine without their GPU
    can measure. It says so, so that nobody mistakes it for the engines."""

    def __init__(self, graph: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...], why: str,
                 threads: int | None = None) -> None:
        super().__init__(graph, inputs, outputs, threads)
        self.why = why

    def effective_settings(self) -> dict[str, str]:
        return {"measured": "the engines' source graph on onnxruntime (CPU)", "engines": f"built, not run: {self.why}"}


class TensorRtRunner(Runner):
    """An engine on this machine's GPU, through Polygraphy's TensorRT runner (TensorRT for RTX with
    POLYGRAPHY_USE_TENSORRT_RTX)."""

    def __init__(self, engine: Path, flavour: str, gpu: str, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> None:
        super().__init__(inputs, outputs)
        self.engine = engine
        self.flavour = flavour
        self.gpu = gpu
        self._runner: Any = None

    def activate(self) -> None:
        from modelc_build.gpus import RTX

        if self.flavour == RTX:
            os.environ["POLYGRAPHY_USE_TENSORRT_RTX"] = "1"
            import polygraphy.config

            polygraphy.config.USE_TENSORRT_RTX = True
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(self.engine.read_bytes()))
        self._runner.activate()

    def deactivate(self) -> None:
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._runner is not None
        import numpy as np

        return {name: np.asarray(value) for name, value in self._runner.infer(feed).items()}

    def effective_settings(self) -> dict[str, str]:
        return {"measured": f"the {self.gpu} engine on this GPU", "flavour": self.flavour}


def read_engines(files: list[Path]) -> dict[str, Any]:
    stamps = next((f for f in files if f.name == ENGINES_FILE), None)
    if stamps is None:
        raise BackendUnavailable("a tensorrt artifact without engines.json: rebuild it with this modelc")
    engines: dict[str, Any] = json.loads(stamps.read_text())
    return engines


class TensorRtBackend(Backend):
    name = "tensorrt"
    capabilities = Capabilities(
        precisions=PRECISIONS, deploy_extra="tensorrt-rtx", build_extra="tensorrt-rtx", runtime_modules=("numpy", "polygraphy"),
        tools=("tensorrt", "tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "polygraphy"),
        options=("gpus", "max_batch", "opt_batch", "verify_on_gpu", "flavour"), gpu=True,
        graphs={"int8": "qdq", "fp16": "autocast", "fp8": "qdq-fp8", "int4-wo": "qdq-int4-wo"},
        gpu_precisions=PRECISIONS_BY_GENERATION)

    def compile(self, request: CompileRequest) -> list[Path]:
        from modelc_build.gpus import engine_builder, words

        graph = request.out_dir / "model.onnx"
        shutil.copyfile(request.onnx_model, graph)
        target = request.target
        shapes = profile(request.inputs, target.opt_batch, target.max_batch)
        engines, files = [], [graph]
        for gpu in target.gpus:
            builder = engine_builder(gpu, target.flavour)
            if builder.flavour is None:
                raise BackendUnavailable(f"{target.id}: {builder.reason}")
            started = time.perf_counter()
            engine = request.out_dir / f"{gpu}.engine"
            try:
                built = build_in_own_process(builder.flavour, graph, gpu, shapes, engine)
            except CompileError as error:
                raise CompileError(f"{target.id}: {error}") from None
            seconds = time.perf_counter() - started
            files.append(engine)
            engines.append({"file": engine.name, "gpu": gpu, "generation": words(gpu), "flavour": builder.flavour,
                            "version": _module(builder.flavour).__version__, "cuda_major": cuda_major(builder.flavour),
                            "sha256": sha256_file(engine), "size": engine.stat().st_size, "build_s": round(seconds, 2),
                            "reproducible_layout": bool(built.get("fixed_layout"))})
        stamps = {"format_version": FORMAT_VERSION, "precision": target.precision,
                  "graph": {"file": graph.name, "sha256": sha256_file(graph), "precision_in_graph": _graph_kind(target.precision)},
                  "profile": shapes, "engines": engines}
        (request.out_dir / ENGINES_FILE).write_text(json.dumps(stamps, indent=2, sort_keys=True) + "\n")
        return files + [request.out_dir / ENGINES_FILE]

    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
               config: dict[str, str] | None = None, threads: int | None = None) -> Runner:
        from modelc_build.gpus import not_run_reason, runnable_here

        stamps = read_engines(files)
        built = {e["gpu"]: e for e in stamps["engines"]}
        here = runnable_here(tuple(built))
        if here is not None:
            engine = built[here]
            return TensorRtRunner(next(f for f in files if f.name == engine["file"]), engine["flavour"], here, inputs, outputs)
        return GraphOnCpuRunner(pick(files, ".onnx"), inputs, outputs, not_run_reason(tuple(built)), threads)

    def versions(self) -> dict[str, str]:
        from modelc_build.gpus import FULL, RTX, installed

        return {flavour: _module(flavour).__version__ for flavour in (RTX, FULL) if installed(flavour)}


def _graph_kind(precision: str) -> str:
    return {"fp32": "fp32 (the simplified graph)", "fp16": "mixed fp16 (NVIDIA ModelOpt AutoCast)",
            "int8": "int8 Q/DQ (NVIDIA ModelOpt)", "fp8": "fp8 Q/DQ (NVIDIA ModelOpt)",
            "int4-wo": "int4 weight-only MatMul (NVIDIA ModelOpt, RTN)"}[precision]
