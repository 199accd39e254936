"""Runs a plan: export -> simplify -> compile each target -> verify -> release into a store.

Each step's output is cached under a key made from an explicit list of key material (input
digests, the step's parameters, tool versions); a step whose key is in the cache is skipped and
the log says why each step ran or not. Gates are applied after verification, from the recipe,
so changing a threshold re-runs nothing but the cheap gate check. The store sees only a finished,
gate-checked release, so a failure at any step leaves it as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from compiler import __version__
from compiler.accuracy import Evaluation, apply_gates, evaluation_from_dict
from compiler.cache import Cache, CacheEntry, cache_key
from compiler.errors import GateFailed, InputError
from compiler.manifest import (QUANTIZATION_NOTES, ArtifactEntry, FileEntry, build_manifest, content_digest, file_entries, package_version,
                               sha256_file, tree_digest)
from compiler.plan import QDQ_STEP, SENSITIVITY_STEP, Plan, Step, make_plan, uses_qdq_graph
from compiler.progress import BuildLog
from compiler.recipe import Dataset, Recipe, Target
from compiler.report import ArtifactReport, CalibrationData, Report, to_json_text, to_markdown
from compiler.stores import PushResult, StepCache, Store
from compiler.worker import accuracy_controlled, calibrate_qdq, compile_target, measure_layer_sensitivity

if TYPE_CHECKING:  # only a step that runs loads numpy, the data readers and the backends
    import numpy as np

    from compiler.signing import Signer

    from compiler.backends import Runner
    from compiler.data import Batch

RANDOM_EVALUATION_SAMPLES = 8
KEY_FORMAT = 2  # bump when the meaning of key material or the shape of step outputs changes
STEP_TOOLS = {
    "export": ("torch", "onnx", "onnxscript"),
    "simplify": ("onnx", "onnxsim"),
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
    "torchscript": ("torch",),
    "tensorrt": ("tensorrt",),
    "qdq": ("nvidia-modelopt", "onnxruntime", "onnx"),
    "verify": ("torch", "onnxruntime", "openvino", "numpy", "pillow"),
}

# Backends whose compile step is a plain file operation; the others run in a fresh process each
# (see compiler/worker.py for why).
IN_PROCESS_BACKENDS = {"onnxruntime"}

Log = BuildLog


@dataclass(frozen=True)
class BuildResult:
    location: str
    created: bool
    report: Report
    manifest: dict[str, Any]
    steps_run: int
    steps_cached: int


@dataclass(frozen=True)
class CompiledArtifact:
    target: Target
    entry: CacheEntry

    @property
    def files(self) -> list[Path]:
        return [self.entry.file(name) for name in self.entry.files]


def tool_versions(names: tuple[str, ...]) -> dict[str, str]:
    """Installed versions (read from package metadata: no heavy imports)."""
    return {"modelc": __version__, **{name: package_version(name) or "absent" for name in names}}


def source_material(recipe: Recipe) -> dict[str, Any]:
    """What identifies the model itself: file digests, factory and its arguments, declared I/O."""
    model = recipe.model
    material: dict[str, Any] = {"kind": model.kind, "inputs": [asdict(s) for s in model.inputs],
                                "outputs": list(model.outputs)}
    if model.kind == "torch":
        assert model.weights is not None and model.factory is not None
        if not model.weights.is_file():
            raise InputError(f"{model.weights}: the weights file does not exist: fix model.weights")
        material["weights"] = sha256_file(model.weights)
        location = model.factory.rsplit(":", 1)[0]
        factory_file = (model.base_dir / location) if location.endswith(".py") else None
        if factory_file is not None and not factory_file.is_file():
            raise InputError(f"{factory_file.resolve()}: the model factory file does not exist: fix model.factory")
        material["factory"] = {"function": model.factory.rsplit(":", 1)[1],
                               "code": sha256_file(factory_file) if factory_file else location,
                               "args": [list(kv) for kv in model.factory_args]}
    else:
        assert model.path is not None
        if not model.path.is_file():
            raise InputError(f"{model.path}: the {model.kind} file does not exist: fix model.path")
        material["file"] = sha256_file(model.path)
    return material


def _fresh_process_context() -> Any:
    """Worker processes forked from a server that has only imported the libraries: every task
    starts from the same state as a new process (so outputs do not depend on the schedule)
    without paying the imports of torch and OpenVINO once per step."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["compiler.worker", "openvino", "torch"])
    return context


