from __future__ import annotations

from pathlib import Path

import pytest

from modelc_build.errors import RecipeError
from modelc_build.recipe import load_recipe

REPO = Path(__file__).resolve().parent.parent
GOOD = """\
format_version: 1
name: demo
version: 1.0.0
model:
  source: torch
  factory: net.py:build
  weights: w.pt
  inputs:
    - name: x
      shape: [batch, 3, 8, 8]
  outputs: [y]
targets:
  - backend: openvino
    precisions: [fp32, fp16]
"""


def with_file_source(text: str, kind: str, path: str) -> str:
    """GOOD (or a variant) with its torch source swapped for an onnx or torchscript file."""
    return text.replace("  source: torch\n  factory: net.py:build\n  weights: w.pt\n", f"  source: {kind}\n  path: {path}\n")


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_are_valid(recipe: Path) -> None:
    loaded = load_recipe(recipe)
    assert loaded.targets and loaded.name


def test_good_recipe_gets_defaults(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    recipe = load_recipe(path)
    assert recipe.export.exporter == "auto" and recipe.export.opset == 18 and recipe.export.simplify
    assert [t.id for t in recipe.targets] == ["openvino-fp32", "openvino-fp16"]
    assert recipe.model.inputs[0].dynamic_axes == {0: "batch"}
    assert recipe.model.weights == tmp_path / "w.pt"
    assert recipe.latency.runs == 30


def test_unknown_key_names_line_column_and_suggests(tmp_path: Path) -> None:
    text = GOOD.replace("  weights: w.pt", "  weigths: w.pt")
    found = problems_of(tmp_path, text)
    assert f"{tmp_path / 'r.yaml'}:7:3: model.weigths: unknown key 'weigths': did you mean 'weights'?" in found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("name: demo", "name: Demo Model").replace("[fp32, fp16]", "[fp32, fp64]") + "extra: 1\n"
    found = problems_of(tmp_path, text)
    assert len(found) == 3
    assert any(":2:7: name: 'Demo Model' is not allowed here: Release name: lower-case" in p for p in found)
    assert any("targets[0].precisions[1]: 'fp64' is not one of 'fp32', 'fp16'" in p for p in found)
    assert any(":15:1: extra: unknown key 'extra'" in p for p in found)


def test_missing_required_key(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("version: 1.0.0\n", ""))
    assert found == [f"{tmp_path / 'r.yaml'}:1:1: missing required key 'version': add it"]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("outputs: [y]", "outputs: [y"))
    assert found == [f"{tmp_path / 'r.yaml'}:12:8: not valid YAML: expected ',' or ']', but got ':'"]


def test_duplicate_key(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("version: 1.0.0\n", "version: 1.0.0\nversion: 1.0.1\n"))
    assert any(":4:1: version: duplicate key 'version'" in p for p in found)


def test_torch_source_needs_weights(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("  weights: w.pt\n", ""))
    assert any("model: missing required key 'weights': a torch source needs a factory and a weights file" in p for p in found)


def test_onnx_source_rejects_torchscript_target(tmp_path: Path) -> None:
    text = with_file_source(GOOD, "onnx", "m.onnx").replace("backend: openvino\n    precisions: [fp32, fp16]", "backend: torchscript\n    precisions: [fp32]")
    found = problems_of(tmp_path, text)
    assert any("a torchscript target is made from the torch model: it needs a torch or torchscript source" in p for p in found)


def test_unsupported_precision_for_backend(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("backend: openvino", "backend: torchscript"))
    assert any("targets[0].precisions[1]: torchscript fp16 is not supported; torchscript supports fp32" in p for p in found)


def test_torchscript_source_needs_torchscript_exporter(tmp_path: Path) -> None:
    found = problems_of(tmp_path, with_file_source(GOOD, "torchscript", "m.pt") + "export: {exporter: dynamo}\n")
    assert any("set export.exporter: torchscript or auto" in p for p in found)


def test_symbolic_dimension_must_be_a_name(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("[batch, 3, 8, 8]", "[batch, 0, 8, 8]"))
    assert any("model.inputs[0].shape[1]: 0 is neither a positive integer nor a symbolic dimension name" in p for p in found)


def test_gate_for_a_precision_nobody_builds(tmp_path: Path) -> None:
    text = GOOD.replace("[fp32, fp16]", "[fp32]") + "gates:\n  fp16:\n    min_cosine: 0.99\n"
    found = problems_of(tmp_path, text)
    assert any("gates.fp16: no target builds fp16" in p for p in found)


