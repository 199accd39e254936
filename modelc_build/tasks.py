"""Task metrics computed from a model's outputs: top-1 for classifiers, mAP@0.5 for detectors.

Detector outputs, per image, in one of the layouts people ship (`task.layout`):
- yolov5 `[boxes, 5 + classes]`: centre x, centre y, width, height (input pixels), objectness,
  class probabilities; a score is objectness x class probability;
- yolov8 `[4 + classes, boxes]` (Ultralytics v8/v11): centre x, centre y, width, height, class
  scores, no objectness;
- boxes `[boxes, 6]`: x1, y1, x2, y2, score, class id, already after NMS;
- separate: two outputs, boxes `[boxes, 4]` (x1, y1, x2, y2) and class scores `[boxes, classes]`,
  read here side by side as one `[boxes, 4 + classes]` array.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modelc_build.data import GroundTruthBox
from modelc_build.recipe_types import Task


@dataclass
class Detection:
    class_id: int
    score: float
    box: tuple[float, float, float, float]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes given as [N, 4] and [M, 4] arrays of (x0, y0, x1, y1)."""
    inter_w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    inter_h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = inter_w * inter_h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS; returns kept indices in descending score order."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        if order.size == 1:
            break
        overlaps = iou_matrix(boxes[best:best + 1], boxes[order[1:]])[0]
        order = order[1:][overlaps <= iou_threshold]
    return keep


LAYOUT_COLUMNS = {"yolov5": 5, "yolov8": 4, "boxes": 6, "separate": 4}  # values per box besides the class scores


def detector_output(outputs: dict[str, np.ndarray], task: Task, output: str) -> np.ndarray:
    """The batch's detector output as one array in the task's layout; the separate layout's boxes
    and scores side by side, `[batch, boxes, 4 + classes]`."""
    if task.layout != "separate":
        return outputs[output]
    assert task.boxes_output is not None and task.scores_output is not None
    boxes, scores = outputs[task.boxes_output], outputs[task.scores_output]
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or boxes.shape[:2] != scores.shape[:2]:
        from modelc_build.errors import InputError

        raise InputError(f"task.layout separate reads '{task.boxes_output}' as [batch, boxes, 4] and "
                         f"'{task.scores_output}' as [batch, boxes, classes] with the same boxes; they are "
                         f"{list(boxes.shape)} and {list(scores.shape)}: fix task.boxes_output / task.scores_output")
    return np.concatenate((boxes, scores), axis=2)


def layout_hint(name: str, shape: tuple[int, ...] | list[int]) -> str | None:
    """For a model declared generic: an output shaped like a known detector layout, said so with
    the task that measures it properly (boxes and scores apart, mAP), or None."""
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return None
    _, first, second = shape
    if 5 <= first < second and first - 4 <= 1000:
        layout, classes, what = "yolov8", first - 4, f"[batch, 4 + {first - 4} class scores, {second} boxes]"
    elif 6 <= second < first and second - 5 <= 1000:
        layout, classes, what = "yolov5", second - 5, f"[batch, {first} boxes, 4 + objectness + {second - 5} class scores]"
    else:
        return None
    return (f"output '{name}' {list(shape)} looks like a {'YOLOv8' if layout == 'yolov8' else 'YOLOv5'}-layout detector ({what}): "
            f"declare task: {{type: detection, layout: {layout}, classes: [...{classes} names]}} to measure its boxes and "
            "scores apart and score mAP against the reference's detections")


def layout_problem(shape: tuple[int, ...], task: Task) -> str | None:
    """Why an output of this shape (batch first) cannot be read in the task's layout, or None."""
    if len(shape) != 3:
        return f"a {task.layout} detector output has 3 axes [batch, …], this one has shape {list(shape)}"
    classes = len(task.classes)
    if task.layout == "boxes":
        return None if shape[2] == 6 else f"the boxes layout is [batch, boxes, 6]; the output is {list(shape)}"
    values = shape[1] if task.layout == "yolov8" else shape[2]
    extra = LAYOUT_COLUMNS[task.layout]
    where = "axis 1" if task.layout == "yolov8" else "the last axis"
    if values <= extra or (classes and values != extra + classes):
        wanted = f"{extra} + {classes} classes = {extra + classes}" if classes else f"more than {extra}"
        other = {"yolov5": "yolov8", "yolov8": "yolov5"}[task.layout]
        fits = layout_problem(shape, Task(layout=other, classes=task.classes)) is None
        return (f"the {task.layout} layout has {where} of {wanted} values; the output is {list(shape)}: "
                + (f"it fits layout: {other} ([batch, 4 + classes, boxes] is YOLOv8's; [batch, boxes, 5 + classes] "
                   "YOLOv5's)" if fits else "fix task.layout or task.classes"))
    return None