def _start_fresh_process_server() -> None:
    """Start the server early: its imports overlap with the export step."""
    from multiprocessing import forkserver

    _fresh_process_context()
    forkserver.ensure_running()


@dataclass(frozen=True)
class StepRequest:
    """One step to look up or run: in this process (`produce`) or in a fresh one (`task`)."""

    step: Step
    material: dict[str, Any]
    produce: Callable[[Path], None] | None = None
    task: tuple[Callable[..., None], tuple[Any, ...]] | None = None  # picklable; called with (*args, out)


class _StepRunner:
    """Looks steps up in the caches, runs the missing ones under their keys' locks, logs why."""

    def __init__(self, cache: Cache, log: Log, force: bool, scratch: Path, shared: StepCache | None = None, jobs: int = 1) -> None:
        self.cache, self.log, self.force, self.scratch, self.shared = cache, log, force, scratch, shared
        self.jobs = max(1, jobs)
        self.before_first_run: Callable[[], None] | None = None  # called once, when a step is about to run
        self.ran = 0
        self.cached = 0

    def run(self, step: Step, material: dict[str, Any], produce: Callable[[Path], None]) -> CacheEntry:
        return self.run_all([StepRequest(step, material, produce=produce)])[0]

    def run_all(self, requests: list[StepRequest]) -> list[CacheEntry]:
        """Independent steps: cached ones are taken, the rest run side by side (up to `jobs`)."""
        keys = [step_key(r.step.kind, r.material) for r in requests]
        results: dict[int, CacheEntry] = {}
        missing: list[tuple[int, str]] = []
        for index, (request, key) in enumerate(zip(requests, keys)):
            entry, reason = self._lookup(request.step, key)
            if entry is not None:
                results[index] = entry
            else:
                missing.append((index, reason))
        with ExitStack() as locks:
            todo = []
            for index, reason in sorted(missing, key=lambda item: keys[item[0]]):  # one lock order: no deadlock
                locks.enter_context(self.cache.lock(keys[index]))
                entry, _ = (None, "") if self.force else self.cache.get(keys[index])
                if entry is not None:  # another build made it while we waited for the lock
                    self.cached += 1
                    self.log(f"✓ {requests[index].step.id} (made by a concurrent build, {keys[index][:12]})")
                    results[index] = entry
                else:
                    todo.append((index, reason))
            executed = self._execute([(requests[i], keys[i], reason) for i, reason in todo])
            for position, (index, _) in enumerate(todo):
                results[index] = executed[position]
        return [results[i] for i in range(len(requests))]

    def _lookup(self, step: Step, key: str) -> tuple[CacheEntry | None, str]:
        if self.force:
            return None, "--force"
        entry, reason = self.cache.get(key)
        if entry is not None:
            self.cached += 1
            self.log(f"✓ {step.id} (cached {key[:12]})")
            return entry, ""
        if self.shared is not None:
            shared_entry, _ = self.shared.get(key)
            if shared_entry is not None:
                self.cached += 1
                self.log(f"✓ {step.id} (from the store's step cache, {key[:12]})")
                return self.cache.put(key, step.id, shared_entry.path), ""
        return None, reason

    def _execute(self, todo: list[tuple[StepRequest, str, str]]) -> dict[int, CacheEntry]:
        from concurrent.futures import Future, ProcessPoolExecutor

        done: dict[int, CacheEntry] = {}
        if not todo:
            return done
        if self.before_first_run is not None:
            self.before_first_run()
            self.before_first_run = None
        outs = [Path(tempfile.mkdtemp(prefix=f"{request.step.kind}-", dir=self.scratch)) for request, _, _ in todo]
        started = {index: time.perf_counter() for index in range(len(todo))}
        isolated = [i for i, (request, _, _) in enumerate(todo) if request.task is not None]
        futures: dict[int, Future[None]] = {}
        with ExitStack() as stack:
            if isolated:
                pool = stack.enter_context(ProcessPoolExecutor(max_workers=min(self.jobs, len(isolated)),
                                                               mp_context=_fresh_process_context(),
                                                               max_tasks_per_child=1))
            for index, (request, key, reason) in enumerate(todo):
                self.log.start(request.step.id, f"▶ {request.step.id}: {request.step.description} [{reason}, key {key[:12]}]")
                started[index] = time.perf_counter()
                if request.task is not None:
                    function, args = request.task
                    futures[index] = pool.submit(function, *args, outs[index])
            for index, (request, key, _) in enumerate(todo):
                if request.task is None:
                    assert request.produce is not None
                    request.produce(outs[index])
                    done[index] = self._store(request, key, outs[index], started[index])
            for index, future in futures.items():
                future.result()  # re-raises the worker's error here
                request, key, _ = todo[index]
                done[index] = self._store(request, key, outs[index], started[index])
        return done

    def _store(self, request: StepRequest, key: str, out: Path, started: float) -> CacheEntry:
        entry = self.cache.put(key, request.step.id, out)
        if self.shared is not None:
            self.shared.put(key, request.step.id, out)
        shutil.rmtree(out, ignore_errors=True)
        self.ran += 1
        self.log.done(request.step.id, f"✓ {request.step.id} ({time.perf_counter() - started:.1f} s)")
        return entry


