"""export: the model as an ONNX graph (torch.onnx.export of a torch or TorchScript source, or the
ONNX source file itself, checked against the declared inputs and outputs)."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelc_build.errors import InputError, first_line
from modelc_build.recipe_types import ExportOptions, ModelSource
from modelc_build.steps import Step, StepInputs, tool_versions

EXPORT_STEP = "export"
EXPORT_NOTES = "export.json"  # which exporter ran, and why the first choice did not


@dataclass(frozen=True)
class ExportStep(Step):
    model: ModelSource
    options: ExportOptions
    kind: ClassVar[str] = "export"
    expected_seconds: ClassVar[float] = 5.0
    memory_hint: ClassVar[float] = 5.5
    fresh_process: ClassVar[bool] = True  # the model's own code runs here: it can never end modelc itself
    id: ClassVar[str] = EXPORT_STEP  # type: ignore[misc]
    needs: ClassVar[tuple[str, ...]] = ()  # type: ignore[misc]

    @property
    def description(self) -> str:  # type: ignore[override]
        if self.model.kind == "onnx":
            return f"read ONNX {self.model.path.name if self.model.path else ''}"
        return f"export {self.model.kind} model to ONNX (exporter {self.options.exporter}, opset {self.options.opset})"

    def crashed(self, exit_code: int | None) -> Exception:
        return model_code_crashed(self.model, self.id, exit_code)

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"source": inputs.fingerprints.source(self.model),
                "export": asdict(self.options) if self.model.kind != "onnx" else {},
                "tools": tool_versions(("torch", "onnx", "onnxscript"))}

    def run(self, inputs: StepInputs, out: Path) -> None:
        destination = out / "model.onnx"
        if self.model.kind == "onnx":
            read_onnx_source(self.model, destination)
            (out / EXPORT_NOTES).write_text(json.dumps({"requested": "none", "used": "none", "fallback_reason": None},
                                                      indent=2, sort_keys=True) + "\n")
            return
        from modelc_build.export import check_exported_interface, check_model_accepts_inputs, export_onnx
        from modelc_build.sources import load_torch_model

        model = load_torch_model(self.model)
        check_model_accepts_inputs(model, self.model.inputs, self.model.outputs)
        exported = export_onnx(model, self.model.inputs, self.model.outputs, self.options, destination,
                               scripted=self.model.kind == "torchscript")
        check_exported_interface(destination, self.model.inputs, self.model.outputs)
        (out / EXPORT_NOTES).write_text(json.dumps(asdict(exported), indent=2, sort_keys=True) + "\n")


def model_code_crashed(model: ModelSource, step_id: str, exit_code: int | None) -> Exception:
    """A step that runs the model's own code ended its process without an answer."""
    if model.kind == "torch":
        return InputError(f"the {step_id} step's process ended with exit code {exit_code} while running the model from "
                          f"model.factory '{model.factory}' (os._exit or a crash in its code): fix the factory or the model")
    return InputError(f"the {step_id} step's process ended with exit code {exit_code} while running the "
                      f"{model.kind} model {model.path}: check the model file")


def read_onnx_source(model: ModelSource, destination: Path) -> None:
    import onnx

    path = model.path
    assert path is not None
    try:
        graph = onnx.load(str(path))
        onnx.checker.check_model(graph)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path}: not a valid ONNX model ({first})") from exc
    initializers = {i.name for i in graph.graph.initializer}
    graph_inputs = [i.name for i in graph.graph.input if i.name not in initializers]
    graph_outputs = [o.name for o in graph.graph.output]
    declared_inputs = [s.name for s in model.inputs]
    for what, found, declared in (("inputs", graph_inputs, declared_inputs), ("outputs", graph_outputs, list(model.outputs))):
        if found != declared:
            raise InputError(f"{path}: {_names_mismatch(what, found, declared)}")
    if apply_declared_shapes(graph, model):
        _still_loads(path, graph, model)
        onnx.save(graph, str(destination))
    else:
        shutil.copyfile(path, destination)


def _names_mismatch(what: str, found: list[str], declared: list[str]) -> str:
    """What differs between the graph's input (or output) names and the recipe's, and how to fix it."""
    if sorted(found) == sorted(declared):
        return (f"the graph takes its {what} in the order {found}; model.{what} lists {declared}: list model.{what} in "
                "the graph's order")
    missing, extra = [n for n in declared if n not in found], [n for n in found if n not in declared]
    parts = [f"model.{what} names {missing}, which the graph does not have" if missing else "",
             f"the graph also has {extra}, which model.{what} does not name" if extra else ""]
    return "; ".join(p for p in parts if p) + f" (the graph's {what}: {found}): make model.{what} match"


def _still_loads(path: Path, graph: Any, model: ModelSource) -> None:
    """Fixing a dimension the recipe declares can break a graph that computes shapes from it (a
    Squeeze of an axis that is no longer 1): name the declared shapes as the cause."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - which fixed dimension broke it is said below
        try:
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - the graph did not load as exported either: not our doing
            return
        fixed = [f"{spec.name} {list(spec.shape)}" for spec in model.inputs if any(isinstance(d, int) for d in spec.shape)]
        raise InputError(f"{path}: with the fixed dimensions model.inputs declares ({'; '.join(fixed)}) the graph no longer "
                         f"loads ({first_line(exc)[:200]}), while it loads as exported: declare those axes with a name "
                         "(dynamic), as the graph has them") from exc


def apply_declared_shapes(graph: Any, model: ModelSource) -> bool:
    """Fixed dimensions the recipe declares become fixed in the graph (runtimes, OpenVINO above
    all, are faster with static shapes); dynamic ones stay dynamic. A fixed dimension of the graph
    that the recipe declares otherwise is an input error naming both. True when the graph changed."""
    changed = False
    by_name = {i.name: i for i in graph.graph.input}
    for spec in model.inputs:
        dims = by_name[spec.name].type.tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            raise InputError(f"{model.path}: input '{spec.name}' has {len(dims)} axes, model.inputs declares "
                             f"{list(spec.shape)}: make them match")
        for axis, (dim, declared) in enumerate(zip(dims, spec.shape)):
            if isinstance(declared, str):
                if dim.HasField("dim_value"):
                    raise InputError(f"{model.path}: input '{spec.name}' axis {axis} is fixed at {dim.dim_value} in the "
                                     f"graph, model.inputs declares it dynamic ('{declared}'): declare {dim.dim_value}, "
                                     "or export the model with that axis dynamic")
                continue
            if dim.HasField("dim_value") and dim.dim_value != declared:
                raise InputError(f"{model.path}: input '{spec.name}' axis {axis} is {dim.dim_value} in the graph, "
                                 f"{declared} in model.inputs: make them match")
            if not dim.HasField("dim_value"):
                dim.dim_value = declared  # clears dim_param
                changed = True
    return changed
