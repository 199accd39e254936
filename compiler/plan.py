"""A recipe becomes a plan: an ordered DAG of steps, each naming the steps it depends on."""
from __future__ import annotations

from dataclasses import dataclass

from compiler.recipe import Recipe, Target


@dataclass(frozen=True)
class Step:
    id: str  # e.g. compile:openvino-fp16
    kind: str  # export | simplify | sensitivity | qdq | compile | verify | release
    depends_on: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Plan:
    recipe_name: str
    version: str
    steps: tuple[Step, ...]


QDQ_STEP = "quantize:qdq"
SENSITIVITY_STEP = "sensitivity"
QDQ_BACKENDS = {"onnxruntime", "tensorrt"}  # their int8 is the Q/DQ graph, made once for both


def uses_qdq_graph(target: Target) -> bool:
    return target.precision == "int8" and target.backend in QDQ_BACKENDS


def make_plan(recipe: Recipe) -> Plan:
    model = recipe.model
    if model.kind == "onnx":
        what = f"read ONNX {model.path.name if model.path else ''}"
    else:
        what = f"export {model.kind} model to ONNX (exporter {recipe.export.exporter}, opset {recipe.export.opset})"
    steps = [Step("export", "export", (), what)]
    graph = "export"
    if recipe.export.simplify:
        steps.append(Step("simplify", "simplify", ("export",), "simplify the ONNX graph with onnxsim"))
        graph = "simplify"
    if recipe.quantization.sensitivity_layers and any(t.precision == "int8" for t in recipe.targets):
        steps.append(Step(SENSITIVITY_STEP, "sensitivity", (graph,),
                          "measure each layer's INT8 sensitivity (one layer quantized at a time)"))
    if any(uses_qdq_graph(t) for t in recipe.targets):
        steps.append(Step(QDQ_STEP, "qdq", (graph,), "calibrate an INT8 Q/DQ ONNX graph (ModelOpt, on the CPU)"))
    compiles = []
    for target in recipe.targets:
        step_id = f"compile:{target.id}"
        source = "the torch model" if target.backend == "torchscript" else "the ONNX graph"
        mode = f" ({target.mode or 'trace'})" if target.backend == "torchscript" else ""
        depends = ("export",) if target.backend == "torchscript" else (graph,)
        if uses_qdq_graph(target):
            source, depends = "the Q/DQ ONNX graph", (QDQ_STEP,)
        steps.append(Step(step_id, "compile", depends, f"build {target.backend} {target.precision}{mode} from {source}"))
        compiles.append(step_id)
    data = recipe.evaluation.path.name if recipe.evaluation else "seeded random inputs"
    extra = (SENSITIVITY_STEP,) if any(s.id == SENSITIVITY_STEP for s in steps) else ()
    steps.append(Step("verify", "verify", (graph, *compiles, *extra), f"measure every artifact against the reference on {data}"))
    steps.append(Step("release", "release", ("verify",),
                      f"apply gates; write manifest and reports; store {recipe.name} {recipe.version}"))
    return Plan(recipe.name, recipe.version, tuple(steps))


GPU_BACKENDS = {"tensorrt"}


def ci_matrix(recipes: list[tuple[str, Recipe]]) -> dict[str, list[dict[str, str]]]:
    """A GitHub Actions matrix: one job per recipe x target. Jobs run
    `modelc build RECIPE --target TARGET --share-steps`; export and simplify are shared through
    the store's step cache, and a final `modelc build RECIPE --share-steps` verifies and releases."""
    include = []
    for path, recipe in recipes:
        for target in recipe.targets:
            include.append({"recipe": path, "name": recipe.name, "version": recipe.version, "target": target.id,
                            "runner": "gpu" if target.backend in GPU_BACKENDS else "cpu"})
    return {"include": include}
