"""torch -> ONNX (either exporter, opset, dynamic axes) and onnxsim.

Each function takes typed inputs and writes exactly one file; the caller decides where.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from modelc_build.errors import CompileError, InputError, first_line
from modelc_build.feeds import dynamic_shapes, example_inputs, takes_varargs
from modelc_build.recipe_types import ExportOptions, TensorSpec


def check_model_accepts_inputs(model: Any, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> None:
    """Run the model once on example inputs so a shape mismatch is an input error, not an export crash."""
    import torch

    tensors = [torch.from_numpy(a) for a in example_inputs(inputs, dynamic_size=2)]
    declared = ", ".join(f"{s.name}{list(s.shape)}" for s in inputs)
    try:
        with torch.no_grad():
            result = model(*tensors)
    except Exception as exc:
        first = first_line(exc)
        raise InputError(f"the model does not accept the declared inputs {declared}: {first}; "
                         "fix model.inputs[].shape to the shape the model expects") from exc
    got = len(result) if isinstance(result, (tuple, list)) else 1
    if got != len(outputs):
        raise InputError(f"the model returns {got} output(s) but model.outputs names {len(outputs)} "
                         f"({', '.join(outputs)}): name each output once")


@contextlib.contextmanager
def _quiet_exporter(log: list[str]) -> Iterator[None]:
    """The exporters print progress, deprecation notes and, when they fail, hundreds of lines of
    graph IR (from C++ too): everything they write goes to a scratch file, kept in `log` for the
    error's details; the build log stays readable."""
    import tempfile

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile(mode="w+b") as scratch:
        os.dup2(scratch.fileno(), 1)
        os.dup2(scratch.fileno(), 2)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()) as printed:
                warnings.simplefilter("ignore")
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)
            scratch.seek(0)
            log.append(printed.getvalue() + scratch.read().decode(errors="replace"))


@dataclass(frozen=True)
class Exported:
    """Which exporter wrote the graph, and why the first choice did not (exporter `auto`)."""

    requested: str
    used: str
    fallback_reason: str | None = None


def export_onnx(model: Any, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...], options: ExportOptions,
                destination: Path, scripted: bool = False) -> Exported:
    """Export with the recipe's exporter; dynamic axes come from symbolic dimensions. `auto` tries
    torch.export first and falls back to the TorchScript-based exporter, saying why; a TorchScript
    source (`scripted`) goes to the TorchScript-based exporter directly."""
    if options.exporter == "torchscript" or (options.exporter == "auto" and scripted):
        _export_with(model, inputs, outputs, options.opset, "torchscript", destination)
        return Exported(options.exporter, "torchscript")
    try:
        _export_with(model, inputs, outputs, options.opset, "dynamo", destination)
        return Exported(options.exporter, "dynamo")
    except CompileError as error:
        if options.exporter != "auto":
            raise CompileError(f"{error.message}; try export.exporter: torchscript (or auto), or another export.opset",
                               error.details) from error
        reason = error.message
    destination.unlink(missing_ok=True)
    _export_with(model, inputs, outputs, options.opset, "torchscript", destination)
    return Exported("auto", "torchscript", reason)


