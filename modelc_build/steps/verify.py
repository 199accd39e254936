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

from modelc_build.fingerprint import DataSource
from modelc_build.recipe import ModelSource, Target, Task
from modelc_build.steps import Step, StepInputs, tool_versions
from modelc_build.steps.compile import compile_step_id

if TYPE_CHECKING:
    import numpy as np

    from modelc_build.backends import Runner
    from modelc_build.data import Batch

REFERENCE_STEP = "reference"
EVALUATION_FILE = "evaluation.json"
MEASURE_TOOLS = ("torch", "onnxruntime", "openvino", "numpy", "pillow")


def verify_step_id(target: Target) -> str:
    return f"verify:{target.id}"


def reference_runner(model: ModelSource) -> tuple[Runner, str]:
    """The model every artifact is measured against, and how the report names it."""
    if model.kind == "onnx":
        from modelc_build.backends.onnxruntime import OnnxRuntimeRunner

        assert model.path is not None
        return OnnxRuntimeRunner(model.path, model.inputs, model.outputs), f"onnxruntime FP32 on {model.path.name}"
    from modelc_build.backends.torchscript import TorchModuleRunner
    from modelc_build.sources import load_torch_model

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

    def crashed(self, exit_code: int | None) -> Exception:
        from modelc_build.steps.export import model_code_crashed

        return model_code_crashed(self.model, self.id, exit_code)

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"model": inputs.fingerprints.source(self.model), "data": inputs.fingerprints.data(self.evaluation),
                "tools": tool_versions(MEASURE_TOOLS)}

    def run(self, inputs: StepInputs, out: Path) -> None:
        import numpy as np

        from modelc_build.feeds import ModelCaller

        runner, label = reference_runner(self.model)
        samples = 0
        with runner:
            call = ModelCaller(self.model.inputs, runner.infer)
            for number, batch in enumerate(inputs.fingerprints.batches(self.evaluation)):
                outputs = call(batch.inputs)
                np.savez(out / f"outputs-{number:06d}.npz", **outputs)  # type: ignore[arg-type]
                samples += len(batch)
        data = self.evaluation.label
        carried = [f"{spec.name} ← {spec.state_from}" for spec in self.model.inputs if spec.state_from]
        if carried:
            data += f", read as one stream, one sample per call, state carried ({', '.join(carried)})"
        (out / "reference.json").write_text(json.dumps({"reference": label, "data": data,
                                                        "samples": samples}, indent=2, sort_keys=True) + "\n")


def stored_reference_outputs(entry_folder: Path, batches: Iterator[Batch]) -> Iterator[tuple[Batch, dict[str, np.ndarray]]]:
    """Each evaluation batch with the reference's outputs for it, read back from the reference step."""
    import numpy as np

    for number, batch in enumerate(batches):
        with np.load(entry_folder / f"outputs-{number:06d}.npz", allow_pickle=False) as archive:
            yield batch, {name: archive[name] for name in archive.files}


@dataclass(frozen=True)
class Setting:
    """How an artifact is run for one measurement: as deployed (the runtime settings the recipe
    declares), pinned to f32, or with oneDNN limited to an older instruction set."""

    name: str  # deploy | f32 | avx2 | avx512_core
    config: tuple[tuple[str, str], ...] = ()  # runtime properties (OpenVINO compile_model)
    isa: str | None = None  # ONEDNN_MAX_CPU_ISA for a fresh interpreter

    @property
    def suffix(self) -> str:
        return "" if self.name == "deploy" else f"@{self.name}"


DEPLOY = Setting("deploy")


@dataclass(frozen=True)
class VerifyStep(Step):
    target: Target
    evaluation: DataSource
    task: Task
    outputs: tuple[str, ...]
    setting: Setting = DEPLOY
    kind: ClassVar[str] = "verify"
    fresh_process: ClassVar[bool] = True

    @property
    def id(self) -> str:  # type: ignore[override]
        return verify_step_id(self.target) + self.setting.suffix

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (compile_step_id(self.target), REFERENCE_STEP)

    @property
    def description(self) -> str:  # type: ignore[override]
        how = {"deploy": "as deployed", "f32": "pinned to f32"}.get(self.setting.name,
                                                                      f"with oneDNN limited to {self.setting.isa}")
        return f"measure {self.target.id} {how} against the reference on {self.evaluation.label}"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"artifact": inputs.entry(compile_step_id(self.target)).files,
                "reference": inputs.entry(REFERENCE_STEP).files, "data": inputs.fingerprints.data(self.evaluation),
                "task": inputs.fingerprints.task(self.task), "outputs": list(self.outputs), "setting": asdict(self.setting),
                "tools": tool_versions(MEASURE_TOOLS)}

    def run(self, inputs: StepInputs, out: Path) -> None:
        if self.setting.isa is None:
            measured = self.measure(inputs)
        else:
            measured = in_fresh_interpreter(self.measure, inputs, {"ONEDNN_MAX_CPU_ISA": self.setting.isa})
        measured["setting"] = {"name": self.setting.name, "config": dict(self.setting.config), "isa": self.setting.isa}
        (out / EVALUATION_FILE).write_text(json.dumps(measured, indent=2, sort_keys=True) + "\n")

    def measure(self, inputs: StepInputs) -> dict[str, Any]:
        from modelc_build.accuracy import compare, evaluation_to_dict
        from modelc_build.backends import get_backend

        artifact = inputs.entry(compile_step_id(self.target))
        files = [artifact.file(name) for name in artifact.files]
        runner = get_backend(self.target.backend).runner(files, self.evaluation.inputs, self.outputs,
                                                         dict(self.setting.config))
        pairs = stored_reference_outputs(inputs.entry(REFERENCE_STEP).path, inputs.fingerprints.batches(self.evaluation))
        with runner:
            evaluation = compare(pairs, {self.target.id: runner}, self.evaluation.inputs, self.outputs, self.task)
        return evaluation_to_dict(evaluation[self.target.id])


def in_fresh_interpreter(function: Any, argument: Any, environment: dict[str, str]) -> Any:
    """`function(argument)` in a new Python interpreter started with `environment` set: libraries
    such as oneDNN read their settings once per process, so the variable must be there first."""
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            return pool.submit(function, argument).result()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