def _boxes_and_scores(rows: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (x1, y1, x2, y2), class ids and scores of every row, whatever the layout."""
    if layout == "boxes":
        return rows[:, :4], rows[:, 5].astype(np.int64), rows[:, 4]
    if layout == "yolov8":
        rows = rows.T
    class_scores = rows[:, 4:5] * rows[:, 5:] if layout == "yolov5" else rows[:, 4:]
    class_ids = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(rows)), class_ids]
    if layout == "separate":  # already corners
        return rows[:, :4], class_ids, scores
    boxes = np.stack((rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                      rows[:, 0] + rows[:, 2] / 2, rows[:, 1] + rows[:, 3] / 2), axis=1)
    return boxes, class_ids, scores


def score_slice(output: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """The box coordinates and the scores of a batch's output, apart: one cosine over a tensor that
    mixes pixels (up to hundreds) with probabilities (0-1) hears only the boxes."""
    if layout == "yolov8":
        return output[:, :4, :], output[:, 4:, :]
    if layout == "boxes":
        return output[..., :4], output[..., 4:5]
    return output[..., :4], output[..., 4:]


def decode_detections(output: np.ndarray, task: Task) -> list[Detection]:
    """One image's output -> detections after thresholding and per-class NMS (a no-op on boxes
    that are already after NMS)."""
    boxes, class_ids, scores = _boxes_and_scores(np.asarray(output, dtype=np.float32), task.layout)
    keep = scores >= task.confidence_threshold
    boxes, class_ids, scores = boxes[keep], class_ids[keep], scores[keep]
    detections = []
    for class_id in np.unique(class_ids):
        members = np.nonzero(class_ids == class_id)[0]
        for index in non_max_suppression(boxes[members], scores[members], task.nms_iou):
            row = members[index]
            x0, y0, x1, y1 = (float(v) for v in boxes[row])
            detections.append(Detection(int(class_id), float(scores[row]), (x0, y0, x1, y1)))
    return detections


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """Area under the precision envelope, all points (the VOC 2010+ / COCO-style integral)."""
    r = np.concatenate(([0.0], recall, [1.0]))
    p = np.concatenate(([1.0], precision, [0.0]))
    p = np.flip(np.maximum.accumulate(np.flip(p)))
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


@dataclass
class DetectionScorer:
    """Accumulates detections and ground truth image by image; `mean_ap()` at the end."""

    task: Task
    num_classes: int
    _scores: dict[int, list[tuple[float, bool]]] = field(default_factory=dict)
    _positives: dict[int, int] = field(default_factory=dict)

    def add(self, detections: list[Detection], truth: list[GroundTruthBox]) -> None:
        for box in truth:
            self._positives[box.class_id] = self._positives.get(box.class_id, 0) + 1
        for class_id in {d.class_id for d in detections} | {t.class_id for t in truth}:
            preds = sorted((d for d in detections if d.class_id == class_id), key=lambda d: -d.score)
            gts = np.asarray([[t.x0, t.y0, t.x1, t.y1] for t in truth if t.class_id == class_id]).reshape(-1, 4)
            taken = np.zeros(len(gts), dtype=bool)
            ious = iou_matrix(np.asarray([d.box for d in preds]).reshape(-1, 4), gts) if len(gts) else None
            for i, det in enumerate(preds):
                matched = False
                if ious is not None:
                    candidates = np.where(taken, -1.0, ious[i])
                    best = int(candidates.argmax())
                    if candidates[best] >= self.task.match_iou:
                        taken[best] = True
                        matched = True
                self._scores.setdefault(class_id, []).append((det.score, matched))

    def positives(self) -> dict[int, int]:
        return dict(self._positives)

    def mean_ap(self) -> float:
        """mAP in [0, 1] over the classes that have ground truth."""
        aps = []
        for class_id, positives in sorted(self._positives.items()):
            entries = sorted(self._scores.get(class_id, []), key=lambda e: -e[0])
            hits = np.asarray([m for _, m in entries], dtype=np.float64)
            if not len(hits):
                aps.append(0.0)
                continue
            tp = np.cumsum(hits)
            fp = np.cumsum(1.0 - hits)
            aps.append(average_precision(tp / positives, tp / np.maximum(tp + fp, 1e-9)))
        return float(np.mean(aps)) if aps else 0.0


def detections_as_truth(detections: list[Detection], min_score: float) -> list[GroundTruthBox]:
    """The reference's confident detections as ground truth, for label-free agreement."""
    return [GroundTruthBox(d.class_id, *d.box) for d in detections if d.score >= min_score]
