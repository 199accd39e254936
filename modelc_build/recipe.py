"""The recipe format: load YAML, validate against the shipped JSON Schema, apply defaults, and
return a typed, frozen `Recipe`.

Every problem is collected before anything is raised, and each names file:line:column and the
key path, so one run of `modelc validate` shows the whole list.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from modelc_build.backends import Capabilities, backend_names, capabilities
from modelc_build.errors import InputError, RecipeError, RecipeProblem
from modelc_build.migrate import change_at
from modelc_build.recipe_types import (
    CALIBRATED,
    IMAGE_SUFFIXES,
    Dataset,
    ExportOptions,
    Gate,
    Latency,
    ModelSource,
    Preprocess,
    Quantization,
    Recipe,
    Target,
    Task,
    TensorSpec,
    TokenFields,
    VerifyOptions,
)

# --- loading ---------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def recipe_schema() -> dict[str, Any]:
    """The shipped schema, with the backends and precisions the registered backends' tables name
    (the shipped file lists the built-in ones: a test holds the two together)."""
    schema: dict[str, Any] = json.loads(resources.files("modelc_build.schema").joinpath("recipe.schema.json").read_text())
    target = schema["$defs"]["target"]["properties"]
    tables = backend_tables()
    target["backend"]["enum"] = _extended(target["backend"]["enum"], tables)
    offered = {p for table in tables.values() for p in (*table.precisions, *table.refused)}
    target["precisions"]["items"]["enum"] = _extended(target["precisions"]["items"]["enum"], offered)
    return schema


def _extended(listed: list[str], names: Any) -> list[str]:
    """The shipped list in its order, then any name it lacks."""
    return [*listed, *sorted(set(names) - set(listed))]


@dataclass(frozen=True)
class _Located:
    """The parsed document and the source position of every key and value in it."""

    data: Any
    value_marks: dict[tuple[Any, ...], tuple[int, int]]
    key_marks: dict[tuple[Any, ...], tuple[int, int]]


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _walk(node: yaml.Node, path: tuple[Any, ...], located: _Located, problems: list[tuple[tuple[int, int], str, str]]) -> None:
    located.value_marks[path] = _mark(node)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                problems.append((_mark(key_node), _key_path(path + (key,)), f"duplicate key '{key}': keep only one"))
            seen.add(key)
            located.key_marks[path + (key,)] = _mark(key_node)
            _walk(value_node, path + (key,), located, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), located, problems)


def _key_path(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


MAX_EXPANDED_NODES = 100_000  # a recipe is a page; aliases may not blow it up ("billion laughs")


def _expanded_size(node: yaml.Node | None) -> int:
    """Nodes the document would have with every alias expanded, counted without expanding: the
    composed tree shares one node object per anchor, so sizes are memoised by identity."""
    sizes: dict[int, int] = {}

    def size(current: yaml.Node) -> int:
        if id(current) in sizes:
            return sizes[id(current)]
        sizes[id(current)] = MAX_EXPANDED_NODES + 1  # a cycle counts as too big
        children: list[yaml.Node] = []
        if isinstance(current, yaml.MappingNode):
            children = [part for pair in current.value for part in pair]
        elif isinstance(current, yaml.SequenceNode):
            children = list(current.value)
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_EXPANDED_NODES:
                break
        sizes[id(current)] = total
        return total

    return 0 if node is None else size(node)


def _parse(path: Path, text: str) -> tuple[_Located, list[RecipeProblem]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if _expanded_size(node) > MAX_EXPANDED_NODES:
            raise RecipeError([RecipeProblem(str(path), 1, 1, "", f"the YAML expands to more than {MAX_EXPANDED_NODES:,} "
                                             "nodes through its aliases (&anchor / *alias): write the recipe out without "
                                             "nested aliases")])
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError([RecipeProblem(str(path), line, column, "", f"not valid YAML: {problem}")]) from exc
    located = _Located(data, {}, {})
    raw_problems: list[tuple[tuple[int, int], str, str]] = []
    if node is not None:
        _walk(node, (), located, raw_problems)
    problems = [RecipeProblem(str(path), line, col, key, msg) for (line, col), key, msg in raw_problems]
    return located, problems


def key_locations(path: Path) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Key path -> (line, column) of every key of a recipe file, for tools that point at a line
    (the GitHub annotations of modelc_build.actions)."""
    located, _ = _parse(path, path.read_text())
    return located.key_marks


def _schema_problems(path: Path, located: _Located) -> list[RecipeProblem]:
    import jsonschema  # imported here: `modelc --help` should not pay for it

    validator = jsonschema.Draft202012Validator(recipe_schema())
    problems: list[RecipeProblem] = []
    for error in validator.iter_errors(located.data):
        problems.extend(_explain(path, located, error))
    return problems


