"""End-to-end: `modelc build` on the shipped recipes into a temporary store, then every artifact
is loaded back with its own runtime and checked against the PyTorch reference."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import onnx
import pytest
import torch

from modelc_build.manifest import sha256_file
from modelc_build.recipe import load_recipe
from modelc_build.sources import load_torch_model

REPO = Path(__file__).resolve().parents[2]
REPORT_SCHEMA = json.loads((REPO / "modelc_build/schema/report.schema.json").read_text())

# Accuracy the shipped models reach on their evaluation sets (README states the same numbers).
EXPECTED_TASK_METRIC = {"yolo.yaml": ("map50", 95.0), "classifier.yaml": ("top1_accuracy", 97.0)}


def run_artifact(release: Path, target: str, files: list[str], x: np.ndarray, input_name: str) -> np.ndarray:
    if target.startswith("openvino"):
        import openvino as ov

        xml = next(f for f in files if f.endswith(".xml"))
        compiled = ov.Core().compile_model(str(release / xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.asarray(compiled({input_name: x})[0])
    if target.startswith("torchscript"):
        module = torch.jit.load(str(release / next(f for f in files if f.endswith(".pt"))))
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    import onnxruntime as ort

    model = next(f for f in files if f.endswith(".onnx"))
    session = ort.InferenceSession(str(release / model), providers=["CPUExecutionProvider"])
    return session.run(None, {input_name: x})[0]


@pytest.mark.slow
@pytest.mark.parametrize("recipe_name", ["yolo.yaml", "classifier.yaml"])
def test_shipped_recipe_builds_and_every_artifact_loads_back(tmp_path: Path, run_cli, recipe_name: str) -> None:
    recipe_path = REPO / "recipes" / recipe_name
    store = tmp_path / "store"
    result = run_cli("build", recipe_path, "--store", store)
    assert result.exit_code == 0, result.stderr
    recipe = load_recipe(recipe_path)
    release = store / recipe.name / recipe.version
    manifest = json.loads((release / "manifest.json").read_text())
    report = json.loads((release / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["passed"] and manifest["gates_passed"]
    for entry in manifest["files"]:
        assert sha256_file(release / entry["path"]) == entry["sha256"], entry["path"]
        assert (release / entry["path"]).stat().st_size == entry["size"]
    assert manifest["recipe"]["sha256"] == recipe.digest
    assert manifest["export"]["exporter"] == recipe.export.exporter

    metric_name, minimum = EXPECTED_TASK_METRIC[recipe_name]
    for artifact in report["artifacts"]:
        assert artifact["task_metric"]["name"] == metric_name
        assert artifact["task_metric"]["value"] >= minimum, artifact["target"]
        assert artifact["latency_ms"] > 0

    reference = load_torch_model(recipe.model)
    spec = recipe.model.inputs[0]
    x = np.random.default_rng(3).random((2, *spec.shape[1:]), dtype=np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    for artifact in manifest["artifacts"]:
        got = run_artifact(release, artifact["target"], artifact["files"], x, spec.name)
        if artifact["precision"] == "int8":  # quantized: close in direction, not element by element
            cosine = float((got * expected).sum() / (np.linalg.norm(got) * np.linalg.norm(expected)))
            assert cosine > 0.99, artifact["target"]
            continue
        tolerance = 2e-2 if artifact["precision"] == "fp16" else 1e-3
        scale = max(float(np.abs(expected).max()), 1.0)
        assert np.abs(got - expected).max() <= tolerance * scale, artifact["target"]
    markdown = (release / "report.md").read_text()
    assert "all gates passed" in markdown and "| `openvino-fp16` |" in markdown and "| `openvino-int8` |" in markdown
    int8 = next(a for a in report["artifacts"] if a["target"] == "openvino-int8")
    fp32 = next(a for a in report["artifacts"] if a["target"] == "openvino-fp32")
    assert int8["size_bytes"] < 0.4 * fp32["size_bytes"]  # int8 weights
    # onnxruntime-int8 is laid out for onnxruntime's CPU kernels: uint8 weights (exact on pre-VNNI CPUs too);
    # ModelOpt's Q/DQ graph is made only for tensorrt targets.
    targets = {a["target"]: a for a in manifest["artifacts"]}
    assert "onnx-int8" not in targets
    ort_int8 = onnx.load(str(release / "onnxruntime-int8/model.onnx"))
    weights = {i.name: i.data_type for i in ort_int8.graph.initializer}
    quantized = [n for n in ort_int8.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    kinds = {weights[n.input[0]] for n in quantized} & {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    assert kinds == {onnx.TensorProto.UINT8}
    # How each int8 artifact was calibrated is in the report: samples used, what stayed float.
    assert report["calibration"]["samples_available"] == 64
    quantized = {a["target"]: a["quantization"] for a in report["artifacts"] if a["precision"] == "int8"}
    assert all(q["calibration_samples"] == 64 for q in quantized.values()), quantized
    assert "reverted_to_float" in quantized["openvino-int8"]["accuracy_control"]  # the recipe gates the int8 drop
    assert "### INT8 calibration" in markdown
    if recipe.quantization.sensitivity_layers:
        assert len(report["sensitivity"]["layers"]) == recipe.quantization.sensitivity_layers
        assert "### INT8 sensitivity" in markdown


@pytest.mark.slow
def test_the_shipped_text_encoder_builds_with_token_inputs(tmp_path: Path, run_cli) -> None:
    """Two int64 inputs with dynamic batch and sequence, data from a tokenized text file; INT8
    through NNCF's transformer mode (OpenVINO) and Q/DQ on MatMul/Gemm alone (onnxruntime)."""
    import onnxruntime as ort

    recipe_path = REPO / "recipes/text_encoder.yaml"
    result = run_cli("build", recipe_path, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    release = tmp_path / "store/tiny-encoder-text/1.0.0"
    report = json.loads((release / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["samples"] == 300
    found = {a["target"]: a for a in report["artifacts"]}
    assert set(found) == {"onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-fp16", "openvino-int8"}
    for target, artifact in found.items():
        metric = artifact["task_metric"]
        assert metric["name"] == "mean_sample_cosine"
        assert metric["value"] > (99.5 if target.endswith("int8") else 99.99), (target, metric)
        assert metric["label_free"]["min_sample_cosine"] > (0.98 if target.endswith("int8") else 0.9999), (target, metric)
    graph = onnx.load(str(release / "onnxruntime-int8/model.onnx")).graph
    quantized = {n.op_type for n in graph.node for i in n.input if any(i == q.output[0] for q in graph.node
                                                                          if q.op_type == "DequantizeLinear")}
    assert {"MatMul", "Gemm"} <= quantized and not quantized & {"Add", "Softmax", "LayerNormalization", "Erf", "Mul"}, \
        quantized  # the mask's Add, Softmax, LayerNorm and GELU read float values
    notes = json.loads((release / "onnxruntime-int8/quantization.json").read_text())
    assert notes["quantized_op_types"] == ["Gemm", "MatMul"]
    assert json.loads((release / "openvino-int8/quantization.json").read_text())["method"].startswith("NNCF")
    kernels = found["openvino-int8"]["latency"]["kernels"]  # where its time goes, from OpenVINO's own counters
    shares = [k["share"] for k in kernels]
    assert kernels and shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100.1
    assert any("FakeQuantize" in k["kernel"] or "Quantized" in k["kernel"] or "i8" in k["kernel"] for k in kernels)
    assert "kernels" not in (found["onnxruntime-int8"]["latency"] or {})
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in onnx.load(str(release / "onnx/model.onnx")).graph.input]
    assert dims == [["batch", "seq"], ["batch", "seq"]]
    session = ort.InferenceSession(str(release / "onnxruntime-fp32/model.onnx"), providers=["CPUExecutionProvider"])
    for batch, length in ((1, 5), (3, 41)):  # any batch, any length
        ids = np.full((batch, length), 7, dtype=np.int64)
        embedding, logits = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert embedding.shape == (batch, 128) and logits.shape == (batch, 2)


@pytest.mark.slow
def test_the_shipped_yolov8_style_detector_builds_in_its_own_layout(tmp_path: Path, run_cli) -> None:
    """A detector trained with a YOLOv8-style head (no objectness, IoU-aware class scores) in
    Ultralytics' [batch, 4 + classes, boxes] layout; its INT8 keeps the decode head in float."""
    result = run_cli("build", REPO / "recipes/yolov8.yaml", "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    release = tmp_path / "store/tiny-yolov8-shapes/1.0.0"
    report = json.loads((release / "report.json").read_text())
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["reference_metric"] > 99.0  # mAP@0.5 on 96 labelled images
    for artifact in report["artifacts"]:
        metric, slices = artifact["task_metric"], {o["output"]: o["cosine"] for o in artifact["outputs"]}
        assert metric["name"] == "map50" and metric["value"] > 99.0, artifact["target"]
        assert metric["label_free"]["reference_map50"] > 99.0, artifact["target"]
        assert slices["detections:scores"] > 0.999, (artifact["target"], slices)
    head = json.loads((release / "onnxruntime-int8/quantization.json").read_text())["kept_in_float"]["nodes"]
    assert any("Sigmoid" in name or "sigmoid" in name for name in head), head  # the class scores' activation
