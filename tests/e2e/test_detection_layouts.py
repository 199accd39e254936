"""Detection output layouts: the shipped detector's weights behind the layouts people ship, built
end to end; the same detections give the same mAP in every layout; a wrong layout is named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def layout_recipe(tmp_path: Path, factory: str, layout: str | None) -> Path:
    recipe = yaml.safe_load((REPO / "recipes/yolo.yaml").read_text())
    recipe["model"]["factory"] = str(REPO / "models" / factory)
    recipe["model"]["weights"] = str(REPO / "models/tiny_yolo.pt")
    for role in ("calibration", "evaluation"):
        recipe["data"][role]["path"] = str(REPO / "calibration/shapes-detect" / role)
    recipe["data"].pop("calibration")
    recipe["targets"] = [{"backend": "onnxruntime", "precisions": ["fp32"]}]
    recipe["gates"] = None
    recipe.pop("gates")
    recipe["latency"] = {"runs": 2, "warmup": 1}
    if layout:
        recipe["task"]["layout"] = layout
    path = tmp_path / f"{layout}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("factory,layout", [("tiny_yolo.py:build_model", None),
                                            ("tiny_yolo_layouts.py:build_yolov8_layout", "yolov8"),
                                            ("tiny_yolo_layouts.py:build_boxes_layout", "boxes")])
def test_each_layout_builds_and_scores_the_same_detections(tmp_path: Path, run_cli, factory: str, layout: str | None) -> None:
    result = run_cli("build", layout_recipe(tmp_path, factory, layout), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "store/tiny-yolo-shapes/1.0.0/report.json").read_text())
    artifact = report["artifacts"][0]
    assert artifact["task_metric"]["name"] == "map50"
    assert artifact["task_metric"]["reference"] == pytest.approx(99.65, abs=0.01)  # the shipped detector's mAP@0.5
    assert artifact["task_metric"]["label_free"]["reference_map50"] == pytest.approx(100.0)
    assert [o["output"] for o in artifact["outputs"]] == ["detections", "detections:boxes", "detections:scores"]


def test_a_layout_that_does_not_fit_the_output_is_named(tmp_path: Path, run_cli) -> None:
    result = run_cli("build", layout_recipe(tmp_path, "tiny_yolo.py:build_model", "yolov8"), "--store", tmp_path / "store")
    assert result.exit_code == 3, result.stderr
    assert "output 'detections' does not fit task.layout yolov8: the yolov8 layout has axis 1 of 4 + 3 classes = 7 values" \
        in result.stderr
    assert "fix task.layout or task.classes" in result.stderr
