"""Steps that run in a fresh process of their own.

torch (TorchScript type mangling) and OpenVINO (generated layer names) number things with
process-wide counters, so a compile step's bytes would depend on what else the same process did
before. Running each such step in a fresh process makes its output a function of its inputs
alone, whatever the schedule, the cache state or `-j` — which is what lets a step cache and a
fanned-out CI build agree byte for byte.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from compiler.recipe import Recipe, Target


def calibrate_qdq(recipe: Recipe, onnx_model: Path, out: Path) -> None:
    """The Q/DQ INT8 graph for onnxruntime and TensorRT, from the recipe's calibration data."""
    from compiler.backends import write_quantization_notes
    from compiler.data import DataReader
    from compiler.qdq import quantize_qdq

    assert recipe.calibration is not None  # the recipe validator demands it for int8
    reader = DataReader.for_recipe(recipe.calibration, recipe)
    notes = quantize_qdq(onnx_model, recipe.model.inputs, reader.feeds,
                         recipe.quantization, out / "model.onnx")
    write_quantization_notes(out, {**notes, "calibration_samples_available": len(reader)})


def measure_layer_sensitivity(recipe: Recipe, onnx_model: Path, out: Path) -> None:
    """Per-layer INT8 sensitivity on the evaluation set, written to sensitivity.json."""
    import json

    from compiler.data import DataReader
    from compiler.sensitivity import measure_sensitivity

    assert recipe.calibration is not None and recipe.evaluation is not None
    calibration = DataReader.for_recipe(recipe.calibration, recipe)
    evaluation = DataReader(recipe.evaluation, recipe.model.inputs, recipe.preprocess, recipe.task.classes)
    result = measure_sensitivity(onnx_model, recipe.model.inputs, recipe.model.outputs,
                                 calibration.feeds, evaluation.batches,
                                 recipe.task, recipe.quantization)
    (out / "sensitivity.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")


def compile_target(recipe: Recipe, target: Target, onnx_model: Path, out: Path) -> None:
    """Compile one target into `out`: the entry point of a worker process, and called directly
    for backends whose compile step is a plain file operation."""
    from compiler.backends import CompileRequest, get_backend

    torch_model: Callable[[], Any] | None = None
    if recipe.model.kind != "onnx":
        def torch_model() -> Any:
            from compiler.sources import load_torch_model

            return load_torch_model(recipe.model)

    calibration = None
    if target.precision == "int8" and recipe.calibration is not None:
        from compiler.data import DataReader

        reader = DataReader.for_recipe(recipe.calibration, recipe)
        calibration = reader.feeds

    get_backend(target.backend).compile(CompileRequest(target, onnx_model, recipe.model.inputs, recipe.model.outputs,
                                                       out, torch_model, calibration, recipe.quantization,
                                                       _accuracy_control(recipe, target)))
    if calibration is not None:
        _note_samples_available(out, len(reader))


def _note_samples_available(out: Path, available: int) -> None:
    """The report's calibration line reads this (so a no-op rebuild needs no data reader)."""
    import json

    from compiler.manifest import QUANTIZATION_NOTES

    notes_file = out / QUANTIZATION_NOTES
    if notes_file.is_file():
        notes = json.loads(notes_file.read_text())
        notes["calibration_samples_available"] = available
        notes_file.write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")


def accuracy_controlled(recipe: Recipe, target: Target) -> bool:
    """OpenVINO int8 whose recipe gates the task-metric drop is quantized with accuracy control."""
    gate = recipe.gate_for(target.precision)
    return (target.backend == "openvino" and target.precision == "int8" and gate.max_metric_drop is not None
            and recipe.task.type in ("classification", "detection") and recipe.evaluation is not None)


def _accuracy_control(recipe: Recipe, target: Target) -> Any:
    if not accuracy_controlled(recipe, target):
        return None
    from compiler.backends import AccuracyControl
    from compiler.data import DataReader

    assert recipe.evaluation is not None
    reader = DataReader(recipe.evaluation, recipe.model.inputs, recipe.preprocess, recipe.task.classes)
    max_drop = recipe.gate_for(target.precision).max_metric_drop
    assert max_drop is not None
    return AccuracyControl(max_drop, recipe.task, recipe.task.output or recipe.model.outputs[0], reader.batches)