def test_detection_task_needs_yolo_labels(tmp_path: Path) -> None:
    text = GOOD + ("data:\n  preprocess: {size: [8, 8]}\n  evaluation: {path: imgs, labels: folders}\n"
                   "task: {type: detection, classes: [a]}\n")
    found = problems_of(tmp_path, text)
    assert any("a detection task reads labels yolo or ultralytics or coco" in p for p in found)


def test_cli_validate_prints_one_line_per_problem_and_exits_2(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD.replace("  weights: w.pt", "  weigths: w.pt"))
    result = run_cli("validate", path)
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}:7:3: model.weigths: unknown key 'weigths': did you mean 'weights'?\n"


def test_cli_validate_reports_missing_files(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    result = run_cli("validate", path)
    assert result.exit_code == 2
    assert f"{path}:7:12: model.weights: {tmp_path / 'w.pt'} does not exist" in result.stderr


def test_cli_validate_ok_on_shipped_recipes(run_cli, mobilenet_v2) -> None:
    shipped = sorted((REPO / "recipes").glob("*.yaml"))
    result = run_cli("validate", *shipped)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count(": ok") == len(shipped) >= 6


def test_int8_needs_calibration_data(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("[fp32, fp16]", "[fp32, int8]"))
    assert any("targets: an int8 target is calibrated on representative data: add data.calibration" in p for p in found)


def test_onnxruntime_has_no_fp16(tmp_path: Path) -> None:
    text = GOOD.replace("backend: openvino\n    precisions: [fp32, fp16]", "backend: onnxruntime\n    precisions: [fp16]")
    found = problems_of(tmp_path, text)
    assert any("onnxruntime fp16 is not supported; onnxruntime supports fp32, int8" in p for p in found)


def test_quantization_section_needs_an_int8_target(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD + "quantization:\n  preset: mixed\n")
    assert any("quantization: no target builds int8" in p for p in found)


def test_python_data_source_and_shuffle(tmp_path: Path) -> None:
    int8 = GOOD.replace("precisions: [fp32, fp16]", "precisions: [fp32, int8]")
    path = tmp_path / "r.yaml"
    path.write_text(int8 + "data:\n  calibration: {path: data/make.py:batches, samples: 32}\n"
                    "  evaluation: {path: e.npy, shuffle: true, seed: 3}\n")
    recipe = load_recipe(path)
    assert recipe.calibration is not None and recipe.evaluation is not None
    assert (recipe.calibration.format, recipe.calibration.function) == ("python", "batches")
    assert recipe.calibration.path == tmp_path / "data" / "make.py"
    assert (recipe.evaluation.shuffle, recipe.evaluation.seed) == (True, 3)
    found = problems_of(tmp_path, int8 + "data:\n  calibration: {path: make.py:batches, shuffle: true}\n")
    assert any("a python data source yields its own order; remove shuffle" in p for p in found)


def test_torchscript_int8_is_refused_with_the_reason(tmp_path: Path) -> None:
    int8 = GOOD.replace("precisions: [fp32, fp16]", "precisions: [int8]").replace("backend: openvino", "backend: torchscript")
    found = problems_of(tmp_path, int8 + "data:\n  calibration: {path: x.npy}\n")
    assert any("torchscript int8 is not offered" in p and "openvino int8 or onnxruntime int8" in p for p in found), found


def test_scale_may_be_written_as_the_docs_write_it(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD + "data:\n  preprocess: {size: [8, 8], scale: 1/255}\n")
    assert load_recipe(path).preprocess.scale == pytest.approx(1 / 255)
    found = problems_of(tmp_path, GOOD + "data:\n  preprocess: {size: [8, 8], scale: one/255}\n")
    assert any("data.preprocess.scale" in p for p in found), found


def test_preprocess_size_must_match_a_fixed_input_shape(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD + "data:\n  preprocess: {size: [32, 48]}\n")
    assert any("data.preprocess.size: size [32, 48] does not match model.inputs[0].shape [batch, 3, 8, 8]" in p
               or "data.preprocess.size: size [32, 48] does not match model.inputs[0].shape ['batch', 3, 8, 8]" in p
               for p in found), found
    assert any("(height 8, width 8): make them agree" in p for p in found)


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    import time

    levels = "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    path = tmp_path / "bomb.yaml"
    path.write_text("a: &a [x,x,x,x,x,x,x,x,x]\n" + levels)  # ~300 bytes, 9^9 nodes expanded
    started = time.perf_counter()
    with pytest.raises(RecipeError) as caught:
        load_recipe(path)
    assert time.perf_counter() - started < 5  # generous: it takes milliseconds; expanding takes minutes and GBs
    assert "expands to more than 100,000 nodes through its aliases" in str(caught.value.problems[0])


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD + "gates:\n  fp32: &tight {min_cosine: 0.999}\n  fp16: *tight\n")
    assert load_recipe(path).gate_for("fp16").min_cosine == 0.999


