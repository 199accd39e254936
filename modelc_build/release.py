"""What a version is: the measured artifacts judged by the gates, then report → manifest →
signature → store.

It reads only the step outputs the engine produced (cache entries) and the recipe's gates; gates
are applied here, to cached measurements, so changing a threshold re-runs no step. The store sees
only a finished, gate-checked, signed release, so a failure leaves it as it was.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from modelc_build.accuracy import Evaluation, GateCheck, apply_gates, evaluation_from_dict
from modelc_build.cache import CacheEntry
from modelc_build.emulation import MIN_SAMPLES
from modelc_build.errors import GateFailed, ModelcError, VersionTaken
from modelc_build.golden import FOLDER as GOLDEN_FOLDER
from modelc_build.manifest import QUANTIZATION_NOTES, REPORT_FILES, ArtifactEntry, FileEntry, build_manifest, content_digest, file_entries
from modelc_build.recipe_types import Recipe, Target
from modelc_build.report import ArtifactReport, CalibrationData, Measurement, Report, to_json_text, to_markdown
from modelc_build.steps.export import EXPORT_NOTES, EXPORT_STEP
from modelc_build.steps.latency import LATENCY_FILE, REFERENCE_LATENCY_STEP, latency_step_id
from modelc_build.steps.verify import EVALUATION_FILE, GOLDEN_STEP, REFERENCE_STEP, Setting, verify_step_id
from modelc_build.steps.worth import WORTH_FILE, worth_step_id

GOLDEN_NOTES = "golden-step.json"
ENGINES_FILE = "engines.json"  # a tensorrt artifact's engine stamps (modelc_build/backends/tensorrt.py)

if TYPE_CHECKING:
    from modelc_build.signing import Signer
    from modelc_build.stores import PushResult, Store


@dataclass(frozen=True)
class CompiledArtifact:
    target: Target
    entry: CacheEntry


@dataclass(frozen=True)
class Measured:
    """Everything the engine produced that a release is made of."""

    graph: CacheEntry  # the ONNX graph shipped as onnx/model.onnx
    qdq: CacheEntry | None  # the Q/DQ INT8 graph, shipped as onnx-int8/
    golden: CacheEntry | None  # the golden set, shipped as golden/
    artifacts: list[CompiledArtifact]
    entries: dict[str, CacheEntry]  # every step's output by step id
    settings: dict[str, list[Setting]]  # per target: as deployed first, then the other measurements
    cpus: list[dict[str, Any]] | None = None  # verify.cpus: each emulated or covered by the build machine's class
    skipped: list[str] | None = None  # what --skip-unavailable left out, and why

    def json(self, step_id: str, name: str) -> Any:
        entry = self.entries.get(step_id)
        return json.loads(entry.file(name).read_text()) if entry is not None else None


@dataclass(frozen=True)
class Released:
    location: str
    created: bool
    report: Report
    manifest: dict[str, Any]
    digest: str | None = None  # sha256:… of the stored release's manifest


def make_report(recipe: Recipe, measured: Measured, sensitivity_step: str, data: dict[str, Any] | None = None) -> Report:
    from modelc_build.host import cpu_info

    reference = measured.json(REFERENCE_STEP, "reference.json")
    artifacts = []
    reference_metric = None
    for artifact in measured.artifacts:
        target = artifact.target
        deployed = measured.json(verify_step_id(target), EVALUATION_FILE)
        evaluation = _judged(recipe, target, deployed)
        others = [_measurement(recipe, target, setting, measured.json(verify_step_id(target) + setting.suffix, EVALUATION_FILE))
                  for setting in measured.settings[target.id][1:]]
        files = [(f"{target.id}/{name}", artifact.entry.file(name).stat().st_size) for name in artifact.entry.files]
        notes = json.loads(artifact.entry.file(QUANTIZATION_NOTES).read_text()) if QUANTIZATION_NOTES in artifact.entry.files else None
        notes = _with_speed(notes, measured.json(worth_step_id(target), WORTH_FILE))
        timing = measured.json(latency_step_id(target), LATENCY_FILE)
        engines = artifact.entry.files.get(ENGINES_FILE) and json.loads(artifact.entry.file(ENGINES_FILE).read_text())
        artifacts.append(ArtifactReport(target.id, target.backend, target.precision, files, evaluation,
                                        _latency_ms(measured, latency_step_id(target)), notes or None,
                                        dict(measured.settings[target.id][0].config), _latency_summary(timing), others,
                                        deployed.get("runtime") or {}, _golden_check(recipe, target, deployed, measured),
                                        engines or None))
        if evaluation.task is not None:
            reference_metric = evaluation.task.reference
    return Report(recipe.name, recipe.version, reference["reference"], reference["data"], reference["samples"],
                  recipe.task.type, reference_metric, _latency_ms(measured, REFERENCE_LATENCY_STEP), artifacts,
                  _calibration(recipe, artifacts), _sensitivity(recipe, measured.json(sensitivity_step, "sensitivity.json")),
                  cpu_info(), data, _export_notes(measured), measured.cpus, measured.json(GOLDEN_STEP, GOLDEN_NOTES),
                  measured.skipped or None, _hints(recipe, reference))


def _with_speed(notes: dict[str, Any] | None, worth: dict[str, Any] | None) -> dict[str, Any] | None:
    """A mixed graph's quantization notes with its speed against FP32, timed by its worth step."""
    if not notes or not worth or not worth.get("judged") or "fallback" not in notes:
        return notes
    return {**notes, "fallback": {**notes["fallback"], "latency_vs_fp32": worth["latency_vs_fp32"], "fp32_ms": worth["fp32_ms"]}}


