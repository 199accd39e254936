from __future__ import annotations

import math

import numpy as np
import pytest

from modelc_build.accuracy import Evaluation, OutputAccumulator, OutputMetrics, TaskMetric, apply_gates
from modelc_build.data import GroundTruthBox
from modelc_build.recipe_types import Gate, Task
from modelc_build.tasks import Detection, DetectionScorer, average_precision, decode_detections, iou_matrix, non_max_suppression


def test_output_metrics_by_hand() -> None:
    acc = OutputAccumulator()
    reference = np.array([3.0, 4.0])
    output = np.array([3.0, 3.0])
    acc.update(reference, output)
    m = acc.result("y")
    assert m.max_abs_error == 1.0
    assert m.mean_abs_error == 0.5
    assert m.cosine == pytest.approx(21.0 / (5.0 * math.sqrt(18.0)))
    assert m.snr_db == pytest.approx(10 * math.log10(25.0 / 1.0))


def test_output_metrics_accumulate_across_batches() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=100), rng.normal(size=100)
    whole, split = OutputAccumulator(), OutputAccumulator()
    whole.update(a, b)
    split.update(a[:30], b[:30])
    split.update(a[30:], b[30:])
    w, s = whole.result("y"), split.result("y")
    assert (w.max_abs_error, w.mean_abs_error) == pytest.approx((s.max_abs_error, s.mean_abs_error))
    assert (w.cosine, w.snr_db) == pytest.approx((s.cosine, s.snr_db))


def test_identical_outputs_have_infinite_snr() -> None:
    acc = OutputAccumulator()
    acc.update(np.ones(4), np.ones(4))
    m = acc.result("y")
    assert m.snr_db is None and m.cosine == 1.0 and m.max_abs_error == 0.0


def test_gates_pass_and_fail_with_observed_values() -> None:
    evaluation = Evaluation([OutputMetrics("y", 0.02, 0.001, 0.9995, 30.0)], TaskMetric("top1_accuracy", 90.0, 91.0), 10)
    checks = apply_gates(evaluation, Gate(min_cosine=0.999, max_abs_error=0.01, min_snr_db=25, max_metric_drop=0.5, min_metric=80))
    by_name = {c.gate: c for c in checks}
    assert by_name["min_cosine"].passed
    assert not by_name["max_abs_error"].passed and by_name["max_abs_error"].observed == 0.02
    assert by_name["min_snr_db"].passed
    assert not by_name["max_metric_drop"].passed and by_name["max_metric_drop"].observed == pytest.approx(1.0)
    assert by_name["min_metric"].passed
    assert by_name["max_abs_error"].describe() == "max_abs_error on output 'y': 0.02 vs threshold 0.01 (MISSED by 0.01)"


def test_iou_by_hand() -> None:
    a = np.array([[0, 0, 2, 2]], dtype=float)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], dtype=float)
    assert iou_matrix(a, b)[0] == pytest.approx([1 / 7, 1.0, 0.0])


def test_nms_keeps_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=float)
    scores = np.array([0.5, 0.9, 0.8])
    assert non_max_suppression(boxes, scores, 0.5) == [1, 2]