def _explain(path: Path, located: _Located, error: Any) -> list[RecipeProblem]:
    """Turn one jsonschema error into problems a person can act on."""
    at = tuple(error.absolute_path)
    line, column = located.value_marks.get(at, (1, 1))
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        problems = []
        for key in sorted(set(error.instance) - set(allowed)):
            kline, kcol = located.key_marks.get(at + (key,), (line, column))
            change = change_at(at + (key,))
            if change is not None:  # a key an older modelc took: what replaced it, and the command that rewrites it
                problems.append(RecipeProblem(str(path), kline, kcol, _key_path(at + (key,)), change.message()))
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys here: {', '.join(allowed)}"
            problems.append(RecipeProblem(str(path), kline, kcol, _key_path(at + (key,)), f"unknown key '{key}': {hint}"))
        return problems
    if error.validator == "required":
        missing = [k for k in error.validator_value if isinstance(error.instance, dict) and k not in error.instance]
        return [RecipeProblem(str(path), line, column, _key_path(at), f"missing required key '{k}': add it") for k in missing]
    if error.validator == "enum":
        message = f"{error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
        return [RecipeProblem(str(path), line, column, _key_path(at), message)]
    if error.validator == "const":
        message = f"must be {error.validator_value!r}, got {error.instance!r}"
        return [RecipeProblem(str(path), line, column, _key_path(at), message)]
    if error.validator == "pattern" and "description" in error.schema:
        message = f"{error.instance!r} is not allowed here: {error.schema['description']}"
        return [RecipeProblem(str(path), line, column, _key_path(at), message)]
    if error.validator == "oneOf" and at and "shape" in at:
        message = f"{error.instance!r} is neither a positive integer nor a symbolic dimension name such as 'batch'"
        return [RecipeProblem(str(path), line, column, _key_path(at), message)]
    return [RecipeProblem(str(path), line, column, _key_path(at), error.message)]