def check_exported_interface(path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> None:
    """The exported graph has the recipe's inputs and outputs, and every axis the recipe names is
    still dynamic: an exporter that specialised one to the size it was exported with (torch.export
    does where the model's code reads the size) gave a graph that runs at that size only, and every
    later step failed with a runtime's multi-line error. Here it is one line naming the axis."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    found = {value.name: value for value in graph.input if value.name not in weights}
    for index, spec in enumerate(inputs):
        if spec.value is not None and spec.name not in found:
            continue  # a fixed value the exporter folded into the graph
        if spec.name not in found:
            raise CompileError(f"the exported graph has no input '{spec.name}' (it has {', '.join(found) or 'none'}): "
                               f"check model.inputs[{index}].name against the model's forward")
        dims = found[spec.name].type.tensor_type.shape.dim
        if len(dims) != len(spec.shape):
            raise CompileError(f"the exported input '{spec.name}' has {len(dims)} axes, model.inputs[{index}].shape "
                               f"{list(spec.shape)} has {len(spec.shape)}: fix the declared shape")
        sizes = dict(spec.examples)
        for axis, (declared, dim) in enumerate(zip(spec.shape, dims)):
            if isinstance(declared, str) and dim.HasField("dim_value"):
                example = 2 if axis == spec.batch_axis else sizes.get(declared)
                raise CompileError(
                    f"the export fixed axis {axis} ('{declared}') of input '{spec.name}' at {dim.dim_value}"
                    f"{f' (the example size it was exported with, {example})' if example == dim.dim_value else ''}: the "
                    f"model's code specialises it; make the model accept any {declared}, give another example size "
                    f"(model.inputs[{index}].examples: {{{declared}: N}}), or declare the axis fixed")
    names = {value.name for value in graph.output}
    missing = [name for name in outputs if name not in names]
    if missing:
        raise CompileError(f"the exported graph has no output {', '.join(map(repr, missing))} (it has "
                           f"{', '.join(sorted(names))}): check model.outputs")


def _export_with(model: Any, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...], opset: int, exporter: str,
                 destination: Path) -> None:
    """One exporter. The example input gives dynamic axes size 2: at size 1 torch.export
    specialises an axis to a constant."""
    import torch

    example = tuple(torch.from_numpy(a) for a in example_inputs(inputs, dynamic_size=2))
    names = [spec.name for spec in inputs]
    log: list[str] = []
    try:
        with _quiet_exporter(log), torch.no_grad():
            if exporter == "dynamo":
                torch.onnx.export(model, example, str(destination), input_names=names, output_names=list(outputs),
                                  opset_version=opset, dynamo=True, external_data=False, verbose=False,
                                  dynamic_shapes=dynamic_shapes(model, inputs))
                _single_assignment(destination)
            else:
                if _wraps_script_module(model):  # the exporter cannot trace into it: trace the whole first
                    model = torch.jit.trace(model, example, check_trace=False)
                dynamic_axes: dict[str, dict[int, str]] = {spec.name: spec.dynamic_axes for spec in inputs if spec.dynamic_axes}
                batch_like = next(iter(dynamic_axes.values()), {})
                if 0 in batch_like:  # outputs share the leading dynamic axis, the common case
                    dynamic_axes.update({name: {0: batch_like[0]} for name in outputs})
                for spec in inputs:  # a state output keeps its state input's axes (batch on axis 1, say)
                    if spec.state_from in outputs:
                        dynamic_axes[spec.state_from] = spec.dynamic_axes
                torch.onnx.export(model, example, str(destination), input_names=names, output_names=list(outputs),
                                  opset_version=opset, dynamo=False, dynamic_axes=dynamic_axes or None)
    except Exception as exc:
        import traceback

        from modelc_build.errors import write_problem

        disk = write_problem(exc, f"torch.onnx.export could not write {destination.name}")
        if disk is not None:  # a full or read-only disk, not a model the exporter cannot handle
            raise disk from exc
        details = "".join(log) + "\n" + "".join(traceback.format_exception(exc))
        raise CompileError(f"torch.onnx.export ({exporter} exporter) failed: {_first_lines(exc)}", details) from exc
    if not destination.is_file():
        raise CompileError(f"torch.onnx.export ({exporter} exporter) wrote no file at {destination}")
    _without_source_locations(destination)


def _without_source_locations(path: Path) -> None:
    """The exporters record where each node's code lay (torch.export's stack traces, with the
    model file's absolute path, and node doc strings): the same model exported from another
    folder (another checkout, another CI job) would give other bytes, and every step after the
    export other keys. They are dropped; what the node computes is untouched."""
    import onnx

    model = onnx.load(str(path))
    changed = False
    graphs = [model.graph, *(function for function in model.functions)]
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            kept = [prop for prop in node.metadata_props if not prop.key.endswith("stack_trace")]
            if len(kept) != len(node.metadata_props) or node.doc_string:
                changed = True
                del node.metadata_props[:]
                node.metadata_props.extend(kept)
                node.doc_string = ""
            graphs += [attribute.g for attribute in node.attribute if attribute.HasField("g")]
            graphs += [g for attribute in node.attribute for g in attribute.graphs]
    if changed:
        onnx.save(model, str(path))


def _single_assignment(path: Path) -> None:
    """torch's exporter names some values after their operator; an output the recipe names
    `embedding` then shares its name with an `aten.embedding` result inside the graph, which onnx
    and onnxsim refuse. Every value produced more than once keeps its name at its last producer
    (the graph output); earlier ones, and the nodes reading them, get `NAME__K`."""
    import onnx

    model = onnx.load(str(path))
    producers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.output:
            producers[name] = producers.get(name, 0) + 1
    repeated = {name for name, count in producers.items() if count > 1}
    if not repeated:
        return
    seen: dict[str, int] = {}

    def current(name: str) -> str:
        made = seen.get(name, 0)
        return f"{name}__{made - 1}" if name in repeated and 0 < made < producers[name] else name

    for node in model.graph.node:
        for index, name in enumerate(node.input):
            node.input[index] = current(name)
        for index, name in enumerate(node.output):
            if name in repeated:
                seen[name] = seen.get(name, 0) + 1
                node.output[index] = current(name)
    # the shapes recorded under those names may be the other value's: drop them, inference redoes them
    kept = [info for info in model.graph.value_info if info.name not in repeated]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    for output in model.graph.output:
        if output.name in repeated:
            output.type.tensor_type.ClearField("shape")
    model = _infer_shapes_without_weights(model)
    for output in model.graph.output:
        if output.name in repeated and not output.type.tensor_type.HasField("shape"):
            output.type.tensor_type.shape.SetInParent()  # rank unknown: onnxsim fills it in
    onnx.save(model, str(path))


WEIGHT_BYTES = 64 * 1024  # initializers at least this big are set aside during shape inference


def _infer_shapes_without_weights(model: Any) -> Any:
    """onnx shape inference with the large initializers' bytes set aside: it reads their dims
    only, while serialising the whole model twice (a 109 M-parameter encoder: 18.5 s and 0.8 GB
    above the export's own peak). Small tensors (shape constants a Reshape reads) stay."""
    import onnx

    stash: dict[str, bytes] = {}
    for tensor in model.graph.initializer:
        if len(tensor.raw_data) >= WEIGHT_BYTES:
            stash[tensor.name] = tensor.raw_data
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.external_data.add(key="location", value="set-aside")
    inferred = onnx.shape_inference.infer_shapes(model)
    del model
    for tensor in inferred.graph.initializer:
        if tensor.name in stash:
            del tensor.external_data[:]
            tensor.ClearField("data_location")  # unset, as the exporter wrote it: the same bytes
            tensor.raw_data = stash.pop(tensor.name)
    return inferred


def _wraps_script_module(model: Any) -> bool:
    """modelc's wrapper (sources.py) around a TorchScript source, holding Python arguments."""
    import torch

    inner = getattr(model, "model", None)
    return takes_varargs(model) and isinstance(inner, torch.jit.ScriptModule)


def _first_lines(exc: BaseException) -> str:
    """The first line, and torch.export's own one-line summary of the cause where it gives one."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()] or [type(exc).__name__]
    summary = lines.index("## Exception summary") + 1 if "## Exception summary" in lines else len(lines)
    telling = lines[summary:summary + 1] or [line for line in lines[1:] if "Constraints violated" in line]
    text = "; ".join([lines[0][:300]] + [line[:300] for line in telling[:1]])
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # torch colours its messages


SIMPLIFIED_TOLERANCE = 1e-3  # of the output's largest magnitude, on one example input


def simplify_onnx(source: Path, destination: Path, inputs: tuple[TensorSpec, ...]) -> dict[str, Any]:
    """onnxsim, then a check of our own: the simplified graph must load in onnxruntime and compute
    what the exported one computes on an example input. A simplifier that fails or breaks the graph
    is not fatal: the exported graph goes on unsimplified, and the returned notes say why."""
    import shutil

    import onnx
    import onnxsim

    model = onnx.load(str(source))
    try:
        simplified, ok = onnxsim.simplify(model)
        problem = None if ok else "onnxsim's own check says the simplified graph computes something else"
    except Exception as exc:  # noqa: BLE001 - any failure of the simplifier: go on without it
        simplified, problem = None, f"onnxsim failed: {first_line(exc)}"
    if simplified is not None and problem is None:
        problem = _computes_the_same(model, simplified, inputs)
    if problem is None and simplified is not None:
        onnx.save(simplified, str(destination))
        return {"simplified": True}
    shutil.copyfile(source, destination)
    warning = (f"simplify: {problem}; the exported graph is used unsimplified (set export.simplify: false to skip "
               "this step)")
    print(f"warning: {warning}", file=sys.stderr, flush=True)
    return {"simplified": False, "warning": warning}


def _computes_the_same(original: Any, simplified: Any, inputs: tuple[TensorSpec, ...]) -> str | None:
    """None when the simplified graph loads in onnxruntime and matches the original on one example
    input; else what went wrong. An original that onnxruntime cannot run is not judged here."""
    import numpy as np
    import onnxruntime as ort

    from modelc_build.feeds import ModelCaller, random_samples

    def runner(model: Any) -> Any:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return lambda feed: dict(zip(names, session.run(names, feed)))

    sample = random_samples(inputs, 1, seed=3)
    try:
        expected = ModelCaller(inputs, runner(original))(sample)
    except Exception:  # noqa: BLE001 - the exported graph itself does not run here: nothing to compare with
        return None
    try:
        got = ModelCaller(inputs, runner(simplified))(sample)
    except Exception as exc:  # noqa: BLE001 - the point of the check
        return f"onnxsim wrote a graph onnxruntime cannot run ({first_line(exc)[:200]})"
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            return f"onnxsim changed output '{name}' ({None if have is None else list(have.shape)} for {list(want.shape)})"
        scale = float(np.abs(want).max()) or 1.0
        error = float(np.abs(have.astype(np.float64) - want.astype(np.float64)).max()) / scale if want.size else 0.0
        if not np.isfinite(error) or error > SIMPLIFIED_TOLERANCE:
            return f"onnxsim's graph computes output '{name}' differently (largest difference {error:.3g} of its scale)"
    return None