def _hints(recipe: Recipe, reference: dict[str, Any]) -> list[str] | None:
    """A model declared generic whose output is shaped like a detector: say which task to declare."""
    from modelc_build.tasks import layout_hint

    if recipe.task.type not in ("generic", "none"):
        return None
    found = [hint for name, shape in (reference.get("shapes") or {}).items() if (hint := layout_hint(name, shape))]
    return found or None


def _export_notes(measured: Measured) -> dict[str, Any] | None:
    """Which exporter ran (and why), and whether the graph was simplified (and why not)."""
    from modelc_build.steps.simplify import SIMPLIFY_NOTES, SIMPLIFY_STEP

    notes = measured.json(EXPORT_STEP, EXPORT_NOTES)
    simplified = measured.json(SIMPLIFY_STEP, SIMPLIFY_NOTES)
    if notes is not None and simplified is not None:
        return {**notes, "simplify": simplified}
    return notes


def _golden_check(recipe: Recipe, target: Target, deployed: dict[str, Any], measured: Measured) -> dict[str, Any] | None:
    """What the build's own golden-set check saw, and the tolerances a deploy machine is held to."""
    from modelc_build.accuracy import OutputMetrics
    from modelc_build.golden import tolerances

    kept = measured.json(GOLDEN_STEP, GOLDEN_NOTES)
    if not kept or not kept.get("samples") or deployed.get("golden") is None:
        return None
    built = [OutputMetrics(**m) for m in deployed["golden"]]
    return {"samples": kept["samples"], "tolerances": tolerances(recipe.gate_for(target.precision), built),
            "outputs": deployed["golden"]}


def _emulated_gates(recipe: Recipe, target: Target, evaluation: Evaluation, measured: dict[str, Any]) -> list[GateCheck]:
    """An emulated CPU's run of a sample subset, held per output to each tensor gate, or to 1.5x the
    error the same samples give on this machine where that is looser: a few samples scatter more
    than the whole evaluation set, while kernels that saturate err many times more. Task-metric
    gates need the whole set and are reported only."""
    from modelc_build.accuracy import OutputMetrics
    from modelc_build.golden import tolerances

    gate = recipe.gate_for(target.precision)
    native = [OutputMetrics(**m) for m in (measured.get("emulation") or {}).get("native_subset", [])] \
        or [OutputMetrics(m.output, 0.0, 0.0, 1.0, None) for m in evaluation.outputs]  # no native run: the gate itself
    limits = tolerances(gate, native)
    sources = recipe.gate_sources(target.precision)
    checks = []
    for m in evaluation.outputs:
        observed = {"min_cosine": m.cosine, "max_abs_error": m.max_abs_error, "max_mean_abs_error": m.mean_abs_error,
                    "min_snr_db": m.snr_db}
        for key, limit in limits.get(m.output, {}).items():
            value = observed[key]
            passed = value is None or (value >= limit if key.startswith("min_") else value <= limit)
            source, default = sources.get(key, ("recipe", None))
            checks.append(GateCheck(key, limit, value, passed, m.output, source, default))
    return checks


