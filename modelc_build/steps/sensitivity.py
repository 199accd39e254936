"""sensitivity: each layer alone in INT8, scored on held-out data; the worst are candidates for
`quantization.ignore`."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelc_build.fingerprint import DataSource
from modelc_build.recipe_types import Quantization, Task
from modelc_build.steps import Step, StepInputs, tool_versions

SENSITIVITY_STEP = "sensitivity"


@dataclass(frozen=True)
class SensitivityStep(Step):
    graph: str
    calibration: DataSource
    scoring: DataSource  # the data the layers are scored on
    task: Task
    outputs: tuple[str, ...]
    quantization: Quantization
    kind: ClassVar[str] = "sensitivity"
    expected_seconds: ClassVar[float] = 10.0
    memory_hint: ClassVar[float] = 4.5
    fresh_process: ClassVar[bool] = True
    id: ClassVar[str] = SENSITIVITY_STEP  # type: ignore[misc]

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.graph,)

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"measure each layer's INT8 sensitivity on {self.scoring.role} data (one layer quantized at a time)"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        facts = inputs.fingerprints
        return {"graph": inputs.digest(self.graph, "model.onnx"), "calibration": facts.data(self.calibration),
                "scoring": facts.data(self.scoring), "task": facts.task(self.task), "outputs": list(self.outputs),
                "quantization": asdict(self.quantization), "tools": tool_versions(("nvidia-modelopt", "onnxruntime", "onnx"))}

    def run(self, inputs: StepInputs, out: Path) -> None:
        from modelc_build.feeds import with_carried_state
        from modelc_build.sensitivity import measure_sensitivity

        facts = inputs.fingerprints
        calibration = facts.reader(self.calibration)
        scoring = facts.reader(self.scoring)
        graph = inputs.file(self.graph, "model.onnx")
        feeds = with_carried_state(calibration.feeds, graph, self.calibration.inputs)
        result = measure_sensitivity(graph, self.calibration.inputs, self.outputs, feeds, scoring.batches, self.task,
                                     self.quantization)
        (out / "sensitivity.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