def _not_finite(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], float]]:
    """Every .nan / .inf in the document (JSON Schema's minimum and maximum let NaN through)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(at, value)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _not_finite(item, at + (key,))]
    if isinstance(value, list):
        return [found for index, item in enumerate(value) for found in _not_finite(item, at + (index,))]
    return []


def _target(entry: dict[str, Any], precision: str) -> Target:
    from modelc_build.gpus import DEFAULT_GPUS, canonical

    backend = entry["backend"]
    if "isa" in capabilities(backend).options:
        from modelc_build.backends.aoti import DEFAULT_ISA

        return Target(backend, precision, isa=str(entry.get("isa", DEFAULT_ISA)))
    if not capabilities(backend).gpu:
        return Target(backend, precision, entry.get("mode"))
    gpus = tuple(dict.fromkeys(canonical(g) or g for g in entry.get("gpus", DEFAULT_GPUS)))
    max_batch = int(entry.get("max_batch", 32))
    return Target(backend, precision, None, gpus, max_batch, int(entry.get("opt_batch", min(8, max_batch))),
                  bool(entry.get("verify_on_gpu", False)), str(entry.get("flavour", "auto")))


Add = Callable[[tuple[Any, ...], str], None]  # report a problem at a key path


def _cross_field_problems(path: Path, located: _Located) -> list[RecipeProblem]:
    """Rules JSON Schema cannot say clearly: combinations of keys, one section at a time."""
    data = located.data
    problems: list[RecipeProblem] = []

    def add(at: tuple[Any, ...], message: str) -> None:
        line, column = located.value_marks.get(at, located.value_marks.get(at[:-1], (1, 1)))
        problems.append(RecipeProblem(str(path), line, column, _key_path(at), message))

    for at, value in _not_finite(data):
        add(at, f"{value} is not a number a gate or setting can use: write a finite number")
    _check_model_source(data, add)
    _check_targets(data, add)
    _check_datasets(data, add)
    _check_labels(data, add)
    _check_preprocess_size(data, add)
    _check_task(data, add)
    _check_gates(data, add)
    return problems


def backend_tables() -> dict[str, Capabilities]:
    """Every registered backend's table (modelc_build/backends/): the recipe's checks read these."""
    return {name: capabilities(name) for name in backend_names()}


def _target_ids(data: dict[str, Any]) -> list[tuple[Any, Any]]:
    return [(t.get("backend"), p) for t in data.get("targets", []) for p in t.get("precisions", [])]


def _check_model_source(data: dict[str, Any], add: Add) -> None:
    """A torch source has a factory and weights; a file source has a path; Python arguments and
    the exporter fit the source."""
    model = data.get("model", {})
    source = model.get("source")
    if source == "torch":
        for key in ("factory", "weights"):
            if key not in model:
                add(("model",), f"missing required key '{key}': a torch source needs a factory and a weights file")
        if "path" in model:
            add(("model", "path"), "'path' is for onnx and torchscript sources; a torch source uses 'factory' and 'weights'")
    elif source in ("onnx", "torchscript"):
        if "path" not in model:
            add(("model",), f"missing required key 'path': a {source} source needs the model file")
        for key in ("factory", "weights", "factory_args", "strict", "ignore_weights"):
            if key in model:
                add(("model", key), f"'{key}' is only for torch sources; remove it")
    _check_inputs(model, add)
    if "arguments" in model:
        if source == "onnx":
            add(("model", "arguments"), "an ONNX graph takes tensors only: declare the value as an input with value: …")
        for index, target in enumerate(data.get("targets", [])):
            if target.get("mode") == "script":
                add(("targets", index, "mode"), "model.arguments are fixed by tracing; scripting keeps forward's "
                    "parameters: use mode: trace")
    export = data.get("export", {})
    if source == "torchscript" and export.get("exporter", "auto") == "dynamo":
        add(("export", "exporter") if "exporter" in export else ("model", "source"),
            "a torchscript source can only be exported by the TorchScript-based exporter: set export.exporter: torchscript "
            "or auto")


def _check_targets(data: dict[str, Any], add: Add) -> None:
    """Each backend's precisions and options; int8 needs calibration data; no target twice."""
    source = data.get("model", {}).get("source")
    tables = backend_tables()
    for index, target in enumerate(data.get("targets", [])):
        backend = target.get("backend")
        table = tables.get(backend)
        if table is None:  # not registered here (a plug-in that is not installed): the schema says so
            continue
        for p_index, precision in enumerate(target.get("precisions", [])):
            refusal = table.refusal(precision)
            if refusal is not None:
                add(("targets", index, "precisions", p_index), refusal if precision in table.refused else
                    f"{backend} {precision} is not supported; {backend} {refusal}")
        if source == "onnx" and any(table.graph(p) == "torch" for p in target.get("precisions", [])):
            add(("targets", index, "backend"), f"a {backend} target is made from the torch model: it needs a torch or "
                "torchscript source, not an ONNX file")
        for key in target:
            if key not in ("backend", "precisions") and key not in table.options:
                takers = [name for name, other in tables.items() if key in other.options]
                add(("targets", index, key), f"'{key}' applies to {' and '.join(takers)} targets only; remove it")
        if table.gpu_precisions and backend is not None:
            for p_index, precision in enumerate(target.get("precisions", [])):
                verdict = _gpu_precision_problem(target, precision)
                if verdict is not None and table.refusal(precision) is None:
                    add(("targets", index, "precisions", p_index), f"{backend} {precision}: {verdict}")
        if isinstance(target.get("opt_batch"), int) and isinstance(target.get("max_batch", 32), int) \
                and target["opt_batch"] > target.get("max_batch", 32):
            add(("targets", index, "opt_batch"), f"opt_batch {target['opt_batch']} is above max_batch "
                f"{target.get('max_batch', 32)}: the engines are tuned for a batch inside their range")
        if source == "torchscript" and target.get("mode") == "script":
            add(("targets", index, "mode"), "the source is already TorchScript; remove 'mode'")
    ids = _target_ids(data)
    if any(p in CALIBRATED for _, p in ids) and "calibration" not in data.get("data", {}):
        quantized = next(p for _, p in ids if p in CALIBRATED)
        add(("targets",), f"an {quantized} target is calibrated on representative data: add data.calibration")
    if "quantization" in data and not any(p == "int8" for _, p in ids):
        add(("quantization",), "no target builds int8: remove this section or add an int8 target")
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}, key=str):
        add(("targets",), f"target {duplicate[0]}-{duplicate[1]} is listed twice")


def _gpu_precision_problem(target: dict[str, Any], precision: str) -> str | None:
    """The first generation of a GPU target whose engine builder does not run `precision` there
    (modelc_build.gpus.PRECISION_TABLE), in one line; None where every one does."""
    from modelc_build.gpus import DEFAULT_GPUS, canonical, precision_verdict

    flavour = target.get("flavour", "auto")
    for gpu in target.get("gpus", DEFAULT_GPUS):
        name = canonical(gpu) if isinstance(gpu, str) else None
        verdict = precision_verdict(name, precision, flavour) if name is not None and isinstance(flavour, str) else None
        if verdict is not None:
            return verdict
    return None


