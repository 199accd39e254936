"""Messages that send a user the right way: each names what is wrong, where, and the recipe key or
step that fixes it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from modelc_build.data import DataReader
from modelc_build.errors import InputError
from modelc_build.recipe_types import Dataset, ModelSource, Task, TensorSpec, TokenFields


def two_inputs(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["sum"])], "add",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in ("a", "b")],
                              [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_inputs_in_another_order_are_named_with_both_orders(tmp_path: Path) -> None:
    from modelc_build.steps.export import read_onnx_source

    path = two_inputs(tmp_path / "add.onnx")
    specs = (TensorSpec("b", ("batch", 4)), TensorSpec("a", ("batch", 4)))
    with pytest.raises(InputError, match=r"the graph takes its inputs in the order \['a', 'b'\]; model.inputs lists "
                                         r"\['b', 'a'\]: list model.inputs in the graph's order"):
        read_onnx_source(ModelSource("onnx", specs, ("sum",), path=path), tmp_path / "out.onnx")
    wrong = (TensorSpec("a", ("batch", 4)), TensorSpec("c", ("batch", 4)))
    with pytest.raises(InputError, match=r"model.inputs names \['c'\], which the graph does not have; the graph also has "
                                         r"\['b'\], which model.inputs does not name"):
        read_onnx_source(ModelSource("onnx", wrong, ("sum",), path=path), tmp_path / "out.onnx")


def test_a_fixed_dimension_that_breaks_the_graph_is_named_as_the_cause(tmp_path: Path) -> None:
    from modelc_build.steps.export import read_onnx_source

    graph = helper.make_graph([helper.make_node("Squeeze", ["x", "axes"], ["y"])], "squeeze",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "one"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
                              [onnx.numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "squeeze.onnx"))
    source = ModelSource("onnx", (TensorSpec("x", ("batch", 4)),), ("y",), path=tmp_path / "squeeze.onnx")
    with pytest.raises(InputError, match=r"with the fixed dimensions model.inputs declares \(x \['batch', 4\]\) the graph "
                                         r"no longer loads .* declare those axes with a name"):
        read_onnx_source(source, tmp_path / "out.onnx")


def test_a_detector_layout_that_does_not_fit_suggests_the_one_that_does() -> None:
    from modelc_build.tasks import layout_problem

    message = layout_problem((1, 7, 336), Task(type="detection", layout="yolov5", classes=("a", "b", "c")))
    assert message is not None and "it fits layout: yolov8" in message
    message = layout_problem((1, 336, 8), Task(type="detection", layout="yolov8", classes=("a", "b", "c")))
    assert message is not None and "it fits layout: yolov5" in message


def test_arrays_an_npz_holds_beyond_the_inputs_are_said_once(tmp_path: Path, capsys) -> None:
    for index in range(3):
        np.savez(tmp_path / f"{index}.npz", x=np.zeros(4, np.float32), label=np.int64(1))
    reader = DataReader(Dataset(tmp_path, "npz"), (TensorSpec("x", ("batch", 4)),), None)
    assert sum(len(b) for b in reader.batches()) == 3
    err = capsys.readouterr().err
    assert err.count("arrays ['label'] are not model inputs (['x']) and are not read") == 1


def test_token_lines_that_end_in_padding_are_said_and_the_padding_masked(tmp_path: Path, capsys) -> None:
    (tmp_path / "tokens.txt").write_text("5 6 7 0 0\n8 9\n")
    inputs = (TensorSpec("ids", ("batch", "seq"), "int64"), TensorSpec("mask", ("batch", "seq"), "int64"))
    reader = DataReader(Dataset(tmp_path / "tokens.txt", "tokens", tokens=TokenFields("ids", "mask")), inputs, None)
    batch = next(reader.batches())
    assert batch.inputs["mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert "1 line(s) end in padding (pad_id 0; first at line 1)" in capsys.readouterr().err


def test_yolo_labels_without_label_files_are_named_by_validate_and_build(tmp_path: Path, run_cli) -> None:
    import shutil

    import yaml

    repo = Path(__file__).resolve().parents[1]
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted((repo / "calibration/shapes-detect/evaluation").glob("*.png"))[:4]:
        shutil.copy(source, images / source.name)
    data = yaml.safe_load((repo / "recipes/yolo.yaml").read_text())
    data["model"].update(factory=f"{repo}/models/tiny_yolo.py:build_model", weights=f"{repo}/models/tiny_yolo.pt")
    data["data"]["calibration"]["path"] = f"{repo}/calibration/shapes-detect/calibration"
    data["data"]["evaluation"] = {"path": str(images), "labels": "yolo"}
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    validated = run_cli("validate", recipe)
    assert validated.exit_code == 2
    assert "data.evaluation.labels: yolo, but none of the 4 images in" in validated.stderr
    built = run_cli("build", recipe, "--store", tmp_path / "store")
    assert built.exit_code == 3 and "labels: yolo, but none of its 4 images has a label file" in built.stderr


def test_an_error_with_a_library_s_lines_is_printed_as_one_line() -> None:
    from modelc_build.cli import one_line

    assert one_line("onnxruntime failed:\n  [ONNXRuntimeError] : 1 : FAIL\n\n  Load model failed") == \
        "onnxruntime failed:; [ONNXRuntimeError] : 1 : FAIL; Load model failed"
