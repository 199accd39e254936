"""Detection output layouts: the shipped detector's weights behind the layouts people ship, built
end to end; the same detections give the same mAP in every layout; a wrong layout is named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # six builds of the shipped detector


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
    if layout == "separate":
        recipe["model"]["outputs"] = ["boxes", "scores"]
        recipe["task"].update(boxes_output="boxes", scores_output="scores")
    path = tmp_path / f"{layout}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("factory,layout", [("tiny_yolo.py:build_model", None),
                                            ("tiny_yolo_layouts.py:build_yolov8_layout", "yolov8"),
                                            ("tiny_yolo_layouts.py:build_boxes_layout", "boxes"),
                                            ("tiny_yolo_layouts.py:build_separate_layout", "separate")])
def test_each_layout_builds_and_scores_the_same_detections(tmp_path: Path, run_cli, factory: str, layout: str | None) -> None:
    result = run_cli("build", layout_recipe(tmp_path, factory, layout), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "store/tiny-yolo-shapes/1.0.0/report.json").read_text())
    artifact = report["artifacts"][0]
    assert artifact["task_metric"]["name"] == "map50"
    assert artifact["task_metric"]["reference"] == pytest.approx(99.65, abs=0.01)  # the shipped detector's mAP@0.5
    assert artifact["task_metric"]["label_free"]["reference_map50"] == pytest.approx(100.0)
    expected = ["boxes", "scores"] if layout == "separate" else ["detections", "detections:boxes", "detections:scores"]
    assert [o["output"] for o in artifact["outputs"]] == expected


def test_a_layout_that_does_not_fit_the_output_is_named(tmp_path: Path, run_cli) -> None:
    result = run_cli("build", layout_recipe(tmp_path, "tiny_yolo.py:build_model", "yolov8"), "--store", tmp_path / "store")
    assert result.exit_code == 3, result.stderr
    assert "output 'detections' does not fit task.layout yolov8: the yolov8 layout has axis 1 of 4 + 3 classes = 7 values" \
        in result.stderr
    assert "it fits layout: yolov5" in result.stderr  # the layout that would fit is named


def yolo_to_coco(folder: Path, destination: Path) -> None:
    """The shipped YOLO text labels written as a COCO instances file (pixel [x, y, w, h])."""
    from PIL import Image

    images, annotations = [], []
    for number, image in enumerate(sorted(folder.glob("*.png"))):
        width, height = Image.open(image).size
        images.append({"id": number, "file_name": image.name, "width": width, "height": height})
        text = image.with_suffix(".txt")
        for line in (text.read_text().splitlines() if text.exists() else []):
            cls, cx, cy, w, h = (float(v) for v in line.split())
            annotations.append({"id": len(annotations), "image_id": number, "category_id": int(cls) + 1, "iscrowd": 0,
                                "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]})
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(["circle", "square", "triangle"])]
    destination.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


@pytest.mark.parametrize("labels", ["coco", "ultralytics"])
def test_detection_labels_from_coco_and_ultralytics_give_the_same_map(tmp_path: Path, run_cli, labels: str) -> None:
    import shutil

    source = REPO / "calibration/shapes-detect/evaluation"
    recipe = yaml.safe_load(layout_recipe(tmp_path, "tiny_yolo.py:build_model", None).read_text())
    if labels == "coco":
        images = tmp_path / "coco"
        images.mkdir()
        for image in source.glob("*.png"):
            shutil.copy(image, images / image.name)
        yolo_to_coco(source, tmp_path / "instances.json")
        recipe["data"]["evaluation"] = {"path": str(images), "labels": "coco", "labels_path": str(tmp_path / "instances.json")}
    else:
        (tmp_path / "set/images/val").mkdir(parents=True)
        (tmp_path / "set/labels/val").mkdir(parents=True)
        for image in source.glob("*.png"):
            shutil.copy(image, tmp_path / "set/images/val" / image.name)
            if image.with_suffix(".txt").exists():
                shutil.copy(image.with_suffix(".txt"), tmp_path / "set/labels/val" / image.with_suffix(".txt").name)
        (tmp_path / "set/data.yaml").write_text("path: .\nval: images/val\nnames: {0: circle, 1: square, 2: triangle}\n")
        recipe["data"]["evaluation"] = {"path": str(tmp_path / "set/images/val"), "labels": "ultralytics",
                                        "labels_path": str(tmp_path / "set/data.yaml")}
    path = tmp_path / f"{labels}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli("build", path, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "store/tiny-yolo-shapes/1.0.0/report.json").read_text())
    assert report["artifacts"][0]["task_metric"]["name"] == "map50"
    assert report["artifacts"][0]["task_metric"]["reference"] == pytest.approx(99.65, abs=0.01)  # as with YOLO text labels


def test_a_reference_with_no_detections_is_an_error_not_a_pass(tmp_path: Path, run_cli) -> None:
    """Agreement with a reference that found nothing cannot fail (mAP 0 against mAP 0)."""
    recipe = yaml.safe_load(layout_recipe(tmp_path, "tiny_yolo.py:build_model", None).read_text())
    recipe["data"]["evaluation"]["labels"] = "none"
    recipe["task"]["confidence_threshold"] = 0.9999
    path = tmp_path / "nothing.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli("build", path, "--store", tmp_path / "store")
    assert result.exit_code == 3, result.stderr
    assert "the reference model found no detection scoring >= 0.25 on the 96 evaluation images" in result.stderr
    assert not (tmp_path / "store/tiny-yolo-shapes").exists()


def test_a_labelled_reference_scoring_zero_is_an_error(tmp_path: Path, run_cli) -> None:
    """Classes listed in the wrong order: the reference scores 0 against the labels."""
    recipe = yaml.safe_load((REPO / "recipes/classifier.yaml").read_text())
    for key in ("factory", "weights"):
        recipe["model"][key] = str(REPO / "recipes" / recipe["model"][key])
    recipe["data"].pop("calibration")
    recipe["data"]["evaluation"]["path"] = str(REPO / "calibration/shapes-classify/evaluation")
    recipe["task"]["classes"] = ["square", "triangle", "cross", "circle"]
    recipe["targets"] = [{"backend": "onnxruntime", "precisions": ["fp32"]}]
    recipe.pop("quantization")
    recipe["gates"] = {"fp32": {"max_metric_drop": 0.0}}
    recipe["latency"] = {"runs": 0}
    path = tmp_path / "rotated.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli("build", path, "--store", tmp_path / "store")
    assert result.exit_code == 3, result.stderr
    assert "the reference model scores top-1 accuracy 0 % on the labelled evaluation data" in result.stderr