def _check_datasets(data: dict[str, Any], add: Add) -> None:
    """Each data role's format, preprocessing, token fields and order, for the model it feeds."""
    model = data.get("model", {})
    data_section = data.get("data", {})
    stateful = any("state_from" in spec for spec in model.get("inputs") or [])
    for name in ("calibration", "validation", "evaluation"):
        dataset = data_section.get(name)
        if name == "validation" and stateful and not dataset and data.get("quantization", {}).get("sensitivity_layers"):
            add(("quantization", "sensitivity_layers"), "a model with state is measured on a stream; every 4th "
                "calibration sample is not one: add data.validation")
        if not dataset:
            continue
        kind = _dataset_format(dataset)
        if stateful and dataset.get("shuffle"):
            add(("data", name, "shuffle"), "a model with state reads its data as one stream, in order: remove shuffle")
        if kind == "images" and "preprocess" not in data_section:
            add(("data", name), "an image folder needs data.preprocess (size, resize, scale, ...)")
        if kind != "images" and dataset.get("labels", "none") != "none":
            add(("data", name, "labels"), "labels are read from image folders only; use format: images")
        if "tokens" in dataset and kind != "tokens":
            add(("data", name, "tokens"), "tokens describes a tokenized text file (format: tokens); remove it")
        if kind == "tokens":
            names = [i.get("name") for i in model.get("inputs") or []]
            for key in ("ids", "mask", "type_ids"):
                chosen = (dataset.get("tokens") or {}).get(key)
                if chosen is not None and chosen not in names:
                    add(("data", name, "tokens", key), f"'{chosen}' is not one of model.inputs {names}")
        if kind == "python":
            if ":" not in str(dataset.get("path", "")):
                add(("data", name, "path"), "a python data source is FILE.py:FUNCTION, e.g. data/make.py:batches")
            if dataset.get("shuffle"):
                add(("data", name, "shuffle"), "a python data source yields its own order; remove shuffle")


def _check_labels(data: dict[str, Any], add: Add) -> None:
    """Labels in a format the task reads, with the labels file the format needs."""
    data_section, task = data.get("data", {}), data.get("task", {})
    if task.get("type") in ("classification", "detection"):
        wanted = ("folders", "csv") if task["type"] == "classification" else ("yolo", "ultralytics", "coco")
        for role in ("evaluation", "validation"):
            dataset = data_section.get(role, {})
            if dataset.get("labels", "none") not in ("none", *wanted):
                add(("data", role, "labels"), f"a {task['type']} task reads labels {' or '.join(wanted)}: set one of them, "
                    "or leave labels out to judge by agreement with the reference")
        if not data_section.get("evaluation", {}):
            add(("task",), f"a {task['type']} task is measured on data.evaluation (labels optional): add it")
    for role in ("calibration", "validation", "evaluation"):
        dataset = data_section.get(role) or {}
        needs_file = dataset.get("labels") in ("csv", "coco", "ultralytics")
        if needs_file and "labels_path" not in dataset:
            add(("data", role, "labels"), f"labels: {dataset['labels']} reads a labels file: add data.{role}.labels_path")
        if "labels_path" in dataset and not needs_file:
            add(("data", role, "labels_path"), "labels_path is for labels: csv, coco or ultralytics; remove it")


def _check_preprocess_size(data: dict[str, Any], add: Add) -> None:
    """data.preprocess.size agrees with the image input's fixed height and width."""
    data_section = data.get("data", {})
    size = data_section.get("preprocess", {}).get("size")
    image_input = (data.get("model", {}).get("inputs") or [{}])[0].get("shape", [])
    if size and len(image_input) == 4:
        spatial = _spatial(image_input, data_section["preprocess"].get("layout", "nchw"))
        fixed = [(axis, want, got) for axis, want, got in zip(("height", "width"), spatial, size) if isinstance(want, int)
                 and want != got]
        if fixed:
            add(("data", "preprocess", "size"), f"size {size} does not match model.inputs[0].shape {image_input} "
                "(" + ", ".join(f"{axis} {want}" for axis, want, _ in fixed) + "): make them agree")


def _check_task(data: dict[str, Any], add: Add) -> None:
    """The task's layout, outputs and metric keys fit its type and the model's outputs."""
    task, outputs = data.get("task", {}), data.get("model", {}).get("outputs", [])
    separate = task.get("layout") == "separate"
    for key in ("boxes_output", "scores_output"):
        if key in task and not separate:
            add(("task", key), f"'{key}' names an output of the separate detection layout: set task.layout: separate "
                "or remove it")
        elif separate and key not in task:
            add(("task",), f"task.layout separate reads two outputs: add task.{key} (one of model.outputs)")
        elif separate and task[key] not in outputs:
            add(("task", key), f"'{task[key]}' is not one of model.outputs {outputs}")
    if separate and "output" in task:
        add(("task", "output"), "the separate layout reads task.boxes_output and task.scores_output; remove task.output")
    if "layout" in task and task.get("type") != "detection":
        add(("task", "layout"), f"'layout' describes detector outputs; a {task.get('type', 'generic')} task has none: remove it")
    if task.get("type") == "custom" and "metric" not in task:
        add(("task",), "a custom task names its metric: task.metric: path/to/file.py:function")
    if task.get("type") != "custom":
        for key in ("metric", "higher_is_better"):
            if key in task:
                add(("task", key), f"'{key}' is for task type custom; remove it")
    if task.get("output") and task["output"] not in outputs:
        add(("task", "output"), f"'{task['output']}' is not one of model.outputs {outputs}")