def test_average_precision_of_a_known_curve() -> None:
    # detections ranked: hit, miss, hit with 2 positives -> precision envelope 1.0 up to r=0.5, 2/3 up to r=1.0
    assert average_precision(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_detection_scorer_map_by_hand() -> None:
    task = Task(type="detection", classes=("a", "b"), match_iou=0.5)
    scorer = DetectionScorer(task, 2)
    truth = [GroundTruthBox(0, 0, 0, 10, 10), GroundTruthBox(0, 20, 20, 30, 30), GroundTruthBox(1, 40, 40, 50, 50)]
    detections = [Detection(0, 0.9, (0, 0, 10, 10)), Detection(0, 0.8, (60, 60, 70, 70)),
                  Detection(0, 0.7, (20, 20, 30, 31)), Detection(1, 0.6, (40, 40, 50, 50))]
    scorer.add(detections, truth)
    # class a: AP = 0.5 * 1 + 0.5 * 2/3; class b: AP = 1
    assert scorer.mean_ap() == pytest.approx(((0.5 + 0.5 * 2 / 3) + 1.0) / 2)


def test_duplicate_detections_count_as_false_positives() -> None:
    task = Task(type="detection", classes=("a",))
    scorer = DetectionScorer(task, 1)
    scorer.add([Detection(0, 0.9, (0, 0, 10, 10)), Detection(0, 0.8, (0, 0, 10, 10))], [GroundTruthBox(0, 0, 0, 10, 10)])
    assert scorer.mean_ap() == pytest.approx(1.0)  # the duplicate ranks after full recall
    scorer2 = DetectionScorer(task, 1)
    scorer2.add([Detection(0, 0.9, (50, 50, 60, 60)), Detection(0, 0.8, (0, 0, 10, 10))], [GroundTruthBox(0, 0, 0, 10, 10)])
    assert scorer2.mean_ap() == pytest.approx(0.5)


def test_decode_detections_applies_scores_threshold_and_nms() -> None:
    task = Task(type="detection", classes=("a", "b"), confidence_threshold=0.1, nms_iou=0.5)
    rows = np.array([
        [5, 5, 10, 10, 0.9, 0.9, 0.1],   # class a, score 0.81
        [5, 5, 10, 10, 0.8, 0.9, 0.1],   # suppressed duplicate
        [50, 50, 10, 10, 0.5, 0.1, 0.8],  # class b, score 0.4
        [80, 80, 10, 10, 0.1, 0.5, 0.5],  # below threshold (0.05)
    ], dtype=np.float32)
    found = decode_detections(rows, task)
    assert [(d.class_id, round(d.score, 2)) for d in found] == [(0, 0.81), (1, 0.4)]
    assert found[0].box == pytest.approx((0, 0, 10, 10))


def test_outputs_per_token_are_measured_where_the_attention_mask_is_one() -> None:
    """Padded positions carry no meaning: an artifact that differs only there agrees fully."""
    from modelc_build.accuracy import score
    from modelc_build.data import Batch

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((2, 5, 4)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=np.int64)
    artifact = reference.copy()
    artifact[0, 3:] = 100.0  # garbage where the first sentence is padding
    batch = Batch({"input_ids": np.ones((2, 5), np.int64), "attention_mask": mask}, ["a", "b"])
    task = Task()
    masked = score([(batch, {"hidden": reference}, {"x": {"hidden": artifact}})], ("x",), ("hidden",), task,
                   mask="attention_mask")["x"]
    unmasked = score([(batch, {"hidden": reference}, {"x": {"hidden": artifact}})], ("x",), ("hidden",), task)["x"]
    assert masked.outputs[0].cosine == pytest.approx(1.0) and masked.outputs[0].max_abs_error == 0.0
    assert unmasked.outputs[0].cosine < 0.5


def test_an_output_is_measured_per_part_of_like_magnitude() -> None:
    """Box coordinates in pixels and class probabilities in one [batch, 4 + classes, boxes] output:
    scores that collapsed to 0 fail their part while the whole tensor's cosine stays near 1."""
    from modelc_build.accuracy import score
    from modelc_build.data import Batch

    rng = np.random.default_rng(1)
    reference = np.concatenate([rng.uniform(0, 640, (3, 4, 50)), rng.uniform(0, 1, (3, 2, 50))], axis=1).astype(np.float32)
    collapsed = reference.copy()
    collapsed[:, 4:] = 0.0
    batch = Batch({"images": np.zeros((3, 1), np.float32)}, ["a", "b", "c"])
    measured = score([(batch, {"out": reference}, {"x": {"out": collapsed}})], ("x",), ("out",), Task())["x"]
    cosines = {m.output: m.cosine for m in measured.outputs}
    assert cosines["out"] > 0.999
    assert cosines["out:axis 1 channels 0-3"] == pytest.approx(1.0) and cosines["out:axis 1 channels 4-5"] == 0.0
    vector = score([(batch, {"out": reference[:, :, 0]}, {"x": {"out": collapsed[:, :, 0]}})], ("x",), ("out",), Task())["x"]
    assert [m.output for m in vector.outputs] == ["out"]  # a vector per sample has no parts