@dataclass(frozen=True)
class BuildOptions:
    failed_reports_dir: Path
    force: bool = False
    share_steps: bool = False  # pull and push step outputs through the store's step cache
    only_targets: tuple[str, ...] = ()  # build just these targets' steps; no verify, no release
    jobs: int = 1  # steps run side by side
    signer: Signer | None = None  # sign the release before it goes to the store


def build(recipe: Recipe, store: Store, log: Log, cache: Cache, options: BuildOptions) -> BuildResult | None:
    """Run the plan; returns None when only some targets' steps were asked for."""
    plan = make_plan(recipe)
    unknown = [t for t in options.only_targets if t not in {target.id for target in recipe.targets}]
    if unknown:
        raise InputError(f"--target {', '.join(unknown)}: the recipe builds {', '.join(t.id for t in recipe.targets)}")
    cache.root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"build-{recipe.name}-", dir=cache.root))
    shared = store.step_cache() if options.share_steps else None
    if options.share_steps and shared is None:
        raise InputError("--share-steps: this store keeps no step cache")
    try:
        steps = _StepRunner(cache, log, options.force, scratch, shared, options.jobs)
        if any(t.backend not in IN_PROCESS_BACKENDS or t.precision == "int8" for t in recipe.targets):
            steps.before_first_run = _start_fresh_process_server
        return _run(recipe, plan, store, steps, log, options, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if shared is not None and hasattr(shared, "close"):
            shared.close()


def _run(recipe: Recipe, plan: Plan, store: Store, steps: _StepRunner, log: Log, options: BuildOptions,
         scratch: Path) -> BuildResult | None:
    by_id = {step.id: step for step in plan.steps}
    reference_model = _reference_loader(recipe)
    source = source_material(recipe)

    exported = steps.run(by_id["export"], export_material(recipe, source),
                         lambda out: _export(recipe, reference_model, out / "model.onnx"))
    graph = exported
    if "simplify" in by_id:
        graph = steps.run(by_id["simplify"], simplify_material(exported),
                          lambda out: _simplify(exported.file("model.onnx"), out / "model.onnx"))
    onnx_model = graph.file("model.onnx")

    wanted = [t for t in recipe.targets if not options.only_targets or t.id in options.only_targets]
    # First wave, side by side: the Q/DQ calibration, the sensitivity measurement and every compile
    # step that does not need the Q/DQ graph; then the compile steps that do.
    first_wave = [t for t in wanted if not uses_qdq_graph(t)]
    extra: dict[str, StepRequest] = {}
    if len(first_wave) < len(wanted):
        extra[QDQ_STEP] = StepRequest(by_id[QDQ_STEP], qdq_material(recipe, graph), task=(calibrate_qdq, (recipe, onnx_model)))
    if SENSITIVITY_STEP in by_id and not options.only_targets:
        extra[SENSITIVITY_STEP] = StepRequest(by_id[SENSITIVITY_STEP], sensitivity_material(recipe, graph),
                                              task=(measure_layer_sensitivity, (recipe, onnx_model)))
    entries = steps.run_all([_compile_request(recipe, by_id, t, source, graph) for t in first_wave] + list(extra.values()))
    done = dict(zip([t.id for t in first_wave] + list(extra), entries))
    qdq = done.get(QDQ_STEP)
    if qdq is not None:
        second_wave = [t for t in wanted if uses_qdq_graph(t)]
        done.update(zip([t.id for t in second_wave],
                        steps.run_all([_compile_request(recipe, by_id, t, source, qdq) for t in second_wave])))
    sensitivity = json.loads(done[SENSITIVITY_STEP].file("sensitivity.json").read_text()) if SENSITIVITY_STEP in done else None
    compiled = [CompiledArtifact(t, done[t.id]) for t in wanted]
    if options.only_targets:
        log(f"✓ built {', '.join(options.only_targets)}: {steps.ran} step(s) run, {steps.cached} cached; "
            "verification and release happen in a full build")
        return None

    verified = steps.run(by_id["verify"], verify_material(recipe, source, compiled),
                         lambda out: _verify(recipe, reference_model, compiled, out / "evaluation.json"))
    report = _report(recipe, compiled, json.loads(verified.file("evaluation.json").read_text()), sensitivity)
    for line in _summary_lines(report):
        log(line)

    artifact_files = _artifact_files(graph, qdq, compiled)
    if report.passed:  # an identical stored version: nothing to copy, sign or push
        stored = store.stored_manifest(recipe.name, recipe.version)
        if stored is not None and stored.get("content_digest") == content_digest(artifact_files):
            log(f"✓ release (identical version already stored): {steps.ran} step(s) run, {steps.cached} cached")
            location = store.location(recipe.name, recipe.version)
            return BuildResult(location, False, report, stored, steps.ran, steps.cached)
    release = scratch / "release"
    _assemble(release, graph, qdq, compiled, report)
    _append_step_summary(release / "report.md")
    if not report.passed:
        kept = options.failed_reports_dir / recipe.name / recipe.version
        kept.mkdir(parents=True, exist_ok=True)
        for name in ("report.json", "report.md"):
            shutil.copyfile(release / name, kept / name)
        raise GateFailed(f"{len(report.failures())} accuracy gate(s) missed, nothing was stored: "
                         + "; ".join(report.failures()) + f". Report: {kept / 'report.md'}")
    manifest, result = _release(recipe, release, artifact_files, qdq, compiled, report, store, options.signer, log)
    log(f"{'✓ release' if result.created else '✓ release (identical version already stored)'}: "
        f"{steps.ran} step(s) run, {steps.cached} cached")
    return BuildResult(result.location, result.created, report, manifest, steps.ran, steps.cached)


def _compile_request(recipe: Recipe, by_id: dict[str, Step], target: Target, source: dict[str, Any],
                     input_graph: CacheEntry) -> StepRequest:
    """A compile step: in this process for plain file operations, in a fresh one otherwise."""
    material = compile_material(recipe, target, source, input_graph)
    model_file = input_graph.file("model.onnx")
    if target.backend in IN_PROCESS_BACKENDS:
        return StepRequest(by_id[f"compile:{target.id}"], material, produce=partial(compile_target, recipe, target, model_file))
    return StepRequest(by_id[f"compile:{target.id}"], material, task=(compile_target, (recipe, target, model_file)))


# --- key material: the explicit list of what each step's output depends on -------------------

def export_material(recipe: Recipe, source: dict[str, Any]) -> dict[str, Any]:
    return {"source": source, "export": asdict(recipe.export) if recipe.model.kind != "onnx" else {},
            "tools": tool_versions(STEP_TOOLS["export"])}


def simplify_material(exported: CacheEntry) -> dict[str, Any]:
    return {"graph": exported.files["model.onnx"], "tools": tool_versions(STEP_TOOLS["simplify"])}


def qdq_material(recipe: Recipe, graph: CacheEntry) -> dict[str, Any]:
    """Calibration is cached by (graph digest, data digest, method and parameters, tool versions)."""
    return {"graph": graph.files["model.onnx"], "calibration": _dataset_material(recipe.calibration, recipe, "calibration"),
            "quantization": asdict(recipe.quantization), "tools": tool_versions(STEP_TOOLS["qdq"])}


def sensitivity_material(recipe: Recipe, graph: CacheEntry) -> dict[str, Any]:
    return {"graph": graph.files["model.onnx"], "calibration": _dataset_material(recipe.calibration, recipe, "calibration"),
            "evaluation": _evaluation_material(recipe), "task": asdict(recipe.task),
            "quantization": asdict(recipe.quantization), "tools": tool_versions(STEP_TOOLS["qdq"])}


def compile_material(recipe: Recipe, target: Target, source: dict[str, Any], graph: CacheEntry | None) -> dict[str, Any]:
    """TorchScript is made from the torch model, so its input is the source, not the graph; an int8
    build also depends on the calibration data and how it is read, except where its input is the
    Q/DQ graph, whose digest already covers them."""
    if target.backend == "torchscript":
        graph_material: Any = source
    else:
        assert graph is not None
        graph_material = graph.files["model.onnx"]
    material = {"target": asdict(target), "graph": graph_material, "tools": tool_versions(STEP_TOOLS[target.backend])}
    if target.precision == "int8" and not uses_qdq_graph(target):
        material["calibration"] = _dataset_material(recipe.calibration, recipe, "calibration")
        material["quantization"] = asdict(recipe.quantization)
        material["tools"] = tool_versions(STEP_TOOLS[target.backend] + ("nncf",))
    if accuracy_controlled(recipe, target):  # the search scores candidates on the evaluation set
        material["accuracy_control"] = {"max_drop": recipe.gate_for(target.precision).max_metric_drop,
                                        "task": asdict(recipe.task), "evaluation": _evaluation_material(recipe)}
    return material


def verify_material(recipe: Recipe, source: dict[str, Any], compiled: list[CompiledArtifact]) -> dict[str, Any]:
    """Gates are not key material: they are applied to the cached measurements afterwards."""
    return {"reference": source, "artifacts": {a.target.id: a.entry.files for a in compiled},
            "data": _evaluation_material(recipe), "task": asdict(recipe.task), "latency": asdict(recipe.latency),
            "tools": tool_versions(STEP_TOOLS["verify"])}


def step_key(kind: str, material: dict[str, Any]) -> str:
    return cache_key({"key_format": KEY_FORMAT, "step": kind, **material})


def plan_status(recipe: Recipe, plan: Plan, cache: Cache) -> dict[str, str]:
    """Whether each step of the plan is cached, following keys as far as cached outputs allow."""
    by_id = {step.id: step for step in plan.steps}
    status = {step.id: "will run" for step in plan.steps}
    source = source_material(recipe)

    def lookup(step_id: str, material: dict[str, Any]) -> CacheEntry | None:
        entry, _ = cache.get(step_key(by_id[step_id].kind, material))
        if entry is not None:
            status[step_id] = f"cached {entry.key[:12]}"
        return entry

    exported = lookup("export", export_material(recipe, source))
    graph = exported
    if exported is not None and "simplify" in by_id:
        graph = lookup("simplify", simplify_material(exported))
    qdq = None
    if graph is not None and QDQ_STEP in by_id:
        qdq = lookup(QDQ_STEP, qdq_material(recipe, graph))
    if graph is not None and SENSITIVITY_STEP in by_id:
        lookup(SENSITIVITY_STEP, sensitivity_material(recipe, graph))
    compiled = []
    for target in recipe.targets:
        input_graph = qdq if uses_qdq_graph(target) else graph
        if target.backend == "torchscript" or input_graph is not None:
            entry = lookup(f"compile:{target.id}", compile_material(recipe, target, source, input_graph))
            if entry is not None:
                compiled.append(CompiledArtifact(target, entry))
    if len(compiled) == len(recipe.targets):
        lookup("verify", verify_material(recipe, source, compiled))
    status["release"] = "runs every build (gates, manifest, store)"
    return status


def _reference_loader(recipe: Recipe) -> Callable[[], Any]:
    """Loads the torch reference at most once, and only if a step needs it."""

    @lru_cache(maxsize=1)
    def load() -> Any:
        from compiler.sources import load_torch_model

        return load_torch_model(recipe.model)

    return load


def _export(recipe: Recipe, reference_model: Callable[[], Any], destination: Path) -> None:
    if recipe.model.kind == "onnx":
        _read_onnx_source(recipe, destination)
        return
    from compiler.export import check_model_accepts_inputs, export_onnx

    model = reference_model()
    check_model_accepts_inputs(model, recipe.model.inputs, recipe.model.outputs)
    export_onnx(model, recipe.model.inputs, recipe.model.outputs, recipe.export, destination)


def _simplify(source: Path, destination: Path) -> None:
    from compiler.export import simplify_onnx

    simplify_onnx(source, destination)


def _read_onnx_source(recipe: Recipe, destination: Path) -> None:
    import onnx

    path = recipe.model.path
    assert path is not None
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InputError(f"{path}: not a valid ONNX model ({str(exc).splitlines()[0][:200]})") from None
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i.name for i in model.graph.input if i.name not in initializers]
    graph_outputs = [o.name for o in model.graph.output]
    declared_inputs = [s.name for s in recipe.model.inputs]
    if graph_inputs != declared_inputs or graph_outputs != list(recipe.model.outputs):
        raise InputError(f"{path}: the graph's inputs {graph_inputs} and outputs {graph_outputs} differ from the recipe's "
                         f"model.inputs {declared_inputs} and model.outputs {list(recipe.model.outputs)}: make them match")
    shutil.copyfile(path, destination)