def _check_gates(data: dict[str, Any], add: Add) -> None:
    """Gates for precisions some target builds; task-metric gates only where a task metric exists."""
    gates, task = data.get("gates", {}), data.get("task", {})
    built = {p for _, p in _target_ids(data)}
    for precision in gates:
        if precision != "default" and precision not in built:
            add(("gates", precision), f"no target builds {precision}; remove this gate or add a target")
    for precision, gate in gates.items():
        if ("max_metric_drop" in gate or "min_metric" in gate) and task.get("type", "generic") in ("generic", "none"):
            add(("gates", precision), "task-metric gates need task.type classification, detection, embedding or custom")


def _leaves(value: Any) -> list[Any]:
    return [leaf for item in value for leaf in _leaves(item)] if isinstance(value, list) else [value]


def _nested_shape(value: Any) -> list[int] | None:
    """The shape of a number (`[]`) or of a regular nested list; None when ragged."""
    if not isinstance(value, list):
        return []
    inner = [_nested_shape(v) for v in value]
    if not value or any(i is None or i != inner[0] for i in inner):
        return None
    return [len(value), *inner[0]]  # type: ignore[misc]


def _fixed_batch(spec: dict[str, Any]) -> int | None:
    """A declared input's batch size where its batch axis is fixed, else None."""
    shape, axis = spec.get("shape") or [], spec.get("batch_axis", 0)
    return shape[axis] if isinstance(axis, int) and axis < len(shape) and isinstance(shape[axis], int) else None


def _spatial(shape: list[Any], layout: str) -> list[Any]:
    """An image input's height and width axes, `[batch, 3, H, W]` (nchw) or `[batch, H, W, 3]`."""
    return shape[2:4] if layout == "nchw" else shape[1:3]


def _check_inputs(model: dict[str, Any], add: Callable[[tuple[Any, ...], str], None]) -> None:
    """batch_axis, value and state_from against each input's shape and the model's outputs."""
    outputs = model.get("outputs", [])
    stateful = any("state_from" in spec for spec in model.get("inputs") or [])
    for index, spec in enumerate(model.get("inputs") or []):
        at = ("model", "inputs", index)
        shape = spec.get("shape", [])
        axis = spec.get("batch_axis", 0)
        fixed = _fixed_batch(spec)
        named = [d for position, d in enumerate(shape) if isinstance(d, str) and position != axis]
        for name in spec.get("examples") or {}:
            if name not in named:
                add((*at, "examples", name), f"'{name}' is not a named axis of '{spec.get('name')}' other than its batch "
                    f"(named: {', '.join(named) or 'none'}): name one of those")
        if stateful and fixed not in (None, 1):
            add((*at, "shape"), f"a model with state is stepped one sample per call; the batch axis of "
                f"'{spec.get('name')}' is fixed at {fixed}: make it 1 or a name")
        if shape and axis is not None and axis >= len(shape):
            add((*at, "batch_axis"), f"batch_axis {axis} is not an axis of shape {shape}")
        if not shape and spec.get("batch_axis") is not None:
            add((*at, "batch_axis"), "a scalar input (shape []) has no batch axis: remove batch_axis")
        if (not shape or axis is None) and "value" not in spec:
            add(at, f"the input '{spec.get('name')}' has no batch axis, so data (sample-first) cannot give it: "
                "give it a value (e.g. value: 16000)")
        if "value" in spec:
            value_shape = _nested_shape(spec["value"])
            if value_shape is None:
                add((*at, "value"), "a value is a number, a bool or a nested list of them with one length per axis")
            elif value_shape and any(isinstance(d, str) for d in shape):
                add((*at, "value"), f"a list value needs a fixed shape; shape {shape} has named axes")
            elif value_shape and value_shape != list(shape):
                add((*at, "value"), f"the value has shape {value_shape}, the input {shape}")
            else:
                dtype = spec.get("dtype", "float32")
                wrong = [v for v in _leaves(spec["value"]) if (dtype == "bool") != isinstance(v, bool)
                         or (dtype.startswith(("int", "uint")) and not isinstance(v, int))]
                if wrong:
                    add((*at, "value"), f"{wrong[0]!r} does not fit dtype {dtype}: write the value in the input's dtype")
            if "state_from" in spec:
                add((*at, "value"), "an input is either fixed (value) or carried state (state_from), not both")
        if "state_from" in spec:
            if spec["state_from"] not in outputs:
                add((*at, "state_from"), f"'{spec['state_from']}' is not one of model.outputs {outputs}")
            others = [d for i, d in enumerate(shape) if i != axis and isinstance(d, str)]
            if others:
                add((*at, "shape"), f"a state's axes other than its batch axis must be fixed to start from zeros; "
                    f"{others} are named")


