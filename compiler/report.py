"""The accuracy and latency report: `report.json` (schema in compiler/schema/report.schema.json)
and `report.md`, tables a person reads as a GitHub job summary."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from compiler.accuracy import Evaluation

REPORT_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ArtifactReport:
    target: str  # e.g. openvino-fp16
    backend: str
    precision: str
    files: list[tuple[str, int]]  # release-relative path, size in bytes
    evaluation: Evaluation
    latency_ms: float | None
    quantization: dict[str, Any] | None = None  # int8: the artifact's quantization.json

    @property
    def size_bytes(self) -> int:
        return sum(size for _, size in self.files)


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
    sensitivity: dict[str, Any] | None = None  # compiler.sensitivity's result, worst layers first

    @property
    def passed(self) -> bool:
        return all(a.evaluation.passed for a in self.artifacts)

    def failures(self) -> list[str]:
        return [f"{a.target}: {check.describe()}" for a in self.artifacts for check in a.evaluation.gates if not check.passed]


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
            "outputs": [{"output": m.output, "max_abs_error": _number(m.max_abs_error),
                         "mean_abs_error": _number(m.mean_abs_error), "cosine": _number(m.cosine),
                         "snr_db": _number(m.snr_db)} for m in e.outputs],
            "task_metric": None if e.task is None else {
                "name": e.task.name, "value": e.task.value, "reference": e.task.reference,
                "drop": e.task.drop, "agreement": e.task.agreement},
            "versus_fp32": None if versus is None else {"target": versus.target, "metric_drop": versus.metric_drop,
                                                        "speedup": versus.speedup},
            "gates": [{"gate": g.gate, "output": g.output, "threshold": g.threshold,
                       "observed": _number(g.observed), "passed": g.passed} for g in e.gates],
            "quantization": a.quantization,
            "passed": e.passed,
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
    }


def to_json_text(report: Report) -> str:
    return json.dumps(to_json(report), indent=2, sort_keys=True) + "\n"


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "∞" if digits == -1 else "—"
    return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.3e}"


def _size(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.2f} MiB"


def to_markdown(report: Report) -> str:
    metric_name = {"classification": "top-1 accuracy", "detection": "mAP@0.5"}.get(report.task)
    verdict = "✅ all gates passed" if report.passed else "❌ gates missed"
    lines = [f"## modelc: {report.name} {report.version} — {verdict}", "",
             f"Reference: {report.reference}. Evaluation data: {report.evaluation_data} ({report.samples} samples)."]
    if metric_name and report.reference_metric is not None:
        lines.append(f"Reference {metric_name}: **{report.reference_metric:.2f}%**.")
    if report.reference_latency_ms is not None:
        lines.append(f"Reference latency (batch 1, median): {report.reference_latency_ms:.3f} ms.")
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
        row += ("✅" if e.passed else "❌") + f" {sum(g.passed for g in e.gates)}/{len(e.gates)} |"
        lines.append(row)
    lines += ["", "### Agreement with the reference, per output", "",
              "| artifact | output | max abs error | mean abs error | cosine | SNR dB |", "|---|---|---:|---:|---:|---:|"]
    for a in report.artifacts:
        for m in a.evaluation.outputs:
            lines.append(f"| `{a.target}` | {m.output} | {_fmt(m.max_abs_error)} | {_fmt(m.mean_abs_error)} | "
                         f"{m.cosine:.7f} | {_fmt(m.snr_db, -1) if m.snr_db is None else f'{m.snr_db:.1f}'} |")
    lines += _quantization_lines(report) + _sensitivity_lines(report)
    failures = report.failures()
    if failures:
        lines += ["", "### Missed gates", ""] + [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n"


def _quantization_lines(report: Report) -> list[str]:
    quantized = [a for a in report.artifacts if a.quantization]
    if not quantized:
        return []
    lines = ["", "### INT8 calibration", ""]
    if report.calibration is not None:
        c = report.calibration
        asked = f" (the recipe asked for {c.samples_asked})" if c.samples_asked is not None else ""
        lines += [f"Calibration data: {c.data}, {c.samples_available} samples available{asked}.", ""]
    lines += ["| artifact | method | samples used | kept in float |", "|---|---|---:|---|"]
    for a in quantized:
        q = a.quantization or {}
        kept = [str(v) for values in q.get("kept_in_float", {}).values() for v in values]
        control = q.get("accuracy_control")
        if control is not None:
            reverted = control.get("reverted_to_float", [])
            kept.append(f"accuracy control (max drop {control['max_drop_points']:g} points) reverted "
                        + (", ".join(f"`{r}`" for r in reverted) if reverted else "none"))
        method = q.get("method", "")
        if q.get("calibration_method"):
            method += f", {q['calibration_method']}"
        lines.append(f"| `{a.target}` | {method} | {q.get('calibration_samples', '—')} | {'; '.join(kept) or '—'} |")
    return lines


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