def _measurement(recipe: Recipe, target: Target, setting: Setting, measured: dict[str, Any]) -> Measurement:
    """Another setting's measurement; an emulated CPU's is gated on its tensor metrics (a sample
    subset is too small for task-metric gates), unless the check could not run or be trusted."""
    problem = measured.get("not_run")
    if measured.get("emulation_broken"):
        problem = f"the emulation is broken, so the artifact was not judged on this CPU: {measured['emulation_broken']}"
    problem = measured.get("fault") or problem
    unjudged = measured.get("fault") or measured.get("emulation_broken")  # ran, but gave nothing to judge
    evaluation = evaluation_from_dict(measured)
    if setting.emulate and (unjudged or problem and recipe.verify.require_cpus):
        # a CPU the artifact ships for on which it was judged on no sample: a broken emulator is a
        # setup defect, not a pass; no emulator at all is one where the recipe requires the check
        evaluation.gates = [GateCheck("min_emulated_samples", MIN_SAMPLES, 0.0, False, None,
                                      "default" if unjudged else "recipe")]
    elif setting.gated and problem is None:
        gate = recipe.gate_for(target.precision)
        if setting.emulate:
            evaluation.gates = _emulated_gates(recipe, target, evaluation, measured)
        else:
            evaluation.gates = apply_gates(evaluation, gate, recipe.gate_sources(target.precision))
    return Measurement(setting.name, dict(setting.config), setting.emulate, evaluation, setting.gated,
                       measured.get("emulation"), problem, measured.get("runtime") or {})


def _latency_ms(measured: Measured, step_id: str) -> float | None:
    timing = measured.json(step_id, LATENCY_FILE)
    return timing["ms"]["p50"] if timing and timing["ms"] else None


def _judged(recipe: Recipe, target: Target, measured: dict[str, Any]) -> Evaluation:
    evaluation = evaluation_from_dict(measured)
    evaluation.gates = apply_gates(evaluation, recipe.gate_for(target.precision), recipe.gate_sources(target.precision))
    return evaluation


def _latency_summary(timing: dict[str, Any] | None) -> dict[str, Any] | None:
    if not timing or not timing.get("ms"):
        return None
    summary = {**timing["ms"], "batch": timing["batch"], "runs": timing["runs"], "warmup": timing["warmup"],
               "threads": timing["threads"], "cpu_class": timing.get("cpu_class"), "runtime": timing.get("runtime") or {}}
    if timing.get("kernels"):
        summary["kernels"] = timing["kernels"]
    return summary


def _calibration(recipe: Recipe, artifacts: list[ArtifactReport]) -> CalibrationData | None:
    noted = [a.quantization["calibration_samples_available"] for a in artifacts
             if a.quantization and "calibration_samples_available" in a.quantization]
    if recipe.calibration is None or not noted:
        return None
    where = os.path.relpath(recipe.calibration.path, recipe.path.parent)  # as the recipe names it
    return CalibrationData(where, max(noted), recipe.calibration.samples)


def _sensitivity(recipe: Recipe, sensitivity: dict[str, Any] | None) -> dict[str, Any] | None:
    if sensitivity is None:
        return None
    return {**sensitivity, "layers_measured": len(sensitivity["layers"]),  # the worst, as many as asked for
            "layers": sensitivity["layers"][:recipe.quantization.sensitivity_layers]}


def summary_lines(report: Report) -> list[str]:
    lines = []
    for a in report.artifacts:
        task = ""
        if a.evaluation.task is not None:
            t = a.evaluation.task
            task = f", {t.name} {t.value:.2f}% (reference {t.reference:.2f}%)"
        worst = min((m.cosine for m in a.evaluation.outputs), default=1.0)
        latency = f", {a.latency_ms:.2f} ms" if a.latency_ms is not None else ""
        free = a.evaluation.task.label_free if a.evaluation.task is not None else {}
        if "top5_containment" in free:
            task += f", top-5 containment {free['top5_containment']:.1f}%, confident agreement {free['confident_agreement']:.1f}%"
        for m in a.measurements:
            if m.problem:
                task += f"; {m.words()}: not judged"
                continue
            cos = min((o.cosine for o in m.evaluation.outputs), default=1.0)
            task += f"; {m.words()}: cosine {cos:.6f}" + ("" if m.evaluation.passed or not m.gated else " FAIL")
        verdict = "pass" if a.passed else "FAIL"
        engines = a.runtime.get("engines")
        if engines:  # what was measured was the engines' graph on the CPU
            task += f"; source graph on onnxruntime CPU, engines for {', '.join(e['gpu'] for e in (a.engines or {}).get('engines', []))} {engines}"
        lines.append(f"  {a.target}: cosine {worst:.6f}{task}{latency} [{verdict}]")
    lines += [f"  warning: {flag}" for flag in report.flags()]
    fallback = (report.export or {}).get("fallback_reason")
    if fallback:  # exporter auto fell back (the export step ran in its own process)
        lines.append(f"note: torch.export could not capture the model ({fallback}); exported with the TorchScript-based "
                     "exporter instead (export.exporter: auto)")
    return lines