def _dataset_format(dataset: dict[str, Any]) -> str:
    if "format" in dataset:
        return str(dataset["format"])
    path = str(dataset.get("path", ""))
    if ".py:" in path:
        return "python"
    suffix = Path(path).suffix.lower()
    return {".npy": "npy", ".npz": "npz", ".txt": "tokens"}.get(suffix, "images")


def path_problems(recipe_path: Path) -> list[RecipeProblem]:
    """Referenced files that do not exist (used by `modelc validate`; builds raise InputError)."""
    located, _ = _parse(recipe_path, recipe_path.read_text())
    base = recipe_path.parent
    checks: list[tuple[tuple[Any, ...], str]] = []
    model = located.data.get("model", {})
    for key in ("weights", "path"):
        if key in model:
            checks.append((("model", key), model[key]))
    factory = model.get("factory", "")
    if ".py:" in factory:
        checks.append((("model", "factory"), factory.rsplit(":", 1)[0]))
    for name in ("calibration", "validation", "evaluation"):
        dataset = located.data.get("data", {}).get(name)
        if dataset and "path" in dataset:
            location = str(dataset["path"])
            checks.append((("data", name, "path"), location.rpartition(":")[0] if ".py:" in location else location))
        if dataset and "labels_path" in dataset:
            checks.append((("data", name, "labels_path"), str(dataset["labels_path"])))
    problems = []
    for at, relative in checks:
        if not (base / relative).exists():
            line, column = located.value_marks.get(at, (1, 1))
            problems.append(RecipeProblem(str(recipe_path), line, column, _key_path(at),
                                          f"{(base / relative).resolve()} does not exist: fix the path (relative paths start at the recipe's folder)"))
    for name in ("calibration", "validation", "evaluation"):
        dataset = located.data.get("data", {}).get(name)
        if isinstance(dataset, dict) and dataset.get("labels") == "yolo" and isinstance(dataset.get("path"), str):
            folder = base / dataset["path"]
            images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
            if images and not any(p.with_suffix(".txt").is_file() for p in images):
                line, column = located.value_marks.get(("data", name, "labels"), (1, 1))
                problems.append(RecipeProblem(str(recipe_path), line, column, f"data.{name}.labels",
                                              f"yolo, but none of the {len(images)} images in {folder.resolve()} has a "
                                              f"label file beside it ({images[0].with_suffix('.txt').name} for "
                                              f"{images[0].name}): add them, or set labels: none"))
    return problems


def recipe_warnings(recipe_path: Path) -> list[RecipeProblem]:
    """What is allowed but costs something the author may not know (used by `modelc validate`)."""
    located, _ = _parse(recipe_path, recipe_path.read_text())
    warnings = []
    for index, spec in enumerate(located.data.get("model", {}).get("inputs") or []):
        fixed = _fixed_batch(spec)
        if fixed is not None:
            at = ("model", "inputs", index, "shape")
            line, column = located.value_marks.get(at, (1, 1))
            warnings.append(RecipeProblem(
                str(recipe_path), line, column, _key_path(at),
                f"the batch axis of '{spec.get('name')}' is fixed at {fixed}: calibration, verification and "
                f"latency feed {fixed} sample(s) per call (slower, and int8 calibration sees batches of that size). "
                "If axis 0 is not the batch, say where it is (batch_axis: 1 for a [layers, batch, hidden] state, "
                "batch_axis: null for a scalar) or give the input a fixed value; if it is and the model allows it, "
                "name it (e.g. batch)"))
    warnings += _layout_hints(recipe_path, located)
    warnings += _gates_that_cannot_fail(recipe_path, located)
    for role in ("calibration", "validation", "evaluation"):
        dataset = (located.data.get("data") or {}).get(role)
        if isinstance(dataset, dict) and isinstance(dataset.get("path"), str) and ".py:" not in dataset["path"]:
            folder = recipe_path.parent / dataset["path"]
            if folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
                line, column = located.value_marks.get(("data", role, "path"), (1, 1))
                warnings.append(RecipeProblem(str(recipe_path), line, column, f"data.{role}.path",
                                              f"{folder.resolve()} is an empty folder: a build reads no samples from "
                                              "it and stops; put the data there or fix the path"))
    return warnings


def _gates_that_cannot_fail(recipe_path: Path, located: _Located) -> list[RecipeProblem]:
    """Top-5 containment on a classifier of five classes or fewer always holds: say so, and what
    judges such a model."""
    task = located.data.get("task") or {}
    classes = task.get("classes") or []
    if task.get("type") != "classification" or not classes or len(classes) > 5:
        return []
    line, column = located.value_marks.get(("task", "classes"), (1, 1))
    return [RecipeProblem(str(recipe_path), line, column, "task.classes",
                          f"{len(classes)} classes: the top-5 containment gate (min_top5_containment) cannot fail; "
                          "top-1 agreement and max_metric_drop judge this model")]


