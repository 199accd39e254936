"""TinyYolo: a small anchor-free, two-scale, YOLO-style detector (our own code).

Output `detections` is [batch, cells, 5 + classes]: box centre x, centre y, width, height in
input pixels, objectness probability, then per-class probabilities. Decoding happens inside the
graph so every backend returns boxes directly; NMS is left to the caller.
"""
from __future__ import annotations

import torch
from torch import nn


class ConvBnAct(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Residual(nn.Module):
    """Two 3x3 convolutions with a skip connection (a C2f block reduced to its core)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = ConvBnAct(channels, channels)
        self.second = ConvBnAct(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.second(self.first(x))


class Head(nn.Module):
    """Predicts (tx, ty, tw, th, objectness, classes) per cell and decodes boxes for one stride."""

    def __init__(self, channels: int, num_classes: int, stride: int, image_size: int) -> None:
        super().__init__()
        self.stride = stride
        self.stem = ConvBnAct(channels, channels)
        self.predict = nn.Conv2d(channels, 5 + num_classes, 1)
        cells = image_size // stride
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        self.register_buffer("grid", torch.stack((xs, ys), dim=-1).reshape(1, cells * cells, 2).float(),
                             persistent=False)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """Undecoded predictions, [batch, cells, 5 + classes] (used by the training loss)."""
        out = self.predict(self.stem(x))
        return out.flatten(2).transpose(1, 2)

    def decode(self, raw: torch.Tensor, grid: torch.Tensor | None = None) -> torch.Tensor:
        """Boxes in input pixels; `grid` selects cells when `raw` holds only some of them."""
        grid = self.grid if grid is None else grid
        xy = (raw[..., 0:2].sigmoid() * 2.0 - 0.5 + grid) * self.stride
        wh = (raw[..., 2:4].sigmoid() * 4.0) ** 2 * self.stride
        scores = raw[..., 4:].sigmoid()
        return torch.cat((xy, wh, scores), dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.raw(x))


class TinyYolo(nn.Module):
    def __init__(self, num_classes: int = 3, image_size: int = 128, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stage1 = nn.Sequential(ConvBnAct(3, w, stride=2), ConvBnAct(w, 2 * w, stride=2), Residual(2 * w))
        self.stage2 = nn.Sequential(ConvBnAct(2 * w, 4 * w, stride=2), Residual(4 * w))  # stride 8
        self.stage3 = nn.Sequential(ConvBnAct(4 * w, 6 * w, stride=2), Residual(6 * w))  # stride 16
        self.lateral = ConvBnAct(6 * w, 4 * w, kernel=1)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = ConvBnAct(8 * w, 4 * w)
        self.head_small = Head(4 * w, num_classes, stride=8, image_size=image_size)
        self.head_large = Head(6 * w, num_classes, stride=16, image_size=image_size)

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p3 = self.stage2(self.stage1(images))
        p4 = self.stage3(p3)
        p3 = self.fuse(torch.cat((p3, self.upsample(self.lateral(p4))), dim=1))
        return p3, p4

    def raw(self, images: torch.Tensor) -> list[torch.Tensor]:
        p3, p4 = self.features(images)
        return [self.head_small.raw(p3), self.head_large.raw(p4)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        p3, p4 = self.features(images)
        return torch.cat((self.head_small(p3), self.head_large(p4)), dim=1)


def build_model(num_classes: int = 3, image_size: int = 128) -> TinyYolo:
    """Factory named by `recipes/yolo.yaml`."""
    return TinyYolo(num_classes=num_classes, image_size=image_size)
