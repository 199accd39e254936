"""worth:<target>: is a mixed-precision INT8 artifact faster than FP32 on this machine?

The mixed-precision search (backends/mixed_precision.py, OpenVINO's fallback) keeps layers or op
kinds in float until the graph holds its gate; what it settles on may run no faster than the FP32
graph, and then INT8 is not worth shipping. That is a timing, so it is judged here, in a step the
engine runs with nothing beside it: timed inside the compile step, beside an NNCF calibration on
the other core, a graph that runs at 0.5x FP32 alone measured 1.6x and was refused.

The mixed artifact as deployed and the float graph it came from, in the same runtime, run the first
evaluation sample in interleaved runs (the least of each). Artifacts whose full INT8 held the gate
(no search) are not judged here: the report compares them with FP32 (a warning). The machine is key
material, as for latency: a verdict made elsewhere is not this machine's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelc_build.fingerprint import DataSource
from modelc_build.recipe_types import ModelSource, Target
from modelc_build.steps import Step, StepInputs, tool_versions
from modelc_build.steps.compile import backend_tools, compile_step_id
from modelc_build.steps.decode import decoded_needs

WORTH_FILE = "worth.json"


def worth_step_id(target: Target) -> str:
    return f"worth:{target.id}"


@dataclass(frozen=True)
class WorthStep(Step):
    target: Target
    graph: str  # id of the step whose model.onnx is the float graph the artifact was quantized from
    model: ModelSource
    data: DataSource  # its first sample is timed
    config: tuple[tuple[str, str], ...] = ()  # the runtime settings the artifact is deployed with
    kind: ClassVar[str] = "worth"
    expected_seconds: ClassVar[float] = 0.5
    fresh_process: ClassVar[bool] = True
    exclusive: ClassVar[bool] = True

    @property
    def id(self) -> str:  # type: ignore[override]
        return worth_step_id(self.target)

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (compile_step_id(self.target), self.graph) + decoded_needs(self.data)

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"time {self.target.id} against the FP32 graph where it is mixed precision (nothing beside it)"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        from modelc_build.host import cpu_info

        return {"artifact": inputs.entry(compile_step_id(self.target)).files, "graph": inputs.digest(self.graph, "model.onnx"),
                "target": self.target.material(), "config": list(self.config), "data": inputs.fingerprints.data(self.data),
                "machine": cpu_info(), "tools": tool_versions(backend_tools(self.target))}

    def run(self, inputs: StepInputs, out: Path) -> None:
        from modelc_build.manifest import QUANTIZATION_NOTES

        artifact = inputs.entry(compile_step_id(self.target))
        notes = json.loads(artifact.file(QUANTIZATION_NOTES).read_text()) if QUANTIZATION_NOTES in artifact.files else {}
        searched = notes.get("fallback") or {}
        if "mixed_cosine" not in searched:  # full INT8 held the gate, or no search ran: nothing to judge here
            result: dict[str, Any] = {"judged": False}
        else:
            result = {"judged": True, **self._time(inputs, artifact)}
            _refuse_if_not_worth_it(self.target.id, result, searched)
        (out / WORTH_FILE).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")

    def _time(self, inputs: StepInputs, artifact: Any) -> dict[str, Any]:
        from modelc_build.backends import get_backend
        from modelc_build.backends.mixed_precision import interleaved_ratio
        from modelc_build.feeds import ModelCaller

        backend = get_backend(self.target.backend)
        mixed = backend.runner([artifact.file(n) for n in artifact.files], self.model.inputs, self.model.outputs, dict(self.config))
        fp32 = backend.float_runner(inputs.file(self.graph, "model.onnx"), self.model.inputs, self.model.outputs)
        first = next(iter(inputs.batches(self.data)))
        feed = ModelCaller(self.model.inputs, mixed.infer).first_feed(first.inputs)
        with mixed, fp32:
            ratio, fp32_ms = interleaved_ratio(lambda: mixed.infer_impl(feed), lambda: fp32.infer_impl(feed))
        return {"latency_vs_fp32": round(ratio, 3), "fp32_ms": round(fp32_ms, 3)}


def _refuse_if_not_worth_it(target: str, timed: dict[str, Any], searched: dict[str, Any]) -> None:
    from modelc_build.backends.mixed_precision import refuse_if_not_worth_it

    words = f"best mixed INT8 {timed['latency_vs_fp32']:.2f}× FP32 latency {searched.get('summary', '')}".rstrip()
    refuse_if_not_worth_it(target, timed["latency_vs_fp32"], timed["fp32_ms"], words, searched["full_int8_cosine"])
