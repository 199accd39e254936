"""Train TinyYolo on generated shapes images and write `models/tiny_yolo.pt` (a state_dict);
with `--head v8`, TinyYoloV8 (models/tiny_yolov8.py: no objectness, IoU-aware class scores) to
`models/tiny_yolov8.pt`.

    python -m models.train_detector [--head v5|v8] [--epochs 40] [--images 4000]

Runs on the CPU in about ten minutes on two cores. Seeds are fixed; bitwise-identical weights
across machines are not promised (thread scheduling), the committed file is the reference.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from modelc_build.preprocess import preprocess_image
from modelc_build.recipe_types import Preprocess
from models.shapes import detection_image
from models.tiny_yolo import TinyYolo, build_model
from models.tiny_yolov8 import build_model as build_yolov8

TRAIN_SEED = 1
SPEC = Preprocess(height=128, width=128, resize="letterbox")
OUT = Path(__file__).resolve().parent / "tiny_yolo.pt"


def make_training_set(count: int) -> tuple[np.ndarray, list[np.ndarray]]:
    images = np.zeros((count, 3, SPEC.height, SPEC.width), dtype=np.float16)
    targets: list[np.ndarray] = []
    for index in range(count):
        image, boxes = detection_image(TRAIN_SEED, index)
        tensor, placement = preprocess_image(image, SPEC)
        images[index] = tensor
        rows = [(b.class_id, *placement.to_input(b.x0, b.y0, b.x1, b.y1)) for b in boxes]
        targets.append(np.asarray(rows, dtype=np.float32).reshape(-1, 5))
    return images, targets


def box_giou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of paired boxes given as (x0, y0, x1, y1)."""
    inter_w = (torch.min(a[:, 2], b[:, 2]) - torch.max(a[:, 0], b[:, 0])).clamp(min=0)
    inter_h = (torch.min(a[:, 3], b[:, 3]) - torch.max(a[:, 1], b[:, 1])).clamp(min=0)
    inter = inter_w * inter_h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    hull = (torch.max(a[:, 2], b[:, 2]) - torch.min(a[:, 0], b[:, 0])) * \
           (torch.max(a[:, 3], b[:, 3]) - torch.min(a[:, 1], b[:, 1])) + 1e-7
    return iou, iou - (hull - union) / hull


def assign(targets: list[np.ndarray], stride: int, cells: int, min_side: float, max_side: float
           ) -> tuple[list[int], list[int], list[np.ndarray]]:
    """Positive cells for one scale: the centre cell and its two nearest neighbours (YOLOv5 style)."""
    batch_idx, cell_idx, boxes = [], [], []
    for b, rows in enumerate(targets):
        for row in rows:
            side = max(row[3] - row[1], row[4] - row[2])
            if not (min_side <= side <= max_side):
                continue
            cx, cy = (row[1] + row[3]) / 2 / stride, (row[2] + row[4]) / 2 / stride
            gx, gy = int(cx), int(cy)
            nx = gx - 1 if cx - gx < 0.5 else gx + 1
            ny = gy - 1 if cy - gy < 0.5 else gy + 1
            for x, y in ((gx, gy), (nx, gy), (gx, ny)):
                if 0 <= x < cells and 0 <= y < cells:
                    batch_idx.append(b)
                    cell_idx.append(y * cells + x)
                    boxes.append(row)
    return batch_idx, cell_idx, boxes


def matched_boxes(model_head: torch.nn.Module, raw: torch.Tensor, b_idx: list[int], c_idx: list[int],
                  rows: list[np.ndarray]) -> tuple[torch.Tensor, ...]:
    """The positive cells' batch and cell indices, their objects, and the IoU and GIoU of each
    cell's decoded box with its object."""
    b = torch.tensor(b_idx)
    c = torch.tensor(c_idx)
    gt = torch.tensor(np.stack(rows))
    decoded = model_head.decode(raw[b, c], grid=model_head.grid[0, c])
    pred_xyxy = torch.cat((decoded[:, 0:2] - decoded[:, 2:4] / 2, decoded[:, 0:2] + decoded[:, 2:4] / 2), dim=1)
    iou, giou = box_giou(pred_xyxy, gt[:, 1:5])
    return b, c, gt, iou, giou


