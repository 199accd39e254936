"""simplify: the exported graph through onnxsim (constant folding, shape inference)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelc_build.recipe_types import TensorSpec
from modelc_build.steps import Step, StepInputs, tool_versions
from modelc_build.steps.export import EXPORT_STEP

SIMPLIFY_STEP = "simplify"
SIMPLIFY_NOTES = "simplify.json"  # whether the graph was simplified, and why not


@dataclass(frozen=True)
class SimplifyStep(Step):
    inputs: tuple[TensorSpec, ...] = ()  # to feed both graphs one example and compare
    kind: ClassVar[str] = "simplify"
    expected_seconds: ClassVar[float] = 0.5
    memory_hint: ClassVar[float] = 5.0
    fresh_process: ClassVar[bool] = True  # onnx, onnxsim and onnxruntime are imported once, by the fork server
    id: ClassVar[str] = SIMPLIFY_STEP  # type: ignore[misc]
    needs: ClassVar[tuple[str, ...]] = (EXPORT_STEP,)  # type: ignore[misc]
    description: ClassVar[str] = "simplify the ONNX graph with onnxsim"  # type: ignore[misc]

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"graph": inputs.digest(EXPORT_STEP, "model.onnx"), "inputs": [spec.to_json() for spec in self.inputs],
                "tools": tool_versions(("onnx", "onnxsim", "onnxruntime"))}

    def run(self, inputs: StepInputs, out: Path) -> None:
        from modelc_build.export import simplify_onnx

        notes = simplify_onnx(inputs.file(EXPORT_STEP, "model.onnx"), out / "model.onnx", self.inputs)
        (out / SIMPLIFY_NOTES).write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")
