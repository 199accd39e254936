"""TinyClassifier: a small CNN that tells four shapes apart (our own code). Output: `logits`."""
from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                         nn.MaxPool2d(2))


class TinyClassifier(nn.Module):
    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(_block(3, 16), _block(16, 32), _block(32, 64), _block(64, 96))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classify = nn.Linear(96, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(torch.flatten(self.pool(self.features(images)), 1))


def build_model(num_classes: int = 4) -> TinyClassifier:
    """Factory named by `recipes/classifier.yaml`."""
    return TinyClassifier(num_classes=num_classes)