def _evaluation_material(recipe: Recipe) -> dict[str, Any]:
    if recipe.evaluation is None:
        return {"random_samples": RANDOM_EVALUATION_SAMPLES}
    return _dataset_material(recipe.evaluation, recipe, "evaluation")


def _dataset_material(dataset: Dataset | None, recipe: Recipe, role: str) -> dict[str, Any]:
    if dataset is None:
        raise InputError(f"this build needs data.{role} in the recipe")
    if not dataset.path.exists():
        raise InputError(f"{dataset.path}: the data path does not exist: fix data.{role}.path in the recipe")
    digest = _yielded_data_digest(dataset, recipe) if dataset.format == "python" else tree_digest(dataset.path)
    return {"digest": digest, "format": dataset.format, "labels": dataset.labels, "function": dataset.function,
            "samples": dataset.samples, "batch_size": dataset.batch_size, "shuffle": dataset.shuffle,
            "seed": dataset.seed, "preprocess": asdict(recipe.preprocess) if recipe.preprocess else None}


def _yielded_data_digest(dataset: Dataset, recipe: Recipe) -> str:
    """A data function may read anything, so its key is the data it yields (one streamed pass),
    not its source file."""
    import hashlib

    from compiler.data import DataReader

    digest = hashlib.sha256()
    for batch in DataReader(dataset, recipe.model.inputs, recipe.preprocess).batches():
        for name in sorted(batch.inputs):
            array = batch.inputs[name]
            digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def _reference_runner(recipe: Recipe, reference_model: Callable[[], Any]) -> tuple[Runner, str]:
    if recipe.model.kind == "onnx":
        from compiler.backends.onnxruntime import OnnxRuntimeRunner

        assert recipe.model.path is not None
        return OnnxRuntimeRunner(recipe.model.path, recipe.model.inputs, recipe.model.outputs), \
            f"onnxruntime FP32 on {recipe.model.path.name}"
    from compiler.backends.torchscript import TorchModuleRunner

    label = "PyTorch eager" if recipe.model.kind == "torch" else "the TorchScript source"
    return TorchModuleRunner(recipe.model.inputs, recipe.model.outputs, module=reference_model()), label


