"""TinyYoloV8: TinyYolo's backbone with a YOLOv8-style head (our own code): no objectness, one
sigmoid score per class, trained so that a cell's class score is the IoU of its box with the
object (the quality-aware target Ultralytics' YOLOv8/YOLO11 use).

Output `detections` is `[batch, 4 + classes, cells]`, Ultralytics' layout: box centre x, centre y,
width, height in input pixels, then the class scores (`task.layout: yolov8`).
"""
from __future__ import annotations

import torch
from torch import nn

from models.tiny_yolo import Head, TinyYolo


class ScoresHead(Head):
    """Predicts (tx, ty, tw, th, class logits) per cell; decodes boxes and class scores."""

    def __init__(self, channels: int, num_classes: int, stride: int, image_size: int) -> None:
        super().__init__(channels, num_classes, stride, image_size)
        self.predict = nn.Conv2d(channels, 4 + num_classes, 1)


class TinyYoloV8(TinyYolo):
    def __init__(self, num_classes: int = 3, image_size: int = 128, width: int = 16) -> None:
        super().__init__(num_classes, image_size, width)
        self.head_small = ScoresHead(4 * width, num_classes, stride=8, image_size=image_size)
        self.head_large = ScoresHead(6 * width, num_classes, stride=16, image_size=image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(images).transpose(1, 2)


def build_model(num_classes: int = 3, image_size: int = 128) -> TinyYoloV8:
    return TinyYoloV8(num_classes=num_classes, image_size=image_size)
