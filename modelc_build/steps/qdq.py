"""quantize:qdq: the INT8 Q/DQ ONNX graph (NVIDIA ModelOpt, calibrated on the CPU), the input of
TensorRT int8 engines; quantize:fp8 and quantize:int4-wo the FP8 Q/DQ and weight-only INT4 graphs
of tensorrt fp8 and int4-wo targets. Cached by (graph digest, data digest, method and parameters,
tool versions)."""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelc_build.fingerprint import DataSource
from modelc_build.recipe_types import Quantization
from modelc_build.steps import Step, StepInputs, tool_versions

QDQ_STEP = "quantize:qdq"
MODES = {"qdq": "int8", "qdq-fp8": "fp8", "qdq-int4-wo": "int4-wo"}  # a target's graph kind -> the quantization mode


def qdq_step_id(mode: str) -> str:
    return QDQ_STEP if mode == "int8" else f"quantize:{mode}"


@dataclass(frozen=True)
class QdqStep(Step):
    graph: str  # the id of the step whose model.onnx is quantized
    calibration: DataSource
    quantization: Quantization
    mode: str = "int8"  # int8 | fp8 | int4-wo
    kind: ClassVar[str] = "qdq"
    expected_seconds: ClassVar[float] = 3.0
    memory_hint: ClassVar[float] = 4.5
    fresh_process: ClassVar[bool] = True

    @property
    def id(self) -> str:  # type: ignore[override]
        return qdq_step_id(self.mode)

    @property
    def description(self) -> str:  # type: ignore[override]
        what = {"int8": "an INT8 Q/DQ", "fp8": "an FP8 Q/DQ", "int4-wo": "a weight-only INT4"}[self.mode]
        return f"calibrate {what} ONNX graph (ModelOpt, on the CPU)"

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.graph,)

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"graph": inputs.digest(self.graph, "model.onnx"), "calibration": inputs.fingerprints.data(self.calibration),
                "quantization": asdict(self.quantization), **({"mode": self.mode} if self.mode != "int8" else {}),
                "tools": tool_versions(("nvidia-modelopt", "onnxruntime", "onnx"))}

    def run(self, inputs: StepInputs, out: Path) -> None:
        from modelc_build.backends import write_quantization_notes
        from modelc_build.feeds import with_carried_state
        from modelc_build.qdq import quantize_qdq

        reader = inputs.fingerprints.reader(self.calibration)
        warn_shortfall(reader)
        graph = inputs.file(self.graph, "model.onnx")
        notes = quantize_qdq(graph, self.calibration.inputs, with_carried_state(reader.feeds, graph, self.calibration.inputs),
                             self.quantization, out / "model.onnx", mode=self.mode)
        write_quantization_notes(out, {**notes, "calibration_samples_available": len(reader)})


def warn_shortfall(reader: Any) -> None:
    """Data holding fewer samples than the recipe asks for: said on stderr, and the build goes on."""
    warning = reader.shortfall()
    if warning:
        print(warning, file=sys.stderr, flush=True)