def _evaluation_batches(recipe: Recipe) -> tuple[Callable[[], Iterator[Batch]], str]:
    from compiler.data import Batch, DataReader

    if recipe.evaluation is not None:
        reader = DataReader.for_recipe(recipe.evaluation, recipe)
        return reader.batches, f"{recipe.evaluation.path.name}"
    from compiler.export import example_inputs

    def random_batches() -> Iterator[Batch]:
        arrays = example_inputs(recipe.model.inputs, dynamic_size=RANDOM_EVALUATION_SAMPLES, seed=1)
        if not all(isinstance(s.shape[0], str) for s in recipe.model.inputs):
            arrays = example_inputs(recipe.model.inputs, dynamic_size=1, seed=1)
        yield Batch({s.name: a for s, a in zip(recipe.model.inputs, arrays)}, [f"random[{i}]" for i in range(len(arrays[0]))])

    return random_batches, "seeded random inputs (no data.evaluation)"


def _verify(recipe: Recipe, reference_model: Callable[[], Any], compiled: list[CompiledArtifact], destination: Path) -> None:
    """Measure every artifact against the reference; writes evaluation.json (gates come later)."""
    from compiler.accuracy import evaluate, evaluation_to_dict, measure_latency
    from compiler.backends import get_backend

    batches, data_label = _evaluation_batches(recipe)
    reference, reference_label = _reference_runner(recipe, reference_model)
    with ExitStack() as stack:
        stack.enter_context(reference)
        runners = {a.target.id: stack.enter_context(get_backend(a.target.backend).runner(a.files, recipe.model.inputs,
                                                                                         recipe.model.outputs))
                   for a in compiled}
        evaluations = evaluate(reference, runners, batches(), recipe.model.inputs, recipe.model.outputs, recipe.task)
        single = _single_sample_feed(batches())
        reference_latency = measure_latency(reference, single, recipe.latency.runs, recipe.latency.warmup)
        latencies = {key: measure_latency(runner, single, recipe.latency.runs, recipe.latency.warmup)
                     for key, runner in runners.items()}
    result = {"reference": reference_label, "data": data_label, "reference_latency_ms": reference_latency,
              "artifacts": {key: {**evaluation_to_dict(e), "latency_ms": latencies[key]} for key, e in evaluations.items()}}
    destination.write_text(json.dumps(result, indent=2, sort_keys=True))