def _layout_hints(recipe_path: Path, located: _Located) -> list[RecipeProblem]:
    """An ONNX source declared generic whose output is shaped like a detector: say which task fits
    (read from the graph's declared output shapes; nothing is run)."""
    data = located.data
    model = data.get("model") or {}
    task = (data.get("task") or {}).get("type", "generic")
    if model.get("source") != "onnx" or task not in ("generic", "none") or not isinstance(model.get("path"), str):
        return []
    try:
        import onnx
    except ImportError:  # the core install: no onnx, no hint
        return []
    from modelc_build.tasks import layout_hint

    path = (recipe_path.parent / model["path"]).resolve()
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # noqa: BLE001 - an unreadable model is reported elsewhere
        return []
    line, column = located.value_marks.get(("task",), located.value_marks.get(("model", "outputs"), (1, 1)))
    hints = []
    for output in graph.output:
        shape = [d.dim_value if d.HasField("dim_value") else 0 for d in output.type.tensor_type.shape.dim]
        hint = layout_hint(output.name, shape)
        if hint:
            hints.append(RecipeProblem(str(recipe_path), line, column, "task", hint))
    return hints


def load_recipe(path: Path, passed_schema_memo: Path | None = None) -> Recipe:
    """Read, validate and type a recipe; raise RecipeError listing every problem.

    `passed_schema_memo` (a folder, used by builds) remembers recipe texts that already passed the
    schema, keyed by the digest of the text, the schema and modelc's version: a rebuild then skips
    loading jsonschema, which costs more than the rest of an up-to-date build.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the recipe ({exc.strerror}): check the path") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RecipeError([RecipeProblem(str(path), 1, 1, "", "the recipe is not UTF-8 text")]) from None
    located, problems = _parse(path, text)
    if not isinstance(located.data, dict):
        raise RecipeError([RecipeProblem(str(path), 1, 1, "", "a recipe must be a YAML mapping (key: value lines)")])
    memo = _schema_memo_file(passed_schema_memo, raw) if passed_schema_memo else None
    schema_skipped = memo is not None and memo.exists()
    # always: no memo stands in for the checks that guard paths (the schema checks the name's pattern too)
    problems += _identity_problems(path, located, ("name", "version") if schema_skipped else ("version",))
    if not schema_skipped:
        problems += _schema_problems(path, located)
    if not problems:
        problems += _cross_field_problems(path, located)
    if problems:  # each problem once (a schema with several branches may report one thing per branch)
        raise RecipeError(sorted(dict.fromkeys(problems), key=lambda p: (p.line, p.column)))
    if memo is not None and not memo.exists():
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.touch()
        except OSError:
            pass  # a speed-up only: a cache that cannot be written is reported by the build itself
    return _to_recipe(path, hashlib.sha256(raw).hexdigest(), located.data)


def _identity_problems(path: Path, located: _Located, keys: tuple[str, ...]) -> list[RecipeProblem]:
    """The release name and version, which become folder names and registry tags."""
    from modelc_build.identity import name_problem, version_problem

    problems = []
    for key, check in (("name", name_problem), ("version", version_problem)):
        if key in keys and key in located.data:
            problem = check(located.data[key])
            if problem:
                line, column = located.value_marks.get((key,), (1, 1))
                problems.append(RecipeProblem(str(path), line, column, key, problem))
    return problems


def _schema_memo_file(folder: Path, raw: bytes) -> Path:
    from modelc_build import __version__

    schema = json.dumps(recipe_schema(), sort_keys=True).encode()
    return folder / hashlib.sha256(raw + b"\0" + schema + b"\0" + __version__.encode()).hexdigest()


def _frozen(value: Any) -> Any:
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


def _tensor_spec(declared: dict[str, Any], examples: tuple[tuple[str, int], ...]) -> TensorSpec:
    shape = tuple(d if isinstance(d, str) else int(d) for d in declared["shape"])
    return TensorSpec(declared["name"], shape, declared.get("dtype", "float32"),
                      declared.get("batch_axis", 0) if shape else None, _frozen(declared.get("value")),
                      declared.get("state_from"), examples)


def _example_sizes(inputs: list[dict[str, Any]], preprocess: dict[str, Any] | None) -> tuple[tuple[str, int], ...]:
    """Example sizes of named axes other than the batch: at 1 or 2 a CNN's feature map vanishes
    and torch.export specialises or confuses the axis with a fixed one, so an image's height and
    width take data.preprocess.size and every other name the smallest size >= 8 no fixed axis has."""
    fixed = {d for spec in inputs for d in spec.get("shape", []) if isinstance(d, int)}
    sizes: dict[str, int] = {}
    if preprocess and inputs and len(inputs[0].get("shape", [])) == 4:
        for name, size in zip(_spatial(inputs[0]["shape"], preprocess.get("layout", "nchw")), preprocess["size"]):
            if isinstance(name, str):
                sizes.setdefault(name, int(size))
    for spec in inputs:  # the recipe's own example sizes win
        sizes.update({str(name): int(size) for name, size in (spec.get("examples") or {}).items()})
    free = 8
    for spec in inputs:
        for axis, name in enumerate(spec.get("shape", [])):
            if isinstance(name, str) and axis != spec.get("batch_axis", 0) and name not in sizes:
                while free in fixed:
                    free += 1
                sizes[name] = free
                free += 1
    return tuple(sorted(sizes.items()))


def _to_recipe(path: Path, digest: str, data: dict[str, Any]) -> Recipe:
    base = path.resolve().parent
    model = data["model"]
    examples = _example_sizes(model["inputs"], data.get("data", {}).get("preprocess"))
    source = ModelSource(
        kind=model["source"],
        inputs=tuple(_tensor_spec(i, examples) for i in model["inputs"]),
        outputs=tuple(model["outputs"]),
        factory=model.get("factory"),
        factory_args=tuple(sorted(model.get("factory_args", {}).items())),
        weights=base / model["weights"] if "weights" in model else None,
        path=base / model["path"] if "path" in model else None,
        base_dir=base,
        strict=model.get("strict", True),
        ignore_weights=tuple(model.get("ignore_weights", ())),
        arguments=tuple(sorted(model.get("arguments", {}).items())),
    )
    export = ExportOptions(**data.get("export", {}))
    data_section = data.get("data", {})
    preprocess = None
    if "preprocess" in data_section:
        spec = dict(data_section["preprocess"])
        height, width = (int(v) for v in spec.pop("size"))
        if isinstance(spec.get("scale"), str):  # "1/255", as the docs write it
            spec["scale"] = 1.0 / float(spec["scale"].split("/")[1])
        for key in ("mean", "std"):
            if key in spec:
                spec[key] = tuple(float(v) for v in spec[key])
        preprocess = Preprocess(height=height, width=width, **spec)

    def dataset(name: str) -> Dataset | None:
        entry = data_section.get(name)
        if entry is None:
            return None
        data_format = _dataset_format(entry)
        location, function = str(entry["path"]), None
        if data_format == "python":
            location, _, function = location.rpartition(":")
        samples = entry.get("samples")  # YAML may write integers as 1.0e+3: the schema accepts them, Python wants ints
        return Dataset(path=base / location, format=data_format, labels=entry.get("labels", "none"),
                       samples=None if samples is None else int(samples), batch_size=int(entry.get("batch_size", 16)),
                       shuffle=entry.get("shuffle", False), seed=int(entry.get("seed", 0)), function=function,
                       labels_path=base / entry["labels_path"] if "labels_path" in entry else None,
                       tokens=TokenFields(**entry.get("tokens", {})) if data_format == "tokens" else None)

    task_data = dict(data.get("task", {"type": "generic"}))
    task_data["classes"] = tuple(task_data.get("classes", ()))
    task_data["base_dir"] = base
    targets = tuple(_target(t, p) for t in data["targets"] for p in t["precisions"])
    raw_gates = data.get("gates", {})
    gates = {k: Gate(**{**raw_gates.get("default", {}), **v}) for k, v in raw_gates.items()}
    explicit = {k: frozenset({**raw_gates.get("default", {}), **v}) for k, v in raw_gates.items()}
    return Recipe(path=path, digest=digest, name=data["name"], version=data["version"],
                  description=data.get("description", ""), model=source, export=export, preprocess=preprocess,
                  calibration=dataset("calibration"), evaluation=dataset("evaluation"), task=Task(**task_data),
                  targets=targets, gates=gates, latency=Latency(**data.get("latency", {})),
                  quantization=_quantization(data.get("quantization", {}), task_data["type"]), explicit_gate_keys=explicit,
                  verify=VerifyOptions.from_data(data.get("verify") or {}), validation=dataset("validation"))


def _quantization(section: dict[str, Any], task_type: str) -> Quantization:
    """The schema has checked the keys; defaults live in the dataclass alone, but for the output
    head, float by default for detectors."""
    settings: dict[str, Any] = {key: value for key, value in section.items() if not key.endswith("ignore")}
    settings.setdefault("float_output_head", task_type == "detection")
    for group in ("ignore",):
        settings.update({f"{group}_{key}": tuple(values) for key, values in section.get(group, {}).items()})
    return Quantization(**settings)
