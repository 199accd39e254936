"""Runs a plan: export -> simplify -> compile each target -> verify -> release into a store.

Everything is written into a private work folder first; the store sees only a finished,
gate-checked release, so a failure at any step leaves the store as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from compiler.accuracy import Evaluation, apply_gates, evaluate, measure_latency, reference_task_metric
from compiler.backends import CompileRequest, Runner, get_backend
from compiler.data import Batch, DataReader
from compiler.errors import GateFailed, InputError
from compiler.manifest import ArtifactEntry, build_manifest, content_digest, file_entries
from compiler.plan import Plan, make_plan
from compiler.recipe import Recipe, Target
from compiler.report import ArtifactReport, Report, to_json_text, to_markdown
from compiler.stores import PushResult, Store

RANDOM_EVALUATION_SAMPLES = 8


@dataclass(frozen=True)
class BuildResult:
    location: str
    created: bool
    report: Report
    manifest: dict[str, Any]


Log = Callable[[str], None]


@dataclass(frozen=True)
class CompiledArtifact:
    target: Target
    files: list[Path]


def build(recipe: Recipe, store: Store, log: Log, failed_reports_dir: Path) -> BuildResult:
    plan = make_plan(recipe)
    work = Path(tempfile.mkdtemp(prefix=f"modelc-{recipe.name}-"))
    try:
        return _run(recipe, plan, store, work, log, failed_reports_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _timed(log: Log, step_id: str, description: str) -> "_StepTimer":
    return _StepTimer(log, step_id, description)


class _StepTimer:
    def __init__(self, log: Log, step_id: str, description: str) -> None:
        self.log, self.step_id, self.description = log, step_id, description

    def __enter__(self) -> None:
        self.started = time.perf_counter()
        self.log(f"▶ {self.step_id}: {self.description}")

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is None:
            self.log(f"✓ {self.step_id} ({time.perf_counter() - self.started:.1f} s)")


def _run(recipe: Recipe, plan: Plan, store: Store, work: Path, log: Log, failed_reports_dir: Path) -> BuildResult:
    release = work / "release"
    (release / "onnx").mkdir(parents=True)
    steps = {step.id: step for step in plan.steps}
    reference_model = _reference_loader(recipe)

    with _timed(log, "export", steps["export"].description):
        exported = work / "exported.onnx"
        _export(recipe, reference_model, exported)
    onnx_model = release / "onnx" / "model.onnx"
    if "simplify" in steps:
        with _timed(log, "simplify", steps["simplify"].description):
            from compiler.export import simplify_onnx

            simplify_onnx(exported, onnx_model)
    else:
        shutil.copyfile(exported, onnx_model)

    compiled: list[CompiledArtifact] = []
    versions: dict[str, str] = {}
    for target in recipe.targets:
        step = steps[f"compile:{target.id}"]
        with _timed(log, step.id, step.description):
            backend = get_backend(target.backend)
            out_dir = release / target.id
            out_dir.mkdir()
            torch_model = reference_model if recipe.model.kind != "onnx" else None
            files = backend.compile(CompileRequest(target, onnx_model, recipe.model.inputs, recipe.model.outputs,
                                                   out_dir, torch_model))
            versions.update(backend.versions())
            compiled.append(CompiledArtifact(target, files))

    with _timed(log, "verify", steps["verify"].description):
        report = _verify(recipe, reference_model, onnx_model, compiled, release)
    for line in _summary_lines(report):
        log(line)

    (release / "report.json").write_text(to_json_text(report))
    (release / "report.md").write_text(to_markdown(report))
    _append_step_summary(release / "report.md")
    if not report.passed:
        kept = failed_reports_dir / recipe.name / recipe.version
        kept.mkdir(parents=True, exist_ok=True)
        for name in ("report.json", "report.md"):
            shutil.copyfile(release / name, kept / name)
        raise GateFailed(f"{len(report.failures())} accuracy gate(s) missed, nothing was stored: "
                         + "; ".join(report.failures()) + f". Report: {kept / 'report.md'}")

    with _timed(log, "release", steps["release"].description):
        manifest, result = _release(recipe, release, compiled, report, store)
    return BuildResult(result.location, result.created, report, manifest)


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


def _read_onnx_source(recipe: Recipe, destination: Path) -> None:
    import onnx

    path = recipe.model.path
    assert path is not None
    if not path.is_file():
        raise InputError(f"{path}: the ONNX file does not exist: fix model.path")
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


def _reference_runner(recipe: Recipe, reference_model: Callable[[], Any], onnx_source: Path) -> tuple[Runner, str]:
    if recipe.model.kind == "onnx":
        from compiler.backends.onnxruntime import OnnxRuntimeRunner

        assert recipe.model.path is not None
        return OnnxRuntimeRunner(recipe.model.path, recipe.model.inputs, recipe.model.outputs), \
            f"onnxruntime FP32 on {recipe.model.path.name}"
    from compiler.backends.torchscript import TorchModuleRunner

    label = "PyTorch eager" if recipe.model.kind == "torch" else "the TorchScript source"
    return TorchModuleRunner(recipe.model.inputs, recipe.model.outputs, module=reference_model()), label


def _evaluation_batches(recipe: Recipe) -> tuple[Callable[[], Iterator[Batch]], str]:
    if recipe.evaluation is not None:
        reader = DataReader(recipe.evaluation, recipe.model.inputs, recipe.preprocess, recipe.task.classes)
        return reader.batches, f"{recipe.evaluation.path.name}"
    from compiler.export import example_inputs

    def random_batches() -> Iterator[Batch]:
        arrays = example_inputs(recipe.model.inputs, dynamic_size=RANDOM_EVALUATION_SAMPLES, seed=1)
        if not all(isinstance(s.shape[0], str) for s in recipe.model.inputs):
            arrays = example_inputs(recipe.model.inputs, dynamic_size=1, seed=1)
        yield Batch({s.name: a for s, a in zip(recipe.model.inputs, arrays)}, [f"random[{i}]" for i in range(len(arrays[0]))])

    return random_batches, "seeded random inputs (no data.evaluation)"


def _verify(recipe: Recipe, reference_model: Callable[[], Any], onnx_model: Path, compiled: list[CompiledArtifact],
            release: Path) -> Report:
    batches, data_label = _evaluation_batches(recipe)
    reference, reference_label = _reference_runner(recipe, reference_model, onnx_model)
    with ExitStack() as stack:
        stack.enter_context(reference)
        runners = {a.target.id: stack.enter_context(get_backend(a.target.backend).runner(a.files, recipe.model.inputs,
                                                                                         recipe.model.outputs))
                   for a in compiled}
        evaluations = evaluate(reference, runners, batches(), recipe.model.inputs, recipe.model.outputs, recipe.task)
        if not evaluations:
            raise InputError("the recipe has no targets to verify")
        single = _single_sample_feed(batches(), recipe)
        reference_latency = measure_latency(reference, single, recipe.latency.runs, recipe.latency.warmup)
        latencies = {key: measure_latency(runner, single, recipe.latency.runs, recipe.latency.warmup)
                     for key, runner in runners.items()}
    artifacts = []
    for artifact in compiled:
        evaluation: Evaluation = evaluations[artifact.target.id]
        evaluation.gates = apply_gates(evaluation, recipe.gate_for(artifact.target.precision))
        files = [(f.relative_to(release).as_posix(), f.stat().st_size) for f in artifact.files]
        artifacts.append(ArtifactReport(artifact.target.id, artifact.target.backend, artifact.target.precision, files,
                                        evaluation, latencies[artifact.target.id]))
    samples = next(iter(evaluations.values())).samples
    return Report(recipe.name, recipe.version, reference_label, data_label, samples, recipe.task.type,
                  reference_task_metric(evaluations), reference_latency, artifacts)


def _single_sample_feed(batches: Iterator[Batch], recipe: Recipe) -> dict[str, np.ndarray]:
    first = next(batches)
    return {name: np.ascontiguousarray(array[:1]) for name, array in first.inputs.items()}


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


def _release(recipe: Recipe, release: Path, compiled: list[CompiledArtifact], report: Report,
             store: Store) -> tuple[dict[str, Any], PushResult]:
    artifact_paths = ["onnx/model.onnx"] + [f.relative_to(release).as_posix() for a in compiled for f in a.files]
    artifact_files = file_entries(release, artifact_paths)
    report_files = file_entries(release, ["report.json", "report.md"])
    entries = [ArtifactEntry("onnx", "onnx", "fp32", ["onnx/model.onnx"])] + [
        ArtifactEntry(a.target.id, a.target.backend, a.target.precision,
                      [f.relative_to(release).as_posix() for f in a.files]) for a in compiled]
    manifest = build_manifest(name=recipe.name, version=recipe.version, recipe_file=recipe.path,
                              recipe_digest=recipe.digest, exporter=recipe.export.exporter if recipe.model.kind != "onnx" else "none",
                              opset=recipe.export.opset, simplified=recipe.export.simplify, artifacts=entries,
                              artifact_files=artifact_files, report_files=report_files, passed=report.passed)
    (release / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    result = store.push(release, recipe.name, recipe.version, content_digest(artifact_files))
    return manifest, result
