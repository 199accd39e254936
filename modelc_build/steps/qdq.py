"""quantize:qdq: the INT8 Q/DQ ONNX graph (NVIDIA ModelOpt, calibrated on the CPU), the input of
TensorRT int8 engines. Cached by (graph digest, data digest, method and parameters, tool versions)."""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelc_build.fingerprint import DataSource
from modelc_build.recipe_types import Quantization
from modelc_build.steps import Step, StepInputs, tool_versions

QDQ_STEP = "quantize:qdq"


@dataclass(frozen=True)
class QdqStep(Step):
    graph: str  # the id of the step whose model.onnx is quantized
    calibration: DataSource
    quantization: Quantization
    kind: ClassVar[str] = "qdq"
    expected_seconds: ClassVar[float] = 3.0
    memory_hint: ClassVar[float] = 4.5
    fresh_process: ClassVar[bool] = True
    id: ClassVar[str] = QDQ_STEP  # type: ignore[misc]
    description: ClassVar[str] = "calibrate an INT8 Q/DQ ONNX graph (ModelOpt, on the CPU)"  # type: ignore[misc]

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.graph,)

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"graph": inputs.digest(self.graph, "model.onnx"), "calibration": inputs.fingerprints.data(self.calibration),
                "quantization": asdict(self.quantization), "tools": tool_versions(("nvidia-modelopt", "onnxruntime", "onnx"))}

    def run(self, inputs: StepInputs, out: Path) -> None:
        from modelc_build.backends import write_quantization_notes
        from modelc_build.feeds import with_carried_state
        from modelc_build.qdq import quantize_qdq

        reader = inputs.fingerprints.reader(self.calibration)
        warn_shortfall(reader)
        graph = inputs.file(self.graph, "model.onnx")
        notes = quantize_qdq(graph, self.calibration.inputs, with_carried_state(reader.feeds, graph, self.calibration.inputs),
                             self.quantization, out / "model.onnx")
        write_quantization_notes(out, {**notes, "calibration_samples_available": len(reader)})


def warn_shortfall(reader: Any) -> None:
    """Data holding fewer samples than the recipe asks for: said on stderr, and the build goes on."""
    warning = reader.shortfall()
    if warning:
        print(warning, file=sys.stderr, flush=True)