def _single_sample_feed(batches: Iterator[Batch]) -> dict[str, np.ndarray]:
    import numpy as np

    first = next(batches)
    return {name: np.ascontiguousarray(array[:1]) for name, array in first.inputs.items()}


def _report(recipe: Recipe, compiled: list[CompiledArtifact], measured: dict[str, Any],
            sensitivity: dict[str, Any] | None = None) -> Report:
    artifacts = []
    reference_metric = None
    samples = 0
    for artifact in compiled:
        data = measured["artifacts"][artifact.target.id]
        evaluation: Evaluation = evaluation_from_dict(data)
        evaluation.gates = apply_gates(evaluation, recipe.gate_for(artifact.target.precision))
        files = [(f"{artifact.target.id}/{name}", (artifact.entry.file(name)).stat().st_size) for name in artifact.entry.files]
        notes = artifact.entry.files.get(QUANTIZATION_NOTES) and json.loads(artifact.entry.file(QUANTIZATION_NOTES).read_text())
        artifacts.append(ArtifactReport(artifact.target.id, artifact.target.backend, artifact.target.precision, files,
                                        evaluation, data["latency_ms"], notes or None))
        samples = evaluation.samples
        if evaluation.task is not None:
            reference_metric = evaluation.task.reference
    calibration = None
    noted = [a.quantization["calibration_samples_available"] for a in artifacts
             if a.quantization and "calibration_samples_available" in a.quantization]
    if recipe.calibration is not None and noted:
        available = max(noted)
        where = os.path.relpath(recipe.calibration.path, recipe.path.parent)  # as the recipe names it
        calibration = CalibrationData(where, available, recipe.calibration.samples)
    if sensitivity is not None:  # the worst layers, as many as the recipe asks for
        sensitivity = {**sensitivity, "layers_measured": len(sensitivity["layers"]),
                       "layers": sensitivity["layers"][:recipe.quantization.sensitivity_layers]}
    return Report(recipe.name, recipe.version, measured["reference"], measured["data"], samples, recipe.task.type,
                  reference_metric, measured["reference_latency_ms"], artifacts, calibration, sensitivity)


