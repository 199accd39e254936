"""Graphs that break quietly: a simplifier that changes what the graph computes, an opset-12 graph
whose per-channel INT8 would not load, an INT8 artifact that quantized nothing (a graph inside
`If`). Each is caught where it happens and said so, never passed."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import write_images


def onnx_recipe(tiny_recipe, tmp_path: Path, model: Path, targets: list[dict], **extra: object) -> Path:
    base = yaml.safe_load(tiny_recipe().read_text())
    base["model"] = {"source": "onnx", "path": str(model), "inputs": [{"name": "images", "shape": ["batch", 3, 16, 16]}],
                     "outputs": ["logits"]}
    write_images(tmp_path / "calibration", 12, size=(24, 20))
    base["data"]["calibration"] = {"path": str(tmp_path / "calibration")}
    base.update(targets=targets, gates=None, verify={"cpus": []}, **extra)
    base.pop("export", None)
    return tiny_recipe(base, name="graph.yaml")


STAND_IN_ONNXSIM = """
import os

import onnx
import numpy as np
from onnx import helper, numpy_helper


def simplify(model, *args, **kwargs):
    if os.environ.get("STAND_IN_ONNXSIM") == "fail":
        raise RuntimeError("[ShapeInferenceError] (op_type:Concat, node name: /Concat): axis must be in range")
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    graph = broken.graph
    final = graph.output[0].name
    for node in graph.node:
        node.output[:] = [final + "_raw" if name == final else name for name in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    graph.node.append(helper.make_node("Mul", [final + "_raw", "two"], [final]))
    return broken, True  # and it says all is well
"""


def test_a_simplifier_that_breaks_the_graph_is_left_out_with_a_warning(tmp_path: Path, tiny_recipe, run_cli_process,
                                                                        monkeypatch) -> None:
    """A stand-in onnxsim that returns a valid graph computing something else (every output doubled),
    found first on the path of a real CLI process (the simplify step runs in a forked worker)."""
    stand_in = tmp_path / "stand-in" / "onnxsim"
    stand_in.mkdir(parents=True)
    (stand_in / "__init__.py").write_text(STAND_IN_ONNXSIM)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(stand_in.parent), os.environ.get("PYTHONPATH", "")]))
    recipe = tiny_recipe()
    result = run_cli_process("build", recipe, "--store", tmp_path / "store")
    assert result.returncode == 0, result.stderr
    assert ("warning: simplify: onnxsim's graph computes output 'logits' differently (largest difference 1 of its "
            "scale); the exported graph is used unsimplified (set export.simplify: false to skip this step)") in result.stderr
    release = tmp_path / "store/tiny/0.1.0"
    report = json.loads((release / "report.json").read_text())
    assert report["export"]["simplify"]["simplified"] is False and report["passed"]
    assert "⚠️ simplify: onnxsim's graph computes output 'logits' differently" in (release / "report.md").read_text()

    monkeypatch.setenv("STAND_IN_ONNXSIM", "fail")
    again = run_cli_process("build", tiny_recipe({"version": "0.2.0"}), "--store", tmp_path / "store", "--force")
    assert again.returncode == 0, again.stderr
    assert "warning: simplify: onnxsim failed: [ShapeInferenceError] (op_type:Concat" in again.stderr


def test_an_opset_12_graph_gets_onnxruntime_int8_that_loads_and_runs(tmp_path: Path, tiny_recipe, run_cli) -> None:
    import torch

    from tests.fixtures.tiny_net import build_model

    model = tmp_path / "opset12.onnx"
    torch.onnx.export(build_model().eval(), (torch.rand(2, 3, 16, 16),), str(model), input_names=["images"],
                      output_names=["logits"], opset_version=12, dynamo=False,
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    assert onnx.load(str(model)).opset_import[0].version == 12
    recipe = onnx_recipe(tiny_recipe, tmp_path, model, [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]}])
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    release = tmp_path / "store/tiny/0.1.0"
    notes = json.loads((release / "onnxruntime-int8/quantization.json").read_text())
    assert "the graph converted from opset 12 to 13 for per-channel Q/DQ" in notes["method"]
    assert notes["coverage"]["model.onnx"]["quantized"] == notes["coverage"]["model.onnx"]["layers"] - 1  # the stem stays float
    import onnxruntime as ort

    session = ort.InferenceSession(str(release / "onnxruntime-int8/model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.zeros((2, 3, 16, 16), np.float32)})[0].shape == (2, 3)


def if_model(path: Path) -> Path:
    """A classifier whose every layer sits inside an If's branches (as an exported model that
    switches on an input): the condition is a second input."""
    rng = np.random.default_rng(0)

    def branch(name: str) -> onnx.GraphProto:
        weights = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, f"{name}_w"),
                   numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32) * 0.3, f"{name}_d")]
        nodes = [helper.make_node("Conv", ["images", f"{name}_w"], [f"{name}_c"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", [f"{name}_c"], [f"{name}_r"]),
                 helper.make_node("GlobalAveragePool", [f"{name}_r"], [f"{name}_p"]),
                 helper.make_node("Flatten", [f"{name}_p"], [f"{name}_f"]),
                 helper.make_node("MatMul", [f"{name}_f", f"{name}_d"], [f"{name}_out"])]
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)],
                                 weights)

    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["logits"], then_branch=branch("then"), else_branch=branch("else"))], "switch",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 16, 16]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_int8_artifact_that_quantized_nothing_fails_and_says_why(tmp_path: Path, tiny_recipe, run_cli) -> None:
    model = if_model(tmp_path / "switch.onnx")
    recipe = onnx_recipe(tiny_recipe, tmp_path, model, [{"backend": "onnxruntime", "precisions": ["int8"]}])
    data = yaml.safe_load(recipe.read_text())
    data["model"]["inputs"].append({"name": "flag", "shape": [], "dtype": "bool", "value": True, "batch_axis": None})
    recipe.write_text(yaml.safe_dump(data))
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 7, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: onnxruntime-int8: model.onnx holds no INT8 layer (0 of 4 weighted layers in INT8; "
                           "4 inside If/Loop bodies, 0 of them quantized): all 4 weighted layers sit inside If/Loop bodies, "
                           "which the quantizer does not enter"), line
    assert "quantization.allow_unquantized: true" in line and not (tmp_path / "store").exists()
    data["quantization"] = {"allow_unquantized": True}
    recipe.write_text(yaml.safe_dump(data))
    accepted = run_cli("build", recipe, "--store", tmp_path / "store")
    assert accepted.exit_code == 0, accepted.stderr
    manifest = json.loads((tmp_path / "store/tiny/0.1.0/manifest.json").read_text())
    coverage = next(a for a in manifest["artifacts"] if a["target"] == "onnxruntime-int8")["int8_coverage"]["model.onnx"]
    assert (coverage["layers"], coverage["quantized"], coverage["in_subgraphs"]) == (4, 0, 4)
    assert "`model.onnx`: 0/4 layers (4 in If/Loop bodies)" in (tmp_path / "store/tiny/0.1.0/report.md").read_text()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_coverage_is_in_the_report_and_manifest(tmp_path: Path, tiny_recipe, run_cli, backend: str) -> None:
    write_images(tmp_path / "calibration", 12, size=(24, 20))
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": str(tmp_path / "calibration")}
    base.update(targets=[{"backend": backend, "precisions": ["int8"]}], gates=None, verify={"cpus": []})
    result = run_cli("build", tiny_recipe(base, name="coverage.yaml"), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "store/tiny/0.1.0/manifest.json").read_text())
    coverage = next(a for a in manifest["artifacts"] if a["target"] == f"{backend}-int8")["int8_coverage"]
    model = "model.xml" if backend == "openvino" else "model.onnx"
    assert coverage[model]["layers"] == 2 and coverage[model]["quantized"] >= 1  # conv and head
    assert coverage[model]["mac_share"] is not None and 0 < coverage[model]["mac_share"] <= 100
