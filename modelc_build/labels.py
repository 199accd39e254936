"""Labels in the formats people have, for an image folder (`data.*.labels`, file in `labels_path`):

- `folders`: one sub-folder per class (ImageNet style), class = folder name;
- `csv`: a CSV file of `file,label` rows (a header row is allowed), file relative to the image
  folder, label a class name (from `task.classes`) or a class index;
- `yolo`: a `class cx cy w h` text file (normalised) beside each image;
- `ultralytics`: an Ultralytics `data.yaml` (`names`), YOLO text files in the `labels/` folder that
  mirrors the `images/` folder;
- `coco`: a COCO `instances.json` (`images`, `annotations` with `bbox` [x, y, w, h] in pixels,
  `categories`), categories matched to `task.classes` by name (or taken in id order).

Classification labels become class indices, detection labels boxes in original-image pixels; the
data reader maps boxes into model-input pixels.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelc_build.errors import InputError


@dataclass(frozen=True)
class PixelBox:
    class_id: int
    x0: float
    y0: float
    x1: float
    y1: float


class LabelIndex:
    """Answers 'what is the label of this image' for one data set."""

    def __init__(self, kind: str, folder: Path, labels_file: Path | None, class_names: tuple[str, ...]) -> None:
        self.kind = kind
        self.folder = folder
        self.class_names = class_names
        self._classes: dict[str, int] = {}
        self._boxes: dict[str, list[PixelBox]] = {}
        if kind in ("csv", "coco", "ultralytics") and (labels_file is None or not labels_file.is_file()):
            raise InputError(f"{labels_file or folder}: labels: {kind} needs the labels file in data.*.labels_path")
        if kind == "csv":
            assert labels_file is not None
            self._classes = self._read_csv(labels_file)
        elif kind == "coco":
            assert labels_file is not None
            self._boxes = self._read_coco(labels_file)
        elif kind == "ultralytics":
            assert labels_file is not None
            self.class_names = class_names or self._ultralytics_names(labels_file)

    def class_of(self, image: Path) -> int:
        key = image.relative_to(self.folder).as_posix()
        if key not in self._classes:
            raise InputError(f"{image}: no label for this image in the labels file: add a row `{key},LABEL`")
        return self._classes[key]

    def boxes_of(self, image: Path) -> list[PixelBox] | None:
        """Pixel boxes for coco; None where the boxes are normalised YOLO text (read by the caller)."""
        if self.kind == "coco":
            return self._boxes.get(image.relative_to(self.folder).as_posix(), [])
        return None

    def yolo_text_of(self, image: Path) -> Path:
        """Where an image's YOLO text file is: beside it, or (ultralytics) in the `labels/` folder
        that mirrors the last `images/` folder of its path."""
        parts = list(image.parts)
        if self.kind == "ultralytics" and "images" in parts:
            index = len(parts) - 1 - parts[::-1].index("images")
            return Path(*parts[:index], "labels", *parts[index + 1:]).with_suffix(".txt")
        return image.with_suffix(".txt")

    def _class_id(self, label: str, where: str) -> int:
        label = label.strip()
        if label in self.class_names:
            return self.class_names.index(label)
        if label.isdigit() and (not self.class_names or int(label) < len(self.class_names)):
            return int(label)
        raise InputError(f"{where}: label {label!r} is neither a class in task.classes {list(self.class_names)} nor "
                         "a class index: fix the label or task.classes")

    def _read_csv(self, path: Path) -> dict[str, int]:
        found: dict[str, int] = {}
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or (number == 1 and [c.strip().lower() for c in row[:2]] == ["file", "label"]):
                    continue
                if len(row) < 2:
                    raise InputError(f"{path}:{number}: expected `file,label`, got {row!r}")
                found[row[0].strip()] = self._class_id(row[1], f"{path}:{number}")
        return found

    def _read_coco(self, path: Path) -> dict[str, list[PixelBox]]:
        try:
            document: dict[str, Any] = json.loads(path.read_text())
            categories = sorted(document["categories"], key=lambda c: c["id"])
            images = {image["id"]: image["file_name"] for image in document["images"]}
            annotations = document.get("annotations", [])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a COCO instances file (images, annotations, categories): {exc}") from exc
        names = [c["name"] for c in categories]
        if self.class_names:
            unknown = [n for n in names if n not in self.class_names]
            if unknown:
                raise InputError(f"{path}: categories {unknown} are not in task.classes {list(self.class_names)}")
            to_class = {c["id"]: self.class_names.index(c["name"]) for c in categories}
        else:
            self.class_names = tuple(names)
            to_class = {c["id"]: index for index, c in enumerate(categories)}
        boxes: dict[str, list[PixelBox]] = {name: [] for name in images.values()}
        for annotation in annotations:
            if annotation.get("iscrowd"):
                continue
            x, y, w, h = (float(v) for v in annotation["bbox"])
            boxes[images[annotation["image_id"]]].append(PixelBox(to_class[annotation["category_id"]], x, y, x + w, y + h))
        return boxes

    @staticmethod
    def _ultralytics_names(path: Path) -> tuple[str, ...]:
        import yaml

        try:
            names = yaml.safe_load(path.read_text()).get("names")
        except (OSError, yaml.YAMLError, AttributeError) as exc:
            raise InputError(f"{path}: not an Ultralytics data.yaml: {exc}") from exc
        if isinstance(names, dict):
            return tuple(str(names[k]) for k in sorted(names))
        if isinstance(names, list):
            return tuple(str(n) for n in names)
        raise InputError(f"{path}: no `names` (class names) in this data.yaml")
