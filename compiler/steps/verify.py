"""reference and verify:<target>: the accuracy check, as steps that run side by side.

`reference` runs the reference model (PyTorch eager, the TorchScript source, or onnxruntime FP32
on an ONNX source) once over the evaluation data and keeps its outputs, batch by batch; it is
cached by model + data. Each `verify:<target>` then runs one artifact on the same batches and
compares, so artifacts are measured in parallel and a changed target re-verifies only itself.
Gates are not key material: they are applied to these cached measurements by the release.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from compiler.fingerprint import DataSource
from compiler.recipe import ModelSource, Target, Task
from compiler.steps import Step, StepInputs, tool_versions
from compiler.steps.compile import compile_step_id

if TYPE_CHECKING:
    import numpy as np

    from compiler.backends import Runner
    from compiler.data import Batch

REFERENCE_STEP = "reference"
EVALUATION_FILE = "evaluation.json"
MEASURE_TOOLS = ("torch", "onnxruntime", "openvino", "numpy", "pillow")


def verify_step_id(target: Target) -> str:
    return f"verify:{target.id}"


def reference_runner(model: ModelSource) -> tuple[Runner, str]:
    """The model every artifact is measured against, and how the report names it."""
    if model.kind == "onnx":
        from compiler.backends.onnxruntime import OnnxRuntimeRunner

        assert model.path is not None
        return OnnxRuntimeRunner(model.path, model.inputs, model.outputs), f"onnxruntime FP32 on {model.path.name}"
    from compiler.backends.torchscript import TorchModuleRunner
    from compiler.sources import load_torch_model

    label = "PyTorch eager" if model.kind == "torch" else "the TorchScript source"
    return TorchModuleRunner(model.inputs, model.outputs, module=load_torch_model(model)), label


@dataclass(frozen=True)
class ReferenceStep(Step):
    model: ModelSource
    evaluation: DataSource
    kind: ClassVar[str] = "reference"
    fresh_process: ClassVar[bool] = True
    id: ClassVar[str] = REFERENCE_STEP  # type: ignore[misc]
    needs: ClassVar[tuple[str, ...]] = ()  # type: ignore[misc]

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"run the reference model on {self.evaluation.label}"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"model": inputs.fingerprints.source(self.model), "data": inputs.fingerprints.data(self.evaluation),
                "tools": tool_versions(MEASURE_TOOLS)}

    def run(self, inputs: StepInputs, out: Path) -> None:
        import numpy as np

        from compiler.accuracy import run_batch

        runner, label = reference_runner(self.model)
        samples = 0
        with runner:
            for number, batch in enumerate(inputs.fingerprints.batches(self.evaluation)):
                np.savez(out / f"outputs-{number:06d}.npz", **run_batch(runner, batch, self.model.inputs))
                samples += len(batch)
        (out / "reference.json").write_text(json.dumps({"reference": label, "data": self.evaluation.label,
                                                        "samples": samples}, indent=2, sort_keys=True) + "\n")


def stored_reference_outputs(entry_folder: Path, batches: Iterator[Batch]) -> Iterator[tuple[Batch, dict[str, np.ndarray]]]:
    """Each evaluation batch with the reference's outputs for it, read back from the reference step."""
    import numpy as np

    for number, batch in enumerate(batches):
        with np.load(entry_folder / f"outputs-{number:06d}.npz", allow_pickle=False) as archive:
            yield batch, {name: archive[name] for name in archive.files}


@dataclass(frozen=True)
class VerifyStep(Step):
    target: Target
    evaluation: DataSource
    task: Task
    outputs: tuple[str, ...]
    kind: ClassVar[str] = "verify"
    fresh_process: ClassVar[bool] = True

    @property
    def id(self) -> str:  # type: ignore[override]
        return verify_step_id(self.target)

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (compile_step_id(self.target), REFERENCE_STEP)

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"measure {self.target.id} against the reference on {self.evaluation.label}"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"artifact": inputs.entry(compile_step_id(self.target)).files,
                "reference": inputs.entry(REFERENCE_STEP).files, "data": inputs.fingerprints.data(self.evaluation),
                "task": asdict(self.task), "outputs": list(self.outputs), "tools": tool_versions(MEASURE_TOOLS)}

    def run(self, inputs: StepInputs, out: Path) -> None:
        from compiler.accuracy import compare, evaluation_to_dict
        from compiler.backends import get_backend

        artifact = inputs.entry(compile_step_id(self.target))
        files = [artifact.file(name) for name in artifact.files]
        runner = get_backend(self.target.backend).runner(files, self.evaluation.inputs, self.outputs)
        pairs = stored_reference_outputs(inputs.entry(REFERENCE_STEP).path, inputs.fingerprints.batches(self.evaluation))
        with runner:
            evaluation = compare(pairs, {self.target.id: runner}, self.evaluation.inputs, self.outputs, self.task)
        (out / EVALUATION_FILE).write_text(json.dumps(evaluation_to_dict(evaluation[self.target.id]), indent=2,
                                                      sort_keys=True) + "\n")