def _assemble(release: Path, graph: CacheEntry, qdq: CacheEntry | None, compiled: list[CompiledArtifact],
              report: Report) -> None:
    (release / "onnx").mkdir(parents=True)
    shutil.copyfile(graph.file("model.onnx"), release / "onnx" / "model.onnx")
    if qdq is not None:  # the Q/DQ graph, for TensorRT builds elsewhere
        (release / "onnx-int8").mkdir()
        for name in qdq.files:
            shutil.copyfile(qdq.file(name), release / "onnx-int8" / name)
    for artifact in compiled:
        folder = release / artifact.target.id
        folder.mkdir()
        for name in artifact.entry.files:
            shutil.copyfile(artifact.entry.file(name), folder / name)
    (release / "report.json").write_text(to_json_text(report))
    (release / "report.md").write_text(to_markdown(report))


def _summary_lines(report: Report) -> list[str]:
    lines = []
    for a in report.artifacts:
        task = ""
        if a.evaluation.task is not None:
            t = a.evaluation.task
            task = f", {t.name} {t.value:.2f}% (reference {t.reference:.2f}%)"
        worst = min((m.cosine for m in a.evaluation.outputs), default=1.0)
        latency = f", {a.latency_ms:.2f} ms" if a.latency_ms is not None else ""
        verdict = "pass" if a.evaluation.passed else "FAIL"
        lines.append(f"  {a.target}: cosine {worst:.6f}{task}{latency} [{verdict}]")
    return lines