def loss_for_scale(model_head: torch.nn.Module, raw: torch.Tensor, targets: list[np.ndarray], stride: int,
                   side_range: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cells = int(round(raw.shape[1] ** 0.5))
    b_idx, c_idx, rows = assign(targets, stride, cells, *side_range)
    obj_target = torch.zeros(raw.shape[:2])
    zero = raw.sum() * 0
    if not rows:
        return zero, zero, F.binary_cross_entropy_with_logits(raw[..., 4], obj_target)
    b, c, gt, iou, giou = matched_boxes(model_head, raw, b_idx, c_idx, rows)
    box_loss = (1.0 - giou).mean()
    obj_target[b, c] = iou.detach().clamp(min=0).float()
    obj_loss = F.binary_cross_entropy_with_logits(raw[..., 4], obj_target)
    cls_target = F.one_hot(gt[:, 0].long(), raw.shape[-1] - 5).float()
    cls_loss = F.binary_cross_entropy_with_logits(raw[b, c, 5:], cls_target)
    return box_loss, cls_loss, obj_loss


def loss_for_scale_v8(model_head: torch.nn.Module, raw: torch.Tensor, targets: list[np.ndarray], stride: int,
                      side_range: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """No objectness: every cell's class scores are trained, towards the IoU of the cell's box with
    its object for the object's class at positive cells and towards 0 everywhere else."""
    cells = int(round(raw.shape[1] ** 0.5))
    b_idx, c_idx, rows = assign(targets, stride, cells, *side_range)
    cls_target = torch.zeros(raw.shape[0], raw.shape[1], raw.shape[2] - 4)
    zero = raw.sum() * 0
    if not rows:
        return zero, F.binary_cross_entropy_with_logits(raw[..., 4:], cls_target), zero
    b, c, gt, iou, giou = matched_boxes(model_head, raw, b_idx, c_idx, rows)
    cls_target[b, c, gt[:, 0].long()] = iou.detach().clamp(min=0).float()
    cls_loss = F.binary_cross_entropy_with_logits(raw[..., 4:], cls_target, reduction="sum") / max(len(rows), 1)
    return (1.0 - giou).mean(), cls_loss, zero


def train(model: TinyYolo, images: np.ndarray, targets: list[np.ndarray], epochs: int, batch: int,
          head: str = "v5") -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = epochs * (len(images) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(0)
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(images))
        total, started = 0.0, time.time()
        for start in range(0, len(order) - batch + 1, batch):
            picked = order[start:start + batch]
            x = torch.from_numpy(images[picked].astype(np.float32))
            t = [targets[i].copy() for i in picked]
            flip = rng.random(batch) < 0.5
            x[flip] = x[flip].flip(-1)
            for k in np.nonzero(flip)[0]:
                t[k][:, [1, 3]] = SPEC.width - t[k][:, [3, 1]]
            raw_small, raw_large = model.raw(x)
            scale_loss = loss_for_scale_v8 if head == "v8" else loss_for_scale
            box_s, cls_s, obj_s = scale_loss(model.head_small, raw_small, t, 8, (0.0, 28.0))
            box_l, cls_l, obj_l = scale_loss(model.head_large, raw_large, t, 16, (20.0, 1e9))
            loss = 5.0 * (box_s + box_l) + 1.0 * (cls_s + cls_l) + 4.0 * obj_s + 1.0 * obj_l
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        print(f"epoch {epoch + 1}/{epochs} loss {total / (len(order) // batch):.4f} ({time.time() - started:.0f}s)",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--head", choices=("v5", "v8"), default="v5")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    images, targets = make_training_set(args.images)
    model = build_model() if args.head == "v5" else build_yolov8()
    train(model, images, targets, args.epochs, batch=32, head=args.head)
    model.eval()
    out = args.out or OUT.with_name("tiny_yolo.pt" if args.head == "v5" else "tiny_yolov8.pt")
    torch.save(model.state_dict(), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
