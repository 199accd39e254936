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
