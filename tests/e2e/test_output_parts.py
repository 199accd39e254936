"""Accuracy per part of an output: a YOLOv8-layout detector declared as a generic model, whose INT8
class scores collapse while its box coordinates (pixels) keep the whole-tensor cosine near 1, fails
on the part that collapsed, by name; with the scores intact it passes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, shipped_recipe

GENERIC = {"type": "generic"}


def in_640_pixels(tmp_path: Path, **overrides: object) -> Path:
    """yolov8.yaml with the fixture that gives boxes in 640-pixel units, declared generic."""
    import yaml

    recipe = shipped_recipe("yolov8.yaml", tmp_path, **overrides)
    data = yaml.safe_load(recipe.read_text())
    data["model"]["factory"] = f"{FIXTURES / 'yolov8_640.py'}:build_model"
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    return recipe
ORT_INT8 = [{"backend": "onnxruntime", "precisions": ["int8"]}]


@pytest.mark.slow
def test_a_collapsed_part_fails_the_build_by_name_and_an_intact_one_passes(tmp_path: Path, run_cli) -> None:
    # onnxruntime quantizes the head's output as one tensor: one scale for pixels and probabilities
    collapsed = in_640_pixels(tmp_path, task=GENERIC, targets=ORT_INT8, gates=None,
                               verify={"cpus": []}, latency={"runs": 0, "warmup": 0},
                               quantization={"float_output_head": False})
    result = run_cli("build", collapsed, "--store", tmp_path / "store", "--reports-dir", tmp_path / "failed")
    assert result.exit_code == 4, result.stderr
    assert "onnxruntime-int8: min_cosine on output 'detections:axis 1 channels 4-6'" in result.stderr
    report = json.loads((tmp_path / "failed/tiny-yolov8-shapes/1.0.0/report.json").read_text())
    outputs = {o["output"]: o["cosine"] for o in report["artifacts"][0]["outputs"]}
    assert outputs["detections"] > 0.99  # the whole tensor hides it
    assert outputs["detections:axis 1 channels 0-3"] > 0.99 and outputs["detections:axis 1 channels 4-6"] < 0.9
    assert any("looks like a YOLOv8-layout detector" in flag for flag in report["flags"])

    intact = in_640_pixels(tmp_path, task=GENERIC, targets=ORT_INT8, gates=None,
                            verify={"cpus": []}, latency={"runs": 0, "warmup": 0},
                            quantization={"float_output_head": True})
    passed = run_cli("build", intact, "--store", tmp_path / "store")
    assert passed.exit_code == 0, passed.stderr
    report = json.loads((tmp_path / "store/tiny-yolov8-shapes/1.0.0/report.json").read_text())
    parts = {o["output"]: o["cosine"] for o in report["artifacts"][0]["outputs"] if ":" in o["output"]}
    assert set(parts) == {"detections:axis 1 channels 0-3", "detections:axis 1 channels 4-6"}
    assert min(parts.values()) > 0.99