def release(recipe: Recipe, measured: Measured, report: Report, store: Store, staging: Path, failed_reports: Path,
            signer: Signer | None, log: Callable[[str], None]) -> Released:
    """Gates → files → manifest → signature → store. An identical stored version is left alone.
    Whatever stops a release after its gates were applied (the store, the signer), its report is
    kept in `failed_reports` and comes with the error."""
    artifact_files = _artifact_files(measured)
    judged_by = measurement_digest(recipe, report)
    folder = staging / "release"
    try:
        if report.passed:
            stored = store.stored_manifest(recipe.name, recipe.version)
            if stored is not None and stored.get("content_digest") == content_digest(artifact_files):
                if stored.get("measurement_digest") != judged_by:
                    raise VersionTaken(f"{recipe.name} {recipe.version} is stored with the same model files but was "
                                       "judged differently (task, gates, data or verification settings changed): its "
                                       "report would no longer match the release; bump version")
                return Released(store.location(recipe.name, recipe.version), False, report, stored,
                                store.release_digest(recipe.name, recipe.version))
        assemble_report(folder, measured, report, _history(store, recipe.name, recipe.version))
        if not report.passed:
            kept = keep_reports(folder, failed_reports / recipe.name / recipe.version)
            raise GateFailed(f"{len(report.failures())} accuracy gate(s) missed, nothing was stored: "
                             + "; ".join(report.failures()) + f". Report: {kept / 'report.md'}", report, kept)
        manifest = _manifest(recipe, folder, measured, artifact_files, judged_by, report)
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if signer is not None:  # after every gate passed; the signature covers every file above
            from modelc_build.signing import sign_release

            sign_release(folder, signer)
            log(f"✓ signed with {signer.describe()}")
        result: PushResult = store.push(folder, recipe.name, recipe.version, content_digest(artifact_files))
    except GateFailed:
        raise
    except ModelcError as error:  # the gates were applied: the report says how, wherever the release failed to go
        try:
            if not folder.exists():
                assemble_report(folder, measured, report)
            kept = keep_reports(folder, failed_reports / recipe.name / recipe.version)
        except OSError:  # a disk that failed the release fails this too: the release's own error is the one to see
            raise error from None
        raise error.with_report(report, kept) from error
    return Released(result.location, result.created, report, manifest, result.digest)


def keep_reports(folder: Path, kept: Path) -> Path:
    """A release's report files copied where a build that stored nothing keeps them."""
    kept.mkdir(parents=True, exist_ok=True)
    for name in REPORT_FILES:
        shutil.copyfile(folder / name, kept / name)
    return kept


def measurement_digest(recipe: Recipe, report: Report) -> str:
    """What a release's report was judged by, besides its model files: the task (and a custom
    metric's code), the effective gates and where each came from, every data role's digest and
    every setting of how it is read (preprocessing, samples, order, seed, labels), and the
    verification settings (not latencies, which vary run to run). Part of a version's identity:
    the same files judged otherwise are another version. `measurement_material` lists it."""
    from modelc_build.cache import cache_key

    return cache_key(measurement_material(recipe, {role: d.get("digest") for role, d in (report.data or {}).items()}))


