"""Models with state, end to end through the CLI: a trained streaming model (models/tiny_stream.py,
state [layers, batch, hidden] with the batch on axis 1, a sample rate) as a torch source with a
Python `sr: int` argument, as an ONNX graph with a scalar `sr` input, and as a TorchScript file;
the state is carried from call to call over the evaluation stream, for the reference and each
artifact alike."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

STATE = {"name": "state", "shape": [2, "batch", 16], "batch_axis": 1, "state_from": "state_out"}
METRIC = '''
import numpy as np

def decisions(outputs, reference, labels):
    """Share of chunks where the artifact's tone / no-tone decision is the reference's."""
    return {"decision_agreement": 100.0 * float(np.mean((outputs["probability"] > 0.5) == (reference["probability"] > 0.5))),
            "mean_abs_probability_error": float(np.mean(np.abs(outputs["probability"] - reference["probability"])))}
'''


def trained() -> Any:
    from models.tiny_stream import TinyStream

    model = TinyStream()
    model.load_state_dict(torch.load(REPO / "models/tiny_stream.pt", weights_only=True))
    return model.eval()


def stream_recipe(tmp_path: Path, model: dict[str, Any], targets: list[dict[str, Any]]) -> Path:
    from models.tiny_stream import make_stream

    for role, chunks, seed in (("calibration", 512, 11), ("evaluation", 300, 12)):
        np.savez(tmp_path / f"{role}.npz", x=make_stream(chunks, seed)[0])
    (tmp_path / "metric.py").write_text(METRIC)
    recipe = {"format_version": 1, "name": "stream", "version": "1.0.0",
              "model": {**model, "outputs": ["probability", "state_out"]},
              "data": {"calibration": {"path": "calibration.npz"}, "evaluation": {"path": "evaluation.npz"}},
              "task": {"type": "custom", "metric": "metric.py:decisions"},
              "targets": targets, "latency": {"runs": 3, "warmup": 1}}
    path = tmp_path / "stream.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def artifacts(tmp_path: Path) -> dict[str, Any]:
    report = json.loads((tmp_path / "store/stream/1.0.0/report.json").read_text())
    assert report["samples"] == 300
    assert "read as one stream, one sample per call, state carried (state ← state_out)" in report["evaluation_data"]
    return {a["target"]: a for a in report["artifacts"]}


def check(found: dict[str, Any], targets: set[str]) -> None:
    assert set(found) == targets
    for target, artifact in found.items():
        cosines = {o["output"]: o["cosine"] for o in artifact["outputs"]}
        assert set(cosines) == {"probability", "state_out"}
        floor = 0.95 if target.endswith("int8") else 0.999
        assert min(cosines.values()) > floor, (target, cosines)
        assert artifact["task_metric"]["name"] == "decision_agreement"
        assert artifact["task_metric"]["value"] >= (90 if target.endswith("int8") else 99), (target, artifact["task_metric"])


def test_a_torch_source_with_a_python_sample_rate_argument(tmp_path: Path, run_cli) -> None:
    model = {"source": "torch", "factory": str(REPO / "models/tiny_stream.py") + ":build_model",
             "weights": str(REPO / "models/tiny_stream.pt"), "arguments": {"sr": 16000},
             "inputs": [{"name": "x", "shape": ["batch", 64]}, STATE]}
    targets = [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]},
               {"backend": "openvino", "precisions": ["fp32", "int8"]}, {"backend": "torchscript", "precisions": ["fp32"]}]
    result = run_cli("build", stream_recipe(tmp_path, model, targets), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    check(artifacts(tmp_path), {"onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8",
                                "torchscript-fp32"})


def test_an_onnx_source_with_a_scalar_input_and_a_fixed_batch(tmp_path: Path, run_cli) -> None:
    """Exported with batch 1 fixed (as streaming models usually are) and `sr` a scalar int64 input."""
    from models.tiny_stream import ScalarRateStream

    model = ScalarRateStream()
    model.load_state_dict(trained().state_dict())
    path = tmp_path / "stream.onnx"
    torch.onnx.export(model.eval(), (torch.zeros(1, 64), torch.zeros(2, 1, 16), torch.tensor(16000)), str(path),
                      input_names=["x", "state", "sr"], output_names=["probability", "state_out"], opset_version=17,
                      dynamo=False)
    source = {"source": "onnx", "path": str(path),
              "inputs": [{"name": "x", "shape": [1, 64]}, {**STATE, "shape": [2, 1, 16]},
                         {"name": "sr", "shape": [], "dtype": "int64", "value": 16000}]}
    targets = [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]},
               {"backend": "openvino", "precisions": ["fp32", "int8"]}]
    result = run_cli("build", stream_recipe(tmp_path, source, targets), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    check(artifacts(tmp_path), {"onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"})


def test_a_torchscript_source_with_a_python_argument(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "stream.pt"
    torch.jit.save(torch.jit.script(trained()), str(path))
    source = {"source": "torchscript", "path": str(path), "arguments": {"sr": 16000},
              "inputs": [{"name": "x", "shape": ["batch", 64]}, STATE]}
    targets = [{"backend": "onnxruntime", "precisions": ["fp32"]}, {"backend": "openvino", "precisions": ["fp32"]}]
    result = run_cli("build", stream_recipe(tmp_path, source, targets), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    check(artifacts(tmp_path), {"onnxruntime-fp32", "openvino-fp32"})
