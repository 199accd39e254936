"""Dynamic height and width (`[batch, 3, height, width]`) from torch, ONNX and TorchScript sources:
the axes stay dynamic in every artifact, and example inputs take data.preprocess.size (at the
example size 2 the shipped classifier's feature map vanished: "Output size is too small")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def classifier_recipe(tmp_path: Path, name: str, model: dict[str, Any], targets: list[dict[str, Any]]) -> Path:
    recipe = yaml.safe_load((REPO / "recipes/classifier.yaml").read_text())
    recipe["name"] = name
    recipe["model"] = {**model, "inputs": [{"name": "images", "shape": ["batch", 3, "height", "width"]}],
                       "outputs": ["logits"]}
    recipe.pop("export")
    for role in ("calibration", "evaluation"):
        recipe["data"][role]["path"] = str(REPO / "calibration/shapes-classify" / role)
    recipe["targets"] = targets
    recipe.pop("quantization")
    recipe["gates"] = {"default": {"min_cosine": 0.99}}
    recipe["latency"] = {"runs": 2, "warmup": 1}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def built(tmp_path: Path, run_cli: Any, path: Path, name: str) -> tuple[Path, dict[str, Any]]:
    result = run_cli("build", path, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    release = tmp_path / "store" / name / "1.0.0"
    report = json.loads((release / "report.json").read_text())
    for artifact in report["artifacts"]:
        assert artifact["task_metric"]["value"] == pytest.approx(100.0), artifact["target"]
    return release, report


def test_dynamic_height_and_width_from_every_source_kind(tmp_path: Path, run_cli) -> None:
    import onnxruntime as ort
    import openvino as ov
    import torch

    torch_source = {"source": "torch", "factory": str(REPO / "models/tiny_classifier.py") + ":build_model",
                    "factory_args": {"num_classes": 4}, "weights": str(REPO / "models/tiny_classifier.pt")}
    release, report = built(tmp_path, run_cli, classifier_recipe(tmp_path, "from-torch", torch_source, [
        {"backend": "onnxruntime", "precisions": ["fp32", "int8"]}, {"backend": "openvino", "precisions": ["fp32"]},
        {"backend": "torchscript", "precisions": ["fp32"]}]), "from-torch")
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(release / "onnx/model.onnx")).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert 'shape="?,3,?,?"' in (release / "openvino-fp32/model.xml").read_text()
    other = np.random.default_rng(0).random((2, 3, 96, 80), dtype=np.float32)  # not the 64x64 it was built at
    for target in ("onnxruntime-fp32", "onnxruntime-int8"):
        session = ort.InferenceSession(str(release / target / "model.onnx"), providers=["CPUExecutionProvider"])
        assert session.run(None, {"images": other})[0].shape == (2, 4)
    assert np.asarray(ov.Core().compile_model(str(release / "openvino-fp32/model.xml"), "CPU")(other)[0]).shape == (2, 4)

    onnx_source = {"source": "onnx", "path": str(release / "onnx/model.onnx")}
    again, _ = built(tmp_path, run_cli, classifier_recipe(tmp_path, "from-onnx", onnx_source, [
        {"backend": "openvino", "precisions": ["fp32", "int8"]}]), "from-onnx")
    assert 'shape="?,3,?,?"' in (again / "openvino-int8/model.xml").read_text()

    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.jit.load(str(release / "torchscript-fp32/model.pt"))), str(scripted))
    torchscript_source = {"source": "torchscript", "path": str(scripted)}
    third, _ = built(tmp_path, run_cli, classifier_recipe(tmp_path, "from-torchscript", torchscript_source, [
        {"backend": "onnxruntime", "precisions": ["fp32"]}]), "from-torchscript")
    session = ort.InferenceSession(str(third / "onnxruntime-fp32/model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": other})[0].shape == (2, 4)


WIDTH_FIXING_NET = '''import torch


class M(torch.nn.Module):
    """A head over the flattened feature map: its Linear holds only for width 8."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 64 * 8, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.reshape(h.shape[0], -1))


def build_model():
    return M()
'''


def test_an_export_that_fixes_a_named_axis_fails_naming_it_and_examples_set_its_size(tmp_path: Path, run_cli) -> None:
    """`[batch, 1, 64, width]`: torch.export specialises `width` to the example size the model's
    Linear needs; the graph would run at that width only. The export step says so in one line."""
    import sys

    import numpy as np
    import torch
    import yaml

    (tmp_path / "net.py").write_text(WIDTH_FIXING_NET)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        torch.save(importlib.import_module("net").build_model().state_dict(), tmp_path / "w.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("net", None)
    (tmp_path / "ev").mkdir()
    for index in range(4):
        np.save(tmp_path / "ev" / f"{index}.npy", np.random.default_rng(index).random((1, 64, 8), dtype=np.float32))
    recipe = {"format_version": 1, "name": "dyn", "version": "1.0.0",
              "model": {"source": "torch", "factory": "net.py:build_model", "weights": "w.pt",
                        "inputs": [{"name": "x", "shape": ["batch", 1, 64, "width"]}], "outputs": ["y"]},
              "export": {"exporter": "dynamo"}, "data": {"evaluation": {"path": "ev", "format": "npy"}},
              "targets": [{"backend": "onnxruntime", "precisions": ["fp32"]}], "latency": {"runs": 0}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = run_cli("build", path, "--store", tmp_path / "store", "--reports-dir", tmp_path / "failed")
    assert result.exit_code == 7
    assert ("error: the export fixed axis 3 ('width') of input 'x' at 8 (the example size it was exported with, 8): the "
            "model's code specialises it") in result.stderr
    recipe["model"]["inputs"][0]["examples"] = {"width": 16}  # the recipe's own example size is the one exported with
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    other = run_cli("build", path, "--store", tmp_path / "store", "--reports-dir", tmp_path / "failed")
    assert other.exit_code != 0 and "the export fixed axis 3" not in other.stderr  # width 16: the model itself refuses
    recipe["model"]["inputs"][0]["examples"] = {"height": 16}
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    wrong = run_cli("validate", path)
    assert wrong.exit_code == 2 and "'height' is not a named axis of 'x' other than its batch (named: width)" in wrong.stderr
