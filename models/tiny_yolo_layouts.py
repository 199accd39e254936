"""The shipped TinyYolo with its outputs laid out as other detectors ship them, for the detection
layouts a recipe may declare (`task.layout`). Same weights, same detections:

- `build_yolov8_layout`: `[batch, 4 + classes, boxes]` like Ultralytics YOLOv8/YOLO11 (cx, cy, w, h in
  input pixels, then class scores; objectness folded into the scores);
- `build_boxes_layout`: `[batch, boxes, 6]` (x1, y1, x2, y2, score, class id);
- `build_separate_layout`: two outputs, boxes `[batch, boxes, 4]` (x1, y1, x2, y2) and class scores
  `[batch, boxes, classes]` (SSD-style exports).
"""
from __future__ import annotations

import torch

from models.tiny_yolo import TinyYolo


class TinyYoloV8Layout(TinyYolo):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = super().forward(x)  # [batch, boxes, 5 + classes]
        scores = rows[..., 4:5] * rows[..., 5:]
        return torch.cat((rows[..., :4], scores), dim=-1).transpose(1, 2)


class TinyYoloBoxesLayout(TinyYolo):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = super().forward(x)
        score, class_id = (rows[..., 4:5] * rows[..., 5:]).max(dim=-1, keepdim=True)
        centre, size = rows[..., 0:2], rows[..., 2:4]
        return torch.cat((centre - size / 2, centre + size / 2, score, class_id.to(rows.dtype)), dim=-1)


class TinyYoloSeparateLayout(TinyYolo):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = super().forward(x)
        centre, size = rows[..., 0:2], rows[..., 2:4]
        return torch.cat((centre - size / 2, centre + size / 2), dim=-1), rows[..., 4:5] * rows[..., 5:]


def build_yolov8_layout(num_classes: int = 3, image_size: int = 128) -> TinyYoloV8Layout:
    return TinyYoloV8Layout(num_classes=num_classes, image_size=image_size)


def build_boxes_layout(num_classes: int = 3, image_size: int = 128) -> TinyYoloBoxesLayout:
    return TinyYoloBoxesLayout(num_classes=num_classes, image_size=image_size)


def build_separate_layout(num_classes: int = 3, image_size: int = 128) -> TinyYoloSeparateLayout:
    return TinyYoloSeparateLayout(num_classes=num_classes, image_size=image_size)