@pytest.mark.parametrize("extra,message", [
    ("gates:\n  fp32: {min_cosine: .nan}\n", "gates.fp32.min_cosine: nan is not a number a gate or setting can use"),
    ("gates:\n  fp32: {max_abs_error: .inf}\n", "gates.fp32.max_abs_error: inf is not a number"),
])
def test_nan_and_infinity_are_refused(tmp_path: Path, extra: str, message: str) -> None:
    found = problems_of(tmp_path, GOOD + extra)
    assert any(message in p for p in found), found


def test_integers_written_as_floats_become_integers(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(GOOD + "data:\n  preprocess: {size: [8.0, 8]}\n  evaluation: {path: imgs, batch_size: 1.0e+2, samples: 4.0}\n")
    recipe = load_recipe(path)
    assert recipe.evaluation.batch_size == 100 and isinstance(recipe.evaluation.batch_size, int)
    assert recipe.evaluation.samples == 4 and recipe.preprocess.height == 8 and isinstance(recipe.preprocess.height, int)


def test_absurd_dimensions_are_refused_up_front(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("shape: [batch, 3, 8, 8]", "shape: [batch, 3, 1000000000000, 8]"))
    assert any("model.inputs[0].shape[2]" in p for p in found), found


DETECTOR = GOOD.replace("  outputs: [y]", "  outputs: [boxes, scores]") + (
    "data:\n  preprocess: {size: [8, 8]}\n  evaluation: {path: imgs}\n")


def test_separate_detection_layout_needs_both_outputs_named(tmp_path: Path) -> None:
    found = problems_of(tmp_path, DETECTOR + "task: {type: detection, classes: [a], layout: separate, boxes_output: boxes}\n")
    assert any("task.layout separate reads two outputs: add task.scores_output" in p for p in found)
    found = problems_of(tmp_path, DETECTOR + "task: {type: detection, classes: [a], layout: separate, boxes_output: bx, "
                        "scores_output: scores}\n")
    assert any(":18:71:" in p and "task.boxes_output: 'bx' is not one of model.outputs ['boxes', 'scores']" in p for p in found)
    found = problems_of(tmp_path, DETECTOR + "task: {type: detection, classes: [a], boxes_output: boxes}\n")
    assert any("task.boxes_output: 'boxes_output' names an output of the separate detection layout" in p for p in found)


def test_a_detection_layout_on_a_classification_task_is_named(tmp_path: Path) -> None:
    text = GOOD + ("data:\n  preprocess: {size: [8, 8]}\n  evaluation: {path: imgs}\n"
                   "task: {type: classification, layout: yolov8}\n")
    found = problems_of(tmp_path, text)
    assert any(":18:38:" in p and "task.layout: 'layout' describes detector outputs; a classification task has none" in p
               for p in found)


def test_cli_validate_warns_about_a_fixed_batch(tmp_path: Path, run_cli) -> None:
    (tmp_path / "net.py").write_text("")
    (tmp_path / "w.pt").write_text("")
    path = tmp_path / "r.yaml"
    path.write_text(GOOD.replace("shape: [batch, 3, 8, 8]", "shape: [1, 3, 8, 8]"))
    result = run_cli("validate", path)
    assert result.exit_code == 0, result.stderr
    assert f"warning: {path}:10:14: model.inputs[0].shape: the batch axis of 'x' is fixed at 1" in result.stderr
    path.write_text(GOOD)
    assert "warning" not in run_cli("validate", path).stderr


STREAM = GOOD.replace("""  inputs:
    - name: x
      shape: [batch, 3, 8, 8]
  outputs: [y]""", """  inputs:
    - name: x
      shape: [batch, 64]
    - {name: state, shape: [2, batch, 16], batch_axis: 1, state_from: state_out}
    - {name: sr, shape: [], dtype: int64, value: 16000}
  outputs: [y, state_out]""")


def test_state_scalar_and_batch_axis_are_read(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(STREAM)
    x, state, rate = load_recipe(path).model.inputs
    assert (x.batch_axis, state.batch_axis, state.state_from, rate.batch_axis, rate.value) == (0, 1, "state_out", None, 16000)


@pytest.mark.parametrize("old,new,message", [
    ("state_from: state_out}", "state_from: nope}", "model.inputs[1].state_from: 'nope' is not one of model.outputs"),
    ("{name: sr, shape: [], dtype: int64, value: 16000}", "{name: sr, shape: [], dtype: int64}",
     "the input 'sr' has no batch axis, so data (sample-first) cannot give it: give it a value"),
    ("batch_axis: 1,", "batch_axis: 3,", "model.inputs[1].batch_axis: batch_axis 3 is not an axis of shape [2, 'batch', 16]"),
    ("[2, batch, 16]", "[2, batch, hidden]", "a state's axes other than its batch axis must be fixed"),
    ("value: 16000}", "value: [1, [2]]}", "a value is a number, a bool or a nested list"),
    ("value: 16000}", "value: 16000.5}", "16000.5 does not fit dtype int64: write the value in the input's dtype"),
    ("value: 16000}", "value: true}", "True does not fit dtype int64"),
    ("  outputs: [y, state_out]", "  outputs: [y, state_out]\ndata:\n  evaluation: {path: e.npz, shuffle: true}",
     "data.evaluation.shuffle: a model with state reads its data as one stream, in order: remove shuffle"),
    ("  outputs: [y, state_out]", "  outputs: [y, state_out]\ndata:\n  calibration: {path: c.npz}\n"
     "quantization: {sensitivity_layers: 3}", "every 4th calibration sample is not one: add data.validation"),
    ("shape: [batch, 64]", "shape: [4, 64]", "the batch axis of 'x' is fixed at 4: make it 1 or a name"),
])
def test_wrong_state_and_scalar_declarations_are_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    found = problems_of(tmp_path, STREAM.replace(old, new))
    assert any(message in p for p in found), found


def test_token_fields_must_name_model_inputs(tmp_path: Path) -> None:
    text = GOOD + "data:\n  evaluation: {path: t.txt, tokens: {ids: x, mask: attention_mask}}\n"
    found = problems_of(tmp_path, text)
    assert any("data.evaluation.tokens.mask: 'attention_mask' is not one of model.inputs ['x']" in p for p in found), found
    found = problems_of(tmp_path, GOOD + "data:\n  evaluation: {path: t.npz, tokens: {ids: x}}\n")
    assert any("tokens describes a tokenized text file (format: tokens)" in p for p in found), found


def test_example_sizes_of_named_axes(tmp_path: Path) -> None:
    """Height and width from data.preprocess.size; other names a size no fixed axis has; the batch 2."""
    path = tmp_path / "r.yaml"
    path.write_text(GOOD.replace("shape: [batch, 3, 8, 8]", "shape: [batch, 3, height, width]")
                    + "data:\n  preprocess: {size: [48, 40]}\n")
    assert load_recipe(path).model.inputs[0].concrete_shape(2) == (2, 3, 48, 40)
    path.write_text(GOOD.replace("""    - name: x
      shape: [batch, 3, 8, 8]""", """    - {name: ids, shape: [batch, seq], dtype: int64}
    - {name: extra, shape: [batch, 8, 9, other]}"""))
    ids, extra = load_recipe(path).model.inputs
    assert ids.concrete_shape(2) == (2, 10) and extra.concrete_shape(2) == (2, 8, 9, 11)


def test_a_top5_gate_that_cannot_fail_is_a_warning_at_validate(tmp_path: Path) -> None:
    import yaml

    from modelc_build.recipe import recipe_warnings

    path = tmp_path / "r.yaml"
    path.write_text(GOOD)
    data = yaml.safe_load(GOOD)
    for classes, expected in ((["a", "b", "c", "d"], True), ([f"c{i}" for i in range(6)], False)):
        data["task"] = {"type": "classification", "classes": classes}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        said = [w for w in recipe_warnings(path) if w.key_path == "task.classes"]
        assert bool(said) == expected
        if expected:
            assert "4 classes: the top-5 containment gate (min_top5_containment) cannot fail" in said[0].message


def test_every_key_of_the_schema_is_documented() -> None:
    """docs/recipe.md names every key a recipe may hold (an error that suggests a key points at
    something the reference explains)."""
    import json
    import re

    from tests.conftest import REPO

    schema = json.loads((REPO / "modelc_build/schema/recipe.schema.json").read_text())
    docs = (REPO / "docs/recipe.md").read_text()
    keys: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    missing = sorted(key for key in keys if not re.search(rf"`{re.escape(key)}`|\\b{re.escape(key)}:", docs)
                     and f"`{key}" not in docs and f".{key}`" not in docs and f"{key}`" not in docs)
    assert missing == []
