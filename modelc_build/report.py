"""The accuracy and latency report: `report.json` (schema in modelc_build/schema/report.schema.json)
and `report.md`, tables a person reads as a GitHub job summary."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from modelc_build.accuracy import Evaluation

REPORT_FORMAT_VERSION = 3


@dataclass(frozen=True)
class Measurement:
    """The artifact measured under other runtime settings than its deployment's, or on an
    emulated deploy CPU."""

    setting: str  # f32 | runtime-default | an emulated CPU model in lower case
    config: dict[str, str]
    emulate: str | None  # the QEMU CPU model, for an emulated check
    evaluation: Evaluation
    gated: bool
    emulation: dict[str, Any] | None = None  # cpu, features, class, kernels, samples, times, versus_native
    problem: str | None = None  # the check did not run or cannot be trusted (no emulator, a broken one)
    runtime: dict[str, str] = field(default_factory=dict)  # what the runtime really ran with

    def words(self) -> str:
        if self.emulate:
            samples = self.evaluation.samples  # 0 where the check did not run or was not judged
            return f"emulated {self.emulate} (QEMU)" + (f", {samples} samples" if samples else "")
        precision = self.runtime.get("INFERENCE_PRECISION_HINT")
        if self.setting == "runtime-default":
            return "the runtime's own default on this CPU" + (f" ({precision})" if precision else "")
        return f"pinned {self.setting}"


@dataclass(frozen=True)
class ArtifactReport:
    target: str  # e.g. openvino-fp16
    backend: str
    precision: str
    files: list[tuple[str, int]]  # release-relative path, size in bytes
    evaluation: Evaluation  # as deployed (the runtime settings in `config`)
    latency_ms: float | None  # p50
    quantization: dict[str, Any] | None = None  # int8: the artifact's quantization.json
    config: dict[str, str] = field(default_factory=dict)
    latency: dict[str, Any] | None = None  # p10/p50/p90, runs, warm-up, batch, threads
    measurements: list[Measurement] = field(default_factory=list)
    runtime: dict[str, str] = field(default_factory=dict)  # what the runtime really ran with, as deployed
    golden: dict[str, Any] | None = None  # the golden-set check as built: samples, tolerances, outputs, misses
    engines: dict[str, Any] | None = None  # tensorrt: engines.json (graph, profile, one stamp per engine)

    @property
    def size_bytes(self) -> int:
        return sum(size for _, size in self.files)

    @property
    def passed(self) -> bool:
        return self.evaluation.passed and all(m.evaluation.passed for m in self.measurements if m.gated)

    def failures(self) -> list[str]:
        found = [f"{self.target}: {c.describe()}" for c in self.evaluation.gates if not c.passed]
        for m in self.measurements:
            if m.gated:
                found += [f"{self.target} ({m.words()}): {c.describe()}" for c in m.evaluation.gates if not c.passed]
        return found


@dataclass(frozen=True)
class BaselineComparison:
    """A reduced-precision artifact against the FP32 artifact of the same backend."""

    target: str  # e.g. openvino-fp32
    metric_drop: float | None  # task metric points lost against that artifact
    speedup: float | None  # its latency / this latency


def compare_with_fp32(artifact: ArtifactReport, artifacts: list[ArtifactReport]) -> BaselineComparison | None:
    if artifact.precision == "fp32":
        return None
    baseline = next((a for a in artifacts if a.backend == artifact.backend and a.precision == "fp32"), None)
    if baseline is None:
        return None
    ours, theirs = artifact.evaluation.task, baseline.evaluation.task
    drop = theirs.value - ours.value if ours is not None and theirs is not None else None
    speedup = baseline.latency_ms / artifact.latency_ms if baseline.latency_ms and artifact.latency_ms else None
    return BaselineComparison(baseline.target, drop, speedup)


@dataclass(frozen=True)
class CalibrationData:
    data: str
    samples_available: int  # after the recipe's `samples` cap
    samples_asked: int | None


@dataclass(frozen=True)
class Report:
    name: str
    version: str
    reference: str  # what the artifacts were compared with
    evaluation_data: str
    samples: int
    task: str
    reference_metric: float | None
    reference_latency_ms: float | None
    artifacts: list[ArtifactReport]
    calibration: CalibrationData | None = None
    sensitivity: dict[str, Any] | None = None  # modelc_build.sensitivity's result, worst layers first
    machine: dict[str, Any] | None = None  # CPU model and instruction sets of the build machine
    data: dict[str, Any] | None = None  # per role: path, samples, digest
    export: dict[str, Any] | None = None  # exporter requested and used, and why a fallback ran
    cpus: list[dict[str, Any]] | None = None  # verify.cpus: per CPU model, emulated or native (the build machine's class)
    golden: dict[str, Any] | None = None  # the golden set shipped: samples, bytes (and why fewer)
    skipped: list[str] | None = None  # what --skip-unavailable left out, and why
    hints: list[str] | None = None  # what the recipe could declare to be measured better (a detector layout)
    steps: dict[str, Any] | None = None  # this build's steps: ran or cached, seconds, peak memory (build_costs)
    failed_steps: list[str] | None = None  # a build some of whose steps failed: each failed step and its error

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts) and not self.failed_steps

    def failures(self) -> list[str]:
        return [line for a in self.artifacts for line in a.failures()]

    def flags(self) -> list[str]:
        """Warnings that do not fail the build: an INT8 artifact that is not faster than FP32; a check
        on an emulated CPU that did not run or whose emulator is broken."""
        found = [f"{a.target} ({m.words()}): {m.problem}" for a in self.artifacts for m in a.measurements if m.problem]
        found += self.hints or []
        if self.export and (self.export.get("simplify") or {}).get("warning"):
            found.insert(0, self.export["simplify"]["warning"])
        for a in self.artifacts:
            versus = compare_with_fp32(a, self.artifacts)
            if (a.precision == "int8" and versus is not None and versus.speedup is not None and versus.speedup <= 1.0
                    and a.latency_ms is not None):
                kernels = (a.latency or {}).get("kernels") or []
                where = "; its time by kernel: " + ", ".join(f"{k['kernel']} {k['share']:.0f} %" for k in kernels[:3]) \
                    if kernels else ""
                on = (a.latency or {}).get("cpu_class")
                found.append(f"{a.target} is not faster than {versus.target}{f' on this {on} CPU' if on else ''}: "
                             f"{a.latency_ms:.3f} ms vs {a.latency_ms * versus.speedup:.3f} ms (ratio {1 / versus.speedup:.2f}){where}")
        return found


def _number(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return -1e308 if value < 0 else 1e308
    return value


def to_json(report: Report) -> dict[str, Any]:
    artifacts = []
    for a in report.artifacts:
        e = a.evaluation
        versus = compare_with_fp32(a, report.artifacts)
        artifacts.append({
            "target": a.target,
            "backend": a.backend,
            "precision": a.precision,
            "files": [{"path": p, "size": s} for p, s in a.files],
            "size_bytes": a.size_bytes,
            "latency_ms": _number(a.latency_ms),
            "outputs": _outputs_json(e),
            "task_metric": _task_json(e),
            "config": a.config,
            "latency": a.latency,
            "int8_latency_ratio": (1 / versus.speedup) if a.precision == "int8" and versus and versus.speedup else None,
            "runtime": a.runtime,
            "golden": a.golden,
            "engines": a.engines,
            "measurements": [{"setting": m.setting, "config": m.config, "emulate": m.emulate, "gated": m.gated,
                              "passed": m.evaluation.passed and m.problem is None, "problem": m.problem,
                              "samples": m.evaluation.samples, "emulation": m.emulation, "runtime": m.runtime,
                              "outputs": _outputs_json(m.evaluation), "task_metric": _task_json(m.evaluation),
                              "gates": _gates_json(m.evaluation)}
                             for m in a.measurements],
            "versus_fp32": None if versus is None else {"target": versus.target, "metric_drop": versus.metric_drop,
                                                        "speedup": versus.speedup},
            "gates": _gates_json(e),
            "quantization": a.quantization,
            "passed": a.passed,
        })
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "name": report.name,
        "version": report.version,
        "reference": report.reference,
        "evaluation_data": report.evaluation_data,
        "samples": report.samples,
        "task": report.task,
        "reference_metric": report.reference_metric,
        "reference_latency_ms": _number(report.reference_latency_ms),
        "passed": report.passed,
        "artifacts": artifacts,
        "calibration": None if report.calibration is None else {
            "data": report.calibration.data, "samples_available": report.calibration.samples_available,
            "samples_asked": report.calibration.samples_asked},
        "sensitivity": report.sensitivity,
        "machine": report.machine,
        "data": report.data,
        "flags": report.flags(),
        "export": report.export,
        "cpus": report.cpus,
        "golden": report.golden,
        "skipped": report.skipped,
        "failed_steps": report.failed_steps,
        "hints": report.hints,
        "steps": report.steps,
    }


def _outputs_json(e: Evaluation) -> list[dict[str, Any]]:
    return [{"output": m.output, "max_abs_error": _number(m.max_abs_error), "mean_abs_error": _number(m.mean_abs_error),
             "cosine": _number(m.cosine), "snr_db": _number(m.snr_db)} for m in e.outputs]


def _task_json(e: Evaluation) -> dict[str, Any] | None:
    if e.task is None:
        return None
    return {"name": e.task.name, "value": e.task.value, "reference": e.task.reference, "drop": e.task.drop,
            "agreement": e.task.agreement, "label_free": e.task.label_free, "higher_is_better": e.task.higher_is_better}


def _gates_json(e: Evaluation) -> list[dict[str, Any]]:
    return [{"gate": g.gate, "output": g.output, "threshold": g.threshold, "observed": _number(g.observed),
             "passed": g.passed, "margin": _number(g.margin), "source": g.source, "default": g.default} for g in e.gates]


def to_json_text(report: Report) -> str:
    return json.dumps(to_json(report), indent=2, sort_keys=True) + "\n"


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "∞" if digits == -1 else "—"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"


def _size(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MiB"


def to_markdown(report: Report) -> str:
    names = {"top1_accuracy": "top-1 accuracy", "map50": "mAP@0.5", "top1_agreement": "top-1 agreement",
             "reference_map50": "mAP@0.5 vs reference detections", "mean_sample_cosine": "mean per-sample cosine × 100"}
    first = next((a.evaluation.task for a in report.artifacts if a.evaluation.task is not None), None)
    metric_name = names.get(first.name, first.name) if first is not None else None
    verdict = ("✅ all gates passed" if report.passed else "❌ a step failed: nothing released" if report.failed_steps
               else "❌ gates missed")
    lines = [f"## modelc: {report.name} {report.version} — {verdict}", "",
             f"Reference: {report.reference}. Evaluation data: {report.evaluation_data} ({report.samples} samples)."]
    if report.task in ("none", "generic"):
        lines.append("No task metric (task type " + report.task + "): artifacts are judged by tensor metrics only.")
    if metric_name and report.reference_metric is not None:
        lines.append(f"Reference {metric_name}: **{report.reference_metric:.2f}%**.")
    if report.reference_latency_ms is not None:
        lines.append(f"Reference latency (batch 1, median): {report.reference_latency_ms:.3f} ms.")
    if report.export and report.export.get("used") not in (None, "none"):
        exported = report.export
        reason = exported.get("fallback_reason")
        why = f" because torch.export could not capture the model: {reason}" if reason else ""
        lines.append(f"Exported to ONNX with the {exported['used']} exporter (export.exporter: {exported['requested']}){why}.")
    if report.export and (report.export.get("simplify") or {}).get("warning"):
        lines.append(f"⚠️ {report.export['simplify']['warning']}.")
    if report.data:
        lines.append("Data: " + "; ".join(f"{role} {d['path']} ({d['samples']} samples, sha256 {d['digest'][:12]})"
                                          + (f" — {d['note']}" if d.get("note") else "")
                                          for role, d in report.data.items()) + ".")
    lines += ["", "| artifact | size | latency ms (b=1, median) | speed-up vs fp32 | "
              + (f"{metric_name} % | drop vs reference | drop vs fp32 | " if metric_name else "")
              + "gates |", "|---|---:|---:|---:|" + ("---:|---:|---:|" if metric_name else "") + "---|"]
    for a in report.artifacts:
        e = a.evaluation
        versus = compare_with_fp32(a, report.artifacts)
        speedup = f"{versus.speedup:.2f}×" if versus and versus.speedup else "—"
        row = f"| `{a.target}` | {_size(a.size_bytes)} | {_fmt(a.latency_ms)} | {speedup} | "
        if metric_name:
            vs_fp32 = f"{versus.metric_drop:+.2f}" if versus and versus.metric_drop is not None else "—"
            row += (f"{e.task.value:.2f} | {e.task.drop:+.2f} | {vs_fp32} | " if e.task else "— | — | — | ")
        row += ("✅" if a.passed else "❌") + f" {sum(g.passed for g in e.gates)}/{len(e.gates)} |"
        lines.append(row)
    if any(a.backend == "torchscript" for a in report.artifacts):
        lines += ["", TORCHSCRIPT_DEPRECATED]
    lines += _label_free_lines(report) + _measurement_lines(report) + _machine_lines(report) + _golden_lines(report)
    lines += ["", "### Agreement with the reference, per output", "",
              "| artifact | output | max abs error | mean abs error | cosine | SNR dB |", "|---|---|---:|---:|---:|---:|"]
    for a in report.artifacts:
        for m in a.evaluation.outputs:
            lines.append(f"| `{a.target}` | {m.output} | {_fmt(m.max_abs_error)} | {_fmt(m.mean_abs_error)} | "
                         f"{m.cosine:.7f} | {_fmt(m.snr_db, -1) if m.snr_db is None else f'{m.snr_db:.1f}'} |")
    lines += _engine_lines(report) + _quantization_lines(report) + _sensitivity_lines(report)
    lines += _gate_lines(report) + _step_lines(report)
    failures = report.failures()
    if failures:
        lines += ["", "### Missed gates", ""] + [f"- {f}" for f in failures]
    flags = report.flags()
    if flags:
        lines += ["", "### Flags", ""] + [f"- ⚠️ {f}" for f in flags]
    return "\n".join(lines) + "\n"


def _label_free_lines(report: Report) -> list[str]:
    rows = [(a.target, a.evaluation.task.label_free) for a in report.artifacts
            if a.evaluation.task is not None and a.evaluation.task.label_free and report.task in ("classification", "detection")]
    if not rows:
        return []
    if "top5_containment" in rows[0][1]:
        lines = ["", "### Agreement with the reference's predictions (no labels needed)", "",
                 "| artifact | top-1 agreement % | reference top-1 in top-5 % | agreement where the reference is "
                 "confident (p ≥ 0.5) % | confident samples |", "|---|---:|---:|---:|---:|"]
        for target, free in rows:
            lines.append(f"| `{target}` | {free['top1_agreement']:.2f} | {free['top5_containment']:.2f} | "
                         f"{free['confident_agreement']:.2f} | {free['confident_samples']:.0f} |")
        return lines
    lines = ["", "### Agreement with the reference's detections (no labels needed)", "",
             "| artifact | mAP@0.5 against the reference's detections (score ≥ 0.25) % | reference objects |", "|---|---:|---:|"]
    for target, free in rows:
        lines.append(f"| `{target}` | {free['reference_map50']:.2f} | {free['reference_objects']:.0f} |")
    return lines


def _measurement_lines(report: Report) -> list[str]:
    rows = [(a, m) for a in report.artifacts for m in a.measurements]
    lines = []
    if rows:
        lines += ["", "### On other CPUs and runtime settings", "",
                  "| artifact | where | lowest output cosine | task metric % | gated |", "|---|---|---:|---:|---|"]
        for a, m in rows:
            worst = min((o.cosine for o in m.evaluation.outputs), default=None)
            task = f"{m.evaluation.task.value:.2f}" if m.evaluation.task else "—"
            if m.problem:
                verdict = f"⚠️ {m.problem}"
            else:
                verdict = ("✅" if m.evaluation.passed else "❌") if m.gated else "reported"
            cosine = "—" if worst is None else f"{worst:.6f}"
            lines.append(f"| `{a.target}` | {m.words()} | {cosine} | {task} | {verdict} |")
    emulated = [(a, m) for a, m in rows if m.emulation and not m.problem]
    for a, m in emulated:
        e = m.emulation or {}
        versus = ", ".join(f"{v['output']} cosine {v['cosine']:.6f}" for v in e.get("versus_native", []))
        lines.append(f"- `{a.target}` on emulated {e.get('cpu')}: {e.get('samples')} of {e.get('samples_asked')} samples "
                     f"in {e.get('inference_s')} s (budget {e.get('budget_s'):g} s, start {e.get('startup_s')} s"
                     f"{', warm process' if e.get('process') == 'service' else ''}); CPU "
                     f"features seen {', '.join(e.get('features', []))}; kernels {', '.join(e.get('kernels', [])[:4]) or '—'}; "
                     f"against its native run: {versus}.")
    if emulated:
        lines.append("- Speed on an emulated CPU is not measured: QEMU's timings say nothing of the real CPU's (the "
                     "latency figures are this build machine's).")
    for cpu in report.cpus or []:
        if cpu["how"] == "native":
            lines.append(f"- {cpu['cpu']} ({cpu['class']}): not emulated, the build machine is that class; its native "
                         "runs above are that check.")
    return lines


def _machine_lines(report: Report) -> list[str]:
    if not report.machine:
        return []
    m = report.machine
    return ["", f"Build machine: {m['cpu']} ({m['machine']}, {m['cores']} cores), instruction sets: "
                f"{', '.join(m['isa']) or 'none of AVX2/AVX-512/VNNI/AMX'}; INT8 kernels "
                f"{'with' if m['vnni'] else 'without'} VNNI."]


def _engine_lines(report: Report) -> list[str]:
    built = [a for a in report.artifacts if a.engines]
    if not built:
        return []
    lines = ["", "### TensorRT engines", "",
             "| artifact | GPU | built by | CUDA | size | build s | status |", "|---|---|---|---:|---:|---:|---|"]
    for a in built:
        status = a.runtime.get("engines") or a.runtime.get("measured", "")
        for engine in (a.engines or {}).get("engines", []):
            lines.append(f"| `{a.target}` | {engine['generation']} | {engine['flavour']} {engine['version']} | "
                         f"{engine.get('cuda_major') or '—'} | {_size(engine['size'])} | {engine['build_s']:.2f} | {status} |")
        graph = (a.engines or {}).get("graph", {})
        lines.append(f"| `{a.target}` | source graph | {graph.get('precision_in_graph', '')} | | | | measured above: "
                     f"{a.runtime.get('measured', 'as deployed')} |")
    if report.skipped:
        lines += ["", "Left out (--skip-unavailable): " + "; ".join(report.skipped) + "."]
    if report.failed_steps:
        lines += ["", "**Not measured: a step failed, nothing was released.** The targets above are those whose steps "
                  "all finished; these failed: " + "; ".join(f"`{line}`" for line in report.failed_steps) + "."]
    return lines


def _golden_lines(report: Report) -> list[str]:
    g = report.golden
    if not g:
        return []
    checked = [a for a in report.artifacts if a.golden]
    words = f"{g['samples']} evaluation samples with the reference's outputs, {_size(g['bytes'])}"
    return ["", f"Golden set (for `modelc verify --run` where the release is deployed): {words}"
            + (f" — {g['note']}" if g.get("note") else "") + f"; {len(checked)} artifacts ran on it here, through the "
            "same check a deploy machine runs. A deploy machine is held, per output, to each tensor gate, or to 1.5× "
            "the error this build saw on these samples where that is looser (golden/tolerances.json)."]


def _gate_lines(report: Report) -> list[str]:
    relaxed = sorted({f"{g.gate} ({a.precision}): {g.threshold:g}, default {g.default:g}" for a in report.artifacts
                      for g in a.evaluation.gates if g.source == "relaxed"})
    defaults = sorted({f"{a.precision} {g.gate} {g.threshold:g}" for a in report.artifacts
                       for g in a.evaluation.gates if g.source == "default"})
    lines = []
    if defaults:
        lines += ["", "Default gates applied (the recipe did not set them): " + ", ".join(defaults) + "."]
    if relaxed:
        lines += ["", "Gates the recipe relaxed below modelc's defaults: " + "; ".join(relaxed) + "."]
    return lines


def _quantization_lines(report: Report) -> list[str]:
    quantized = [a for a in report.artifacts if a.quantization]
    if not quantized:
        return []
    lines = ["", "### INT8 calibration", ""]
    if report.calibration is not None:
        c = report.calibration
        asked = f" (the recipe asked for {c.samples_asked})" if c.samples_asked is not None else ""
        lines += [f"Calibration data: {c.data}, {c.samples_available} samples available{asked}.", ""]
    lines += ["| artifact | method | samples used | in INT8 | kept in float |", "|---|---|---:|---|---|"]
    for a in quantized:
        q = a.quantization or {}
        kept = [str(v) for values in q.get("kept_in_float", {}).values() for v in values]
        if isinstance(q.get("quantized_op_types"), list):  # e.g. a transformer: MatMul/Gemm alone
            kept.insert(0, "every operator but " + ", ".join(q["quantized_op_types"]))
        control = q.get("accuracy_control")
        if control is not None:
            reverted = control.get("reverted_to_float", [])
            kept.append(f"accuracy control (max drop {control['max_drop_points']:g} points) reverted "
                        + (", ".join(f"`{r}`" for r in reverted) if reverted else "none"))
        method = q.get("method", "")
        if q.get("calibration_method"):
            method += f", {q['calibration_method']}"
        for name, variant in (q.get("variants") or {}).items():
            method += f"; `{name}`: {q.get('formats', {}).get(variant['format'], variant['format'])}, for {variant['for']}"
        coverage = "; ".join(f"`{name}`: {_coverage_words(c)}" for name, c in (q.get("coverage") or {}).items()) or "—"
        lines.append(f"| `{a.target}` | {method} | {q.get('calibration_samples', '—')} | {coverage} | {'; '.join(kept) or '—'} |")
    for a in quantized:
        fallback = (a.quantization or {}).get("fallback")
        if fallback and (fallback.get("kept_in_float") or fallback.get("op_kinds_in_float")):
            kept = [f"`{layer}`" for layer in fallback["kept_in_float"]]
            if fallback.get("op_kinds_in_float"):
                kept.insert(0, fallback["op_kinds_in_float"])
            lines += ["", f"`{a.target}` is mixed precision: full INT8 scored cosine {fallback['full_int8_cosine']:.4f} on "
                      f"{fallback['tuned_on']} (the int8 gate asks {fallback['min_cosine']:g}); with "
                      + ", ".join(kept)
                      + f" in float it scored {fallback['mixed_cosine']:.4f}{_speed_words(fallback)}. "
                      "The evaluation set judged it as any artifact."]
    return lines


TORCHSCRIPT_DEPRECATED = ("TorchScript is deprecated upstream (torch 2.13: `torch.jit.trace` and `torch.jit.script` are "
                          "deprecated): the `torchscript` targets stay for existing deployments; for new ones build `aoti` "
                          "(an AOTInductor package, for servers) or `executorch` (XNNPACK programs, for phones and edge boards).")


def _speed_words(fallback: dict[str, Any]) -> str:
    if "latency_vs_fp32" not in fallback:
        return " (not timed against FP32: its worth step did not run)"
    return f", at {fallback['latency_vs_fp32']:.2f}× FP32's latency (batch 1, this machine)"


def _coverage_words(c: dict[str, Any]) -> str:
    share = f", {c['mac_share']:.1f} % of MACs" if c.get("mac_share") is not None else ""
    inside = f" ({c['in_subgraphs']} in If/Loop bodies)" if c.get("in_subgraphs") else ""
    return f"{c['quantized']}/{c['layers']} layers{share}{inside}"


def _sensitivity_lines(report: Report) -> list[str]:
    s = report.sensitivity
    if not s:
        return []
    metric = s.get("metric")
    whole = s["all_layers"]
    lines = ["", f"### INT8 sensitivity: the {len(s['layers'])} worst of {s['layers_measured']} layers", "",
             f"Method: {s['method']}. "
             + (f"Float {metric}: {s['float_metric']:.2f}%; every layer in INT8: drop {whole['metric_drop']:+.3f} points, "
                if metric else "Every layer in INT8: ")
             + f"lowest output cosine {whole['min_cosine']:.6f}. Candidates for `quantization.ignore.names`:", "",
             "| layer | op | drop (points) | lowest output cosine |", "|---|---|---:|---:|"]
    for layer in s["layers"]:
        drop = "—" if layer["metric_drop"] is None else f"{layer['metric_drop']:+.3f}"
        lines.append(f"| `{layer['layer']}` | {layer['op_type']} | {drop} | {layer['min_cosine']:.6f} |")
    return lines


def _step_lines(report: Report) -> list[str]:
    steps = report.steps
    if not steps:
        return []
    ran = [s for s in steps["steps"] if s["ran"]]
    lines = ["", f"### Build steps: {len(ran)} ran, {len(steps['steps']) - len(ran)} cached", ""]
    if steps.get("build_process_peak_rss_mib") is not None:
        lines.append(f"The build's own process peaked at {steps['build_process_peak_rss_mib']:.0f} MiB "
                     "(steps without a figure below ran in it).")
    if ran:
        lines += ["", "| step | seconds | peak memory MiB |", "|---|---:|---:|"]
        lines += [f"| {s['id']} | {s['seconds']:.1f} | "
                  + ("—" if s["peak_rss_mib"] is None else f"{s['peak_rss_mib']:.0f}") + " |" for s in ran]
    return lines