def _append_step_summary(markdown: Path) -> None:
    """In GitHub Actions, the report becomes the job summary."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as handle:
            handle.write(markdown.read_text())


def _artifact_files(graph: CacheEntry, qdq: CacheEntry | None, compiled: list[CompiledArtifact]) -> list[FileEntry]:
    """The release's model files with digests and sizes, read off the cache entries (whose digests
    were checked this build) rather than re-hashed."""
    sources = {"onnx/model.onnx": (graph, "model.onnx")}
    if qdq is not None:
        sources.update({f"onnx-int8/{name}": (qdq, name) for name in qdq.files})
    sources.update({f"{a.target.id}/{name}": (a.entry, name) for a in compiled for name in a.entry.files})
    return [FileEntry(path, entry.files[name], entry.file(name).stat().st_size)
            for path, (entry, name) in sorted(sources.items())]


def _release(recipe: Recipe, release: Path, artifact_files: list[FileEntry], qdq: CacheEntry | None,
             compiled: list[CompiledArtifact], report: Report, store: Store, signer: Signer | None,
             log: Log) -> tuple[dict[str, Any], PushResult]:
    target_files = {a.target.id: [f"{a.target.id}/{name}" for name in a.entry.files] for a in compiled}
    report_files = file_entries(release, ["report.json", "report.md"])
    entries = [ArtifactEntry("onnx", "onnx", "fp32", ["onnx/model.onnx"])]
    if qdq is not None:
        entries.append(ArtifactEntry("onnx-int8", "onnx", "int8", [f"onnx-int8/{name}" for name in sorted(qdq.files)]))
    entries += [
        ArtifactEntry(a.target.id, a.target.backend, a.target.precision, target_files[a.target.id]) for a in compiled]
    manifest = build_manifest(name=recipe.name, version=recipe.version, recipe_file=recipe.path,
                              recipe_digest=recipe.digest, exporter=recipe.export.exporter if recipe.model.kind != "onnx" else "none",
                              opset=recipe.export.opset, simplified=recipe.export.simplify, artifacts=entries,
                              artifact_files=artifact_files, report_files=report_files, passed=report.passed)
    (release / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if signer is not None:  # after every gate passed; the signature covers every file above
        from compiler.signing import sign_release

        sign_release(release, signer)
        log(f"✓ signed with {signer.describe()}")
    result = store.push(release, recipe.name, recipe.version, content_digest(artifact_files))
    return manifest, result