def measurement_material(recipe: Recipe, data_digests: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    from modelc_build.manifest import sha256_file

    def how_read(dataset: Any) -> dict[str, Any] | None:
        if dataset is None:
            return None
        settings = asdict(dataset)
        settings.pop("path")  # where the files are is not what they are: their digest is
        labels = settings.pop("labels_path")
        settings["labels_file"] = sha256_file(labels) if labels is not None and Path(labels).is_file() else None
        return settings

    metric = recipe.task.metric
    metric_file = recipe.task.base_dir / metric.rsplit(":", 1)[0] if metric else None
    return {"task": recipe.task.settings(),
            "metric_code": sha256_file(metric_file) if metric_file is not None and metric_file.is_file() else None,
            "gates": {p: asdict(recipe.gate_for(p)) for p in _judged_precisions(recipe)},
            "gate_sources": {p: recipe.gate_sources(p) for p in _judged_precisions(recipe)},
            "data": data_digests, "preprocess": asdict(recipe.preprocess) if recipe.preprocess else None,
            "reading": {role: how_read(getattr(recipe, role)) for role in ("calibration", "validation", "evaluation")},
            "verify": asdict(recipe.verify)}


HISTORY_VERSIONS = 10  # older versions the HTML report plots beside this one


def _judged_precisions(recipe: Recipe) -> tuple[str, ...]:
    """fp32, fp16 and int8 always (what a measurement digest held before fp8 existed), and any
    other precision a target asks for."""
    extra = sorted({t.precision for t in recipe.targets} - {"fp32", "fp16", "int8"})
    return ("fp32", "fp16", "int8", *extra)


def _history(store: Store, name: str, version: str) -> list[dict[str, Any]]:
    """The reports of up to HISTORY_VERSIONS older stored versions, oldest first (none where the
    store cannot say: a history is a nicety, never a reason for a build to fail)."""
    from packaging.version import InvalidVersion

    from modelc_build.compare import older_versions, report_of
    from modelc_build.errors import ModelcError

    try:
        return [report_of(store, name, v) for v in older_versions(store, name, version)[-HISTORY_VERSIONS:]]
    except (ModelcError, InvalidVersion, OSError, ValueError, KeyError):
        return []


def assemble_report(folder: Path, measured: Measured, report: Report, history: list[dict[str, Any]] | None = None) -> None:
    (folder / "onnx").mkdir(parents=True)
    shutil.copyfile(measured.graph.file("model.onnx"), folder / "onnx" / "model.onnx")
    if measured.qdq is not None:  # the Q/DQ graph, for TensorRT builds elsewhere
        (folder / "onnx-int8").mkdir()
        for name in measured.qdq.files:
            shutil.copyfile(measured.qdq.file(name), folder / "onnx-int8" / name)
    for artifact in measured.artifacts:
        (folder / artifact.target.id).mkdir()
        for name in artifact.entry.files:
            shutil.copyfile(artifact.entry.file(name), folder / artifact.target.id / name)
    if measured.golden is not None and report.golden and report.golden.get("samples"):
        _assemble_golden(folder / GOLDEN_FOLDER, measured.golden, report)
    (folder / "report.json").write_text(to_json_text(report))
    (folder / "report.md").write_text(to_markdown(report))
    from modelc_build.report import to_json
    from modelc_build.report_html import to_html

    (folder / "report.html").write_text(to_html(to_json(report), history))


def _assemble_golden(folder: Path, entry: CacheEntry, report: Report) -> None:
    """golden/: the samples and reference outputs, and each artifact's tolerances and the settings
    it runs with, so that a deploy machine can repeat the check."""
    from modelc_build.golden import FILES, FORMAT_VERSION, TOLERANCES

    folder.mkdir()
    for name in FILES:
        shutil.copyfile(entry.file(name), folder / name)
    checks = {a.target: {"precision": a.precision, "tolerances": a.golden["tolerances"], "runtime_config": a.config,
                         "build": {"outputs": a.golden["outputs"], "cpu": (report.machine or {}).get("cpu"),
                                   "class": (report.machine or {}).get("kernel_class"), "runtime": a.runtime}}
              for a in report.artifacts if a.golden}
    (folder / TOLERANCES).write_text(json.dumps({"format_version": FORMAT_VERSION, "artifacts": checks},
                                                indent=2, sort_keys=True) + "\n")


def _artifact_files(measured: Measured) -> list[FileEntry]:
    """The release's model files with digests and sizes, read off the cache entries (whose digests
    were checked this build) rather than re-hashed."""
    sources = {"onnx/model.onnx": (measured.graph, "model.onnx")}
    if measured.qdq is not None:
        sources.update({f"onnx-int8/{name}": (measured.qdq, name) for name in measured.qdq.files})
    sources.update({f"{a.target.id}/{name}": (a.entry, name) for a in measured.artifacts for name in a.entry.files})
    return [FileEntry(path, entry.files[name], entry.file(name).stat().st_size)
            for path, (entry, name) in sorted(sources.items())]


def _manifest(recipe: Recipe, folder: Path, measured: Measured, artifact_files: list[FileEntry], judged_by: str,
              report: Report) -> dict[str, Any]:
    entries = [ArtifactEntry("onnx", "onnx", "fp32", ["onnx/model.onnx"])]
    if measured.qdq is not None:
        entries.append(ArtifactEntry("onnx-int8", "onnx", "int8", [f"onnx-int8/{name}" for name in sorted(measured.qdq.files)]))
    golden = sorted(p.relative_to(folder).as_posix() for p in (folder / GOLDEN_FOLDER).glob("*")) \
        if (folder / GOLDEN_FOLDER).is_dir() else []
    judged = {a.target: a for a in report.artifacts}
    entries += [ArtifactEntry(a.target.id, a.target.backend, a.target.precision,
                              [f"{a.target.id}/{name}" for name in a.entry.files],
                              dict(measured.settings[a.target.id][0].config), _verified_on(judged[a.target.id], report),
                              _engine_stamps(judged[a.target.id]), _variants(judged[a.target.id]),
                              (judged[a.target.id].quantization or {}).get("coverage"))
                for a in measured.artifacts]
    return build_manifest(name=recipe.name, version=recipe.version, recipe_file=recipe.path,
                          recipe_digest=recipe.digest, exporter=(report.export or {}).get("used", "none"),
                          opset=recipe.export.opset, simplified=recipe.export.simplify, artifacts=entries,
                          artifact_files=artifact_files, report_files=file_entries(folder, [*REPORT_FILES, *golden]),
                          passed=report.passed, machine=report.machine, data=report.data,
                          measurement_digest=judged_by, golden=_golden_summary(report, golden),
                          model={"inputs": [spec.to_json() for spec in recipe.model.inputs],
                                 "outputs": list(recipe.model.outputs)})


def _golden_summary(report: Report, files: list[str]) -> dict[str, Any] | None:
    if not files or not report.golden:
        return None
    return {"samples": report.golden["samples"], "bytes": report.golden["bytes"], "files": files}


def _variants(artifact: ArtifactReport) -> dict[str, Any] | None:
    """onnxruntime int8 layouts by file, each with the CPUs it is for and where it was verified."""
    variants = (artifact.quantization or {}).get("variants")
    if not variants or len(variants) < 2:
        return None
    checked: dict[str, list[str]] = {}
    native = artifact.runtime.get("variant", "")
    emulated = [m for m in artifact.measurements if m.emulate and m.problem is None]
    for name in variants:
        checked[name] = []
        if native.startswith(name):
            checked[name].append("the build machine (native)")
        checked[name] += [f"emulated {m.emulate}" for m in emulated
                          if str((m.emulation or {}).get("runtime", {}).get("variant", "")).startswith(name)]
    return {f"{artifact.target}/{name}": {**info, "verified_on": checked[name]} for name, info in variants.items()}


def _engine_stamps(artifact: ArtifactReport) -> dict[str, Any] | None:
    """A tensorrt artifact's engines as the manifest states them: what each is for, what built it,
    from which graph, and whether it ran where it was built."""
    if not artifact.engines:
        return None
    status = artifact.runtime.get("engines") or ("run and measured here" if "engine" in artifact.runtime.get("measured", "")
                                                 else "built, not run")
    return {"graph": {**artifact.engines["graph"], "file": f"{artifact.target}/{artifact.engines['graph']['file']}"},
            "profile": artifact.engines["profile"], "status": status,
            "engines": [{**e, "file": f"{artifact.target}/{e['file']}"} for e in artifact.engines["engines"]]}


def _verified_on(artifact: ArtifactReport, report: Report) -> list[dict[str, Any]]:
    """The CPUs an artifact was judged on: the build machine natively (as deployed), and each
    emulated CPU model with what its check saw."""
    machine = report.machine or {}
    found: list[dict[str, Any]] = [{"cpu": machine.get("cpu"), "class": machine.get("kernel_class"), "how": "native",
                                    "samples": artifact.evaluation.samples, "runtime": artifact.runtime}]
    for m in artifact.measurements:
        if m.emulate:
            e = m.emulation or {}
            found.append({"cpu": m.emulate, "class": e.get("class"), "how": "emulated (QEMU user mode)",
                          "samples": m.evaluation.samples, "passed": m.evaluation.passed and m.problem is None,
                          **({"problem": m.problem} if m.problem else {})})
    return found

