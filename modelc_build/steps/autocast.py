"""autocast: the FP16 mixed-precision ONNX graph (NVIDIA ModelOpt AutoCast, on the CPU), the input
of TensorRT fp16 engines. Cached by (graph digest, tool versions)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelc_build.steps import Step, StepInputs, tool_versions

AUTOCAST_STEP = "autocast:fp16"
AUTOCAST_NOTES = "autocast.json"


@dataclass(frozen=True)
class AutocastStep(Step):
    graph: str  # the id of the step whose model.onnx is converted
    kind: ClassVar[str] = "autocast"
    expected_seconds: ClassVar[float] = 2.0
    memory_hint: ClassVar[float] = 3.0
    fresh_process: ClassVar[bool] = True
    id: ClassVar[str] = AUTOCAST_STEP  # type: ignore[misc]
    description: ClassVar[str] = "convert the graph to mixed FP16 (ModelOpt AutoCast, on the CPU)"  # type: ignore[misc]

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.graph,)

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"graph": inputs.digest(self.graph, "model.onnx"), "tools": tool_versions(("nvidia-modelopt", "onnxruntime", "onnx"))}

    def run(self, inputs: StepInputs, out: Path) -> None:
        from modelc_build.qdq import autocast_fp16

        notes = autocast_fp16(inputs.file(self.graph, "model.onnx"), out / "model.onnx")
        (out / AUTOCAST_NOTES).write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")
