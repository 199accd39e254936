"""Accuracy check: run the reference and every artifact on the same inputs, compare, apply gates.

Numeric metrics per output (max/mean absolute error, cosine similarity, SNR in dB) are
accumulated batch by batch, so evaluation sets of any size stream through. Task metrics (top-1,
mAP@0.5) are computed for the reference and each artifact against the shipped labels.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from modelc_build.recipe_types import Gate, Task, TensorSpec

if TYPE_CHECKING:  # numpy and the runners load only when something is measured
    import numpy as np

    from modelc_build.backends import Runner
    from modelc_build.data import Batch


@dataclass(frozen=True)
class OutputMetrics:
    output: str
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    snr_db: float | None  # None: the outputs are identical (infinite SNR)


@dataclass
class OutputAccumulator:
    """Running sums for one output; float64 so long streams do not lose precision."""

    count: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    dot: float = 0.0
    ref_sq: float = 0.0
    out_sq: float = 0.0
    err_sq: float = 0.0

    def update(self, reference: np.ndarray, output: np.ndarray, keep: np.ndarray | None = None) -> None:
        """`keep`: a boolean mask over the leading axes (a token model's attention mask): only
        those positions count (padding carries no meaning, and short sentences score against it)."""
        import numpy as np

        if keep is not None:
            reference, output = reference[keep], output[keep]
        ref = reference.astype(np.float64).ravel()
        out = output.astype(np.float64).ravel()
        diff = np.abs(ref - out)
        self.count += ref.size
        self.max_abs = max(self.max_abs, float(diff.max(initial=0.0)))
        self.sum_abs += float(diff.sum())
        self.dot += float(ref @ out)
        self.ref_sq += float(ref @ ref)
        self.out_sq += float(out @ out)
        self.err_sq += float(diff @ diff)

    def result(self, name: str) -> OutputMetrics:
        norms = math.sqrt(self.ref_sq) * math.sqrt(self.out_sq)
        cosine = self.dot / norms if norms > 0 else (1.0 if self.ref_sq == self.out_sq else 0.0)
        if self.err_sq == 0:
            snr = None
        elif self.ref_sq == 0:
            snr = -math.inf
        else:
            snr = 10.0 * math.log10(self.ref_sq / self.err_sq)
        return OutputMetrics(name, self.max_abs, self.sum_abs / max(self.count, 1), min(cosine, 1.0), snr)


PART_GAP = 100.0  # channels whose reference magnitudes differ this much are measured as separate parts
MAX_PART_CHANNELS = 4096


class ChannelAccumulator:
    """Per-channel running sums of one output, so that it can be measured per part afterwards: the
    channels grouped by their reference magnitude (box coordinates in pixels apart from class
    probabilities), each group a part with its own cosine. A whole-tensor cosine hears only the
    largest values: a detector whose class scores all collapsed to 0 kept cosine 0.9996."""

    def __init__(self, axis: int) -> None:
        self.axis = axis
        self.sums: dict[str, Any] = {}

    def update(self, reference: np.ndarray, output: np.ndarray, keep: np.ndarray | None = None) -> None:
        import numpy as np

        ref = np.moveaxis(reference.astype(np.float64), self.axis, -1)
        out = np.moveaxis(output.astype(np.float64), self.axis, -1)
        if keep is not None:
            ref, out = ref[keep], out[keep]
        ref, out = ref.reshape(-1, ref.shape[-1]), out.reshape(-1, out.shape[-1])
        diff = np.abs(ref - out)
        batch = {"count": np.full(ref.shape[1], ref.shape[0], np.float64), "sum_abs": diff.sum(axis=0),
                 "dot": (ref * out).sum(axis=0), "ref_sq": (ref * ref).sum(axis=0), "out_sq": (out * out).sum(axis=0),
                 "err_sq": (diff * diff).sum(axis=0)}
        for key, value in batch.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.sums["max_abs"] = np.maximum(self.sums.get("max_abs", 0.0), diff.max(axis=0, initial=0.0))

    def parts(self, name: str) -> list[OutputMetrics]:
        """One measurement per group of channels of like magnitude; [] when there is one group."""
        import numpy as np

        if not self.sums:
            return []
        rms = np.sqrt(self.sums["ref_sq"] / np.maximum(self.sums["count"], 1))
        live = np.nonzero(rms > 1e-12)[0]  # an all-zero reference channel has no scale to be judged at
        if len(live) < 2:
            return []
        order = live[np.argsort(rms[live], kind="stable")]
        groups, current = [], [order[0]]
        for previous, channel in zip(order, order[1:]):
            if rms[channel] > PART_GAP * rms[previous]:
                groups.append(current)
                current = []
            current.append(channel)
        groups.append(current)
        if len(groups) < 2:
            return []
        return [self._metrics(f"{name}:{_channel_words(sorted(int(c) for c in group), self.axis)}", np.array(group))
                for group in sorted(groups, key=min)]

    def _metrics(self, name: str, channels: np.ndarray) -> OutputMetrics:
        total = OutputAccumulator()
        total.count = int(self.sums["count"][channels].sum())
        total.max_abs = float(self.sums["max_abs"][channels].max())
        for key in ("sum_abs", "dot", "ref_sq", "out_sq", "err_sq"):
            setattr(total, key, float(self.sums[key][channels].sum()))
        return total.result(name)


def _channel_words(channels: list[int], axis: int) -> str:
    """'channels 4-83 of axis 1' for a contiguous run, else the first few."""
    if channels == list(range(channels[0], channels[-1] + 1)):
        span = f"{channels[0]}" if len(channels) == 1 else f"{channels[0]}-{channels[-1]}"
        return f"axis {axis} channels {span}"
    shown = ",".join(str(c) for c in channels[:6]) + ("…" if len(channels) > 6 else "")
    return f"axis {axis} channels {shown}"


def channel_axis(shape: tuple[int, ...], sequence: int | None = None) -> int | None:
    """The axis an output's parts lie along: none for a vector per sample ([batch, values]); the
    last axis of a token model's [batch, tokens, …] output; else the shortest non-batch axis
    ([batch, 4 + classes, boxes] -> 1; [batch, boxes, 5 + classes] -> 2; NCHW -> 1)."""
    if len(shape) < 3:
        return None
    if sequence is not None and shape[1] == sequence:
        return len(shape) - 1
    sizes = [(size, axis) for axis, size in enumerate(shape) if axis > 0]
    size, axis = min(sizes)
    return axis if 2 <= size <= MAX_PART_CHANNELS else None


CONFIDENT = 0.5  # a reference prediction this sure (softmax probability) counts as confident
REFERENCE_DETECTION_SCORE = 0.25  # the reference's detections at least this sure are the label-free truth


@dataclass(frozen=True)
class TaskMetric:
    """The task's headline metric (with labels: top-1 accuracy or mAP@0.5; without: agreement with
    the reference, which scores 100 % against itself) and the label-free agreement figures."""

    name: str  # top1_accuracy | map50 | top1_agreement | reference_map50
    value: float  # percent
    reference: float  # the reference model's value, percent
    agreement: float | None = None  # top-1 agreement with the reference, percent (classifiers)
    label_free: dict[str, float] = field(default_factory=dict)  # top5_containment, confident_agreement, ...
    higher_is_better: bool = True  # custom metrics may be errors (lower is better)

    @property
    def drop(self) -> float:
        return self.reference - self.value if self.higher_is_better else self.value - self.reference


def _probabilities(values: np.ndarray) -> np.ndarray:
    """Class probabilities: the output itself when it already is one, else its softmax."""
    import numpy as np

    rows = values.reshape(len(values), -1).astype(np.float64)
    if rows.min() >= 0 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
        return rows
    shifted = np.exp(rows - rows.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class _TaskScorer:
    """Scores one model's outputs against labels (when the data has them) and against the
    reference's own predictions (always)."""

    def __init__(self, task: Task, output: str) -> None:
        from modelc_build.tasks import DetectionScorer

        self.task = task
        self.output = output
        self.correct = self.agree = self.top5 = self.confident = self.confident_agree = self.total = 0
        self.labelled = False
        self.detections = DetectionScorer(task, len(task.classes))
        self.versus_reference = DetectionScorer(task, len(task.classes))
        self.custom = CustomMetric(task) if task.type == "custom" else None
        self.sample_cosines: list[float] = []  # embedding: one per sample

    def update(self, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], batch: Batch) -> None:
        import numpy as np

        from modelc_build.tasks import decode_detections, detections_as_truth, detector_output

        values = detector_output(outputs, self.task, self.output) if self.task.type == "detection" else outputs[self.output]
        self.labelled = self.labelled or bool(batch.labels)
        if self.task.type == "classification":
            rows = values.reshape(len(values), -1)
            predicted = rows.argmax(axis=1)
            expected_probabilities = _probabilities(reference[self.output])
            expected = expected_probabilities.argmax(axis=1)
            if batch.labels:
                self.correct += int((predicted == np.asarray(batch.labels)).sum())
            self.agree += int((predicted == expected).sum())
            best5 = np.argsort(-rows, axis=1, kind="stable")[:, :5]
            self.top5 += int((best5 == expected[:, None]).any(axis=1).sum())
            sure = expected_probabilities.max(axis=1) >= CONFIDENT
            self.confident += int(sure.sum())
            self.confident_agree += int((predicted[sure] == expected[sure]).sum())
            self.total += len(values)
        elif self.custom is not None:
            self.custom.update(outputs, reference, batch)
        elif self.task.type == "embedding":
            got = values.reshape(len(values), -1).astype(np.float64)
            want = reference[self.output].reshape(len(values), -1).astype(np.float64)
            norms = np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)
            cosines = np.where(norms > 0, (got * want).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
            self.sample_cosines += [float(c) for c in np.minimum(cosines, 1.0)]
        elif self.task.type == "detection":
            expected = detector_output(reference, self.task, self.output)
            for index, rows in enumerate(values):
                found = decode_detections(rows, self.task)
                if batch.labels:
                    self.detections.add(found, batch.labels[index])
                truth = detections_as_truth(decode_detections(expected[index], self.task), REFERENCE_DETECTION_SCORE)
                self.versus_reference.add(found, truth)

    def value(self) -> float:
        if self.task.type == "classification":
            return 100.0 * self.correct / max(self.total, 1)
        return 100.0 * self.detections.mean_ap()

    def agreement(self) -> float | None:
        return 100.0 * self.agree / max(self.total, 1) if self.task.type == "classification" else None

    def label_free(self) -> dict[str, float]:
        if self.task.type == "classification":
            return {"top1_agreement": 100.0 * self.agree / max(self.total, 1),
                    "top5_containment": 100.0 * self.top5 / max(self.total, 1),
                    "confident_agreement": 100.0 * self.confident_agree / max(self.confident, 1),
                    "confident_samples": float(self.confident)}
        return {"reference_map50": 100.0 * self.versus_reference.mean_ap(),
                "reference_objects": float(sum(self.versus_reference.positives().values()))}

    def metric(self, reference: _TaskScorer) -> TaskMetric:
        if self.task.type == "embedding":  # agreement with the reference, sample by sample
            mean = sum(self.sample_cosines) / max(len(self.sample_cosines), 1)
            return TaskMetric("mean_sample_cosine", 100.0 * mean, 100.0, None,
                              {"min_sample_cosine": min(self.sample_cosines, default=1.0), "mean_sample_cosine": mean})
        if self.custom is not None:
            assert reference.custom is not None
            name, value = self.custom.headline()
            return TaskMetric(name, value, reference.custom.headline()[1], None, self.custom.others(),
                              self.task.higher_is_better)
        free = self.label_free()
        if self.labelled:
            name = "top1_accuracy" if self.task.type == "classification" else "map50"
            return TaskMetric(name, self.value(), reference.value(), self.agreement(), free)
        if self.task.type == "classification":
            return TaskMetric("top1_agreement", free["top1_agreement"], 100.0, self.agreement(), free)
        return TaskMetric("reference_map50", free["reference_map50"], 100.0, None, free)


class CustomMetric:
    """A team's own metric, `task.metric: FILE.py:FUNCTION`, called once per batch as
    `function(outputs, reference, labels)`: the model's outputs and the reference's (dicts of arrays
    by output name) and the batch's labels (a list, empty without labels). It returns a number or a
    dict of numbers; each is averaged over the batches weighted by their sample counts. The first
    (or only) value is the headline the task-metric gates judge."""

    def __init__(self, task: Task) -> None:
        from modelc_build.sources import resolve_factory

        assert task.metric is not None
        self.where = task.metric
        self.function = resolve_factory(task.metric, task.base_dir, key="task.metric")
        self.sums: dict[str, float] = {}
        self.samples = 0

    def update(self, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], batch: Batch) -> None:
        from modelc_build.errors import InputError

        try:
            value = self.function(outputs, reference, list(batch.labels))
        except Exception as exc:  # the team's code: its failure is an input problem, named
            raise InputError(f"{self.where}: the metric function failed: {type(exc).__name__}: {exc}") from exc
        values = value if isinstance(value, dict) else {self.where.rsplit(":", 1)[1]: value}
        for name, number in values.items():
            if not isinstance(number, (int, float)) or isinstance(number, bool) or not math.isfinite(float(number)):
                raise InputError(f"{self.where}: returned {name}={number!r}; return a finite number or a dict of them")
            self.sums[str(name)] = self.sums.get(str(name), 0.0) + float(number) * len(batch)
        self.samples += len(batch)

    def headline(self) -> tuple[str, float]:
        name = next(iter(self.sums))
        return name, self.sums[name] / max(self.samples, 1)

    def others(self) -> dict[str, float]:
        return {name: total / max(self.samples, 1) for name, total in list(self.sums.items())[1:]}


@dataclass(frozen=True)
class GateCheck:
    gate: str  # e.g. min_cosine
    threshold: float
    observed: float | None
    passed: bool
    output: str | None = None  # the output for per-output gates
    source: str = "recipe"  # recipe | default | relaxed (the recipe set a looser value than the default)
    default: float | None = None  # modelc's default threshold, where the recipe relaxed it

    @property
    def margin(self) -> float | None:
        """How far the observed value is inside (+) or outside (-) the threshold."""
        if self.observed is None:
            return None
        return self.observed - self.threshold if self.gate.startswith("min_") else self.threshold - self.observed

    def describe(self) -> str:
        where = f" on output '{self.output}'" if self.output else ""
        observed = "identical" if self.observed is None else f"{self.observed:.6g}"
        margin = self.margin
        verdict = "passed" if self.passed else (f"MISSED by {abs(margin):.4g}" if margin is not None else "MISSED")
        origin = ""
        if self.source == "default":
            origin = ", default gate"
        elif self.source == "relaxed" and self.default is not None:
            origin = f", relaxed by the recipe from the default {self.default:g}"
        return f"{self.gate}{where}: {observed} vs threshold {self.threshold:g} ({verdict}{origin})"


@dataclass
class Evaluation:
    """What the accuracy check saw for one artifact."""

    outputs: list[OutputMetrics]
    task: TaskMetric | None
    samples: int
    gates: list[GateCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.gates)


def evaluate(reference: Runner, artifacts: dict[str, Runner], batches: Iterator[Batch], inputs: tuple[TensorSpec, ...],
             outputs: tuple[str, ...], task: Task) -> dict[str, Evaluation]:
    """Stream the batches through the reference and every artifact at once."""
    from modelc_build.feeds import ModelCaller

    call_reference = ModelCaller(inputs, reference.infer)
    pairs = ((batch, call_reference(batch.inputs)) for batch in batches)
    return compare(pairs, artifacts, inputs, outputs, task)


def compare(batches: Iterable[tuple[Batch, dict[str, np.ndarray]]], artifacts: dict[str, Runner],
            inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...], task: Task, mask: str | None = None) -> dict[str, Evaluation]:
    """Each batch with the reference's outputs for it (computed now or read back from a cache)
    against every artifact's outputs."""
    from modelc_build.feeds import ModelCaller

    calls = {key: ModelCaller(inputs, runner.infer) for key, runner in artifacts.items()}  # one pass each
    produced = ((batch, expected, {key: call(batch.inputs) for key, call in calls.items()}) for batch, expected in batches)
    return score(produced, tuple(artifacts), outputs, task, mask=mask)


def score(produced: Iterable[tuple[Batch, dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]], keys: tuple[str, ...],
          outputs: tuple[str, ...], task: Task, whole_set: bool = True, mask: str | None = None) -> dict[str, Evaluation]:
    """Each batch, the reference's outputs for it and each model's (by key) outputs, already
    computed (e.g. under an emulated CPU). `whole_set`: the batches are the evaluation set, so a
    task metric the reference cannot score on is an error (a sample subset is not judged so).
    `mask`: a token model's attention-mask input; outputs per token count where it is 1. Outputs
    with channels are also measured per part (channels of like magnitude, ChannelAccumulator)."""
    task_output = task.output or outputs[0]
    # boxes and scores apart, unless the model already returns them apart
    slices = [f"{task_output}:boxes", f"{task_output}:scores"] if task.type == "detection" and task.layout != "separate" \
        else []
    accumulators = {key: {name: OutputAccumulator() for name in (*outputs, *slices)} for key in keys}
    by_channel: dict[str, dict[str, ChannelAccumulator]] = {key: {} for key in keys}
    use_task = task.type in ("classification", "detection", "embedding", "custom")
    reference_scorer = _TaskScorer(task, task_output)
    scorers = {key: _TaskScorer(task, task_output) for key in keys}
    samples = 0
    for batch, expected, results in produced:
        if task.type == "detection" and samples == 0:
            _check_layout(expected, task, task_output)
        samples += len(batch)
        if use_task:
            reference_scorer.update(expected, expected, batch)
        tokens = batch.inputs.get(mask) if mask else None
        for key in keys:
            got = results[key]
            for name in outputs:
                keep = _token_positions(tokens, expected[name])
                accumulators[key][name].update(expected[name], got[name], keep)
                if not (slices and name == task_output):  # a detector's layout already names its parts
                    axis = channel_axis(expected[name].shape, None if tokens is None else tokens.shape[1])
                    if axis is not None:
                        by_channel[key].setdefault(name, ChannelAccumulator(axis)).update(expected[name], got[name], keep)
            if slices:  # boxes and scores apart (see modelc_build.tasks.score_slice)
                from modelc_build.tasks import score_slice

                for name, want, have in zip(slices, score_slice(expected[task_output], task.layout),
                                            score_slice(got[task_output], task.layout)):
                    accumulators[key][name].update(want, have)
            if use_task:
                scorers[key].update(got, expected, batch)
    if use_task and whole_set:
        _check_metric_can_fail(reference_scorer, samples)
    results_by_key = {}
    for key in keys:
        metric = scorers[key].metric(reference_scorer) if use_task else None
        parts = [part for name in outputs if name in by_channel[key] for part in by_channel[key][name].parts(name)]
        results_by_key[key] = Evaluation([accumulators[key][n].result(n) for n in (*outputs, *slices)] + parts, metric, samples)
    return results_by_key


def _token_positions(mask: np.ndarray | None, output: np.ndarray) -> np.ndarray | None:
    """The attention mask as a selector for an output per token ([batch, tokens, …]), else None."""
    if mask is None or output.ndim < 2 or output.shape[:2] != mask.shape:
        return None
    return mask.astype(bool)


def output_agreement(first: list[dict[str, np.ndarray]], second: list[dict[str, np.ndarray]],
                     outputs: tuple[str, ...]) -> list[OutputMetrics]:
    """Per output, how closely two runs of one model agree (e.g. emulated against native)."""
    accumulators = {name: OutputAccumulator() for name in outputs}
    for a, b in zip(first, second):
        for name in outputs:
            accumulators[name].update(a[name], b[name])
    return [accumulators[name].result(name) for name in outputs]


def _check_metric_can_fail(reference: _TaskScorer, samples: int) -> None:
    """A task metric the reference itself cannot score on is no measurement: every artifact would
    match it (mAP 0 against mAP 0) and every gate would pass."""
    from modelc_build.errors import InputError

    task = reference.task
    if task.type == "detection" and not sum(reference.versus_reference.positives().values()):
        raise InputError(
            f"the reference model found no detection scoring >= {REFERENCE_DETECTION_SCORE} on the {samples} evaluation "
            f"images, so agreement with it cannot fail: check task.layout ({task.layout}), task.classes and "
            "data.preprocess (scale, mean, std, color) against how the model was trained")
    if task.type in ("classification", "detection") and reference.labelled and reference.value() == 0.0:
        name = "top-1 accuracy" if task.type == "classification" else "mAP@0.5"
        raise InputError(
            f"the reference model scores {name} 0 % on the labelled evaluation data, so the labelled metric cannot "
            "fail: check that task.classes is in the model's class order and that the labels match the images "
            "(labels, labels_path)")


def _check_layout(outputs: dict[str, np.ndarray], task: Task, name: str) -> None:
    from modelc_build.errors import InputError
    from modelc_build.tasks import detector_output, layout_problem

    problem = layout_problem(tuple(detector_output(outputs, task, name).shape), task)
    if problem:
        what = f"outputs '{task.boxes_output}' and '{task.scores_output}'" if task.layout == "separate" else f"output '{name}'"
        raise InputError(f"{what} do{'' if task.layout == 'separate' else 'es'} not fit task.layout {task.layout}: {problem}")


def task_metric(infer: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], batches: Iterable[Batch],
                inputs: tuple[TensorSpec, ...], task: Task, output: str) -> float:
    """The task metric (top-1 or mAP@0.5, percent) of one model over labelled batches: used by
    accuracy-controlled quantization, which scores candidate models while it searches."""
    from modelc_build.feeds import ModelCaller

    scorer = _TaskScorer(task, output)
    call = ModelCaller(inputs, infer)
    for batch in batches:
        got = call(batch.inputs)
        scorer.update(got, got, batch)
    return scorer.value()


class TaskDrop:
    """How far a candidate model's task metric falls below the float model's on the tuning data
    (validation), each scored against the float model's own outputs (and labels where the data has
    them): what mixed-precision search checks beside the cosine when the recipe gates the drop.
    The float model's outputs are computed once."""

    def __init__(self, batches: Callable[[], Iterable[Batch]], inputs: tuple[TensorSpec, ...], task: Task, output: str,
                 reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], limit: int = 64) -> None:
        from modelc_build.feeds import ModelCaller

        self.inputs, self.task, self.output = inputs, task, output
        self.batches: list[Batch] = []
        for batch in batches():
            self.batches.append(batch)
            if sum(len(b) for b in self.batches) >= limit:
                break
        call = ModelCaller(inputs, reference)
        self.expected = [call(batch.inputs) for batch in self.batches]
        self.reference = _TaskScorer(task, output)
        for batch, expected in zip(self.batches, self.expected):
            self.reference.update(expected, expected, batch)

    def __call__(self, infer: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]) -> float:
        from modelc_build.feeds import ModelCaller

        scorer = _TaskScorer(self.task, self.output)
        call = ModelCaller(self.inputs, infer)
        for batch, expected in zip(self.batches, self.expected):
            scorer.update(call(batch.inputs), expected, batch)
        return scorer.metric(self.reference).drop


def apply_gates(evaluation: Evaluation, gate: Gate, sources: dict[str, tuple[str, float | None]] | None = None) -> list[GateCheck]:
    """Every gate that applies to what was measured; `sources` says per gate key where its
    threshold came from (recipe | default | relaxed, and the default it relaxed)."""
    checks: list[GateCheck] = []

    def check(name: str, threshold: float, observed: float | None, passed: bool, output: str | None = None) -> None:
        source, default = (sources or {}).get(name, ("recipe", None))
        checks.append(GateCheck(name, threshold, observed, passed, output, source, default))

    for metrics in evaluation.outputs:
        if gate.min_cosine is not None:
            check("min_cosine", gate.min_cosine, metrics.cosine, metrics.cosine >= gate.min_cosine, metrics.output)
        if gate.max_abs_error is not None:
            check("max_abs_error", gate.max_abs_error, metrics.max_abs_error, metrics.max_abs_error <= gate.max_abs_error,
                  metrics.output)
        if gate.max_mean_abs_error is not None:
            check("max_mean_abs_error", gate.max_mean_abs_error, metrics.mean_abs_error,
                  metrics.mean_abs_error <= gate.max_mean_abs_error, metrics.output)
        if gate.min_snr_db is not None:
            passed = metrics.snr_db is None or metrics.snr_db >= gate.min_snr_db
            check("min_snr_db", gate.min_snr_db, metrics.snr_db, passed, metrics.output)
    task = evaluation.task
    if task is not None:
        if gate.max_metric_drop is not None:
            check("max_metric_drop", gate.max_metric_drop, task.drop, task.drop <= gate.max_metric_drop)
        if gate.min_metric is not None:  # for a lower-is-better metric: the highest value allowed
            passed = task.value >= gate.min_metric if task.higher_is_better else task.value <= gate.min_metric
            check("min_metric", gate.min_metric, task.value, passed)
        free = task.label_free
        if gate.min_top5_containment is not None and "top5_containment" in free:
            check("min_top5_containment", gate.min_top5_containment, free["top5_containment"],
                  free["top5_containment"] >= gate.min_top5_containment)
        if gate.min_reference_map50 is not None and "reference_map50" in free and free.get("reference_objects", 0) > 0:
            check("min_reference_map50", gate.min_reference_map50, free["reference_map50"],
                  free["reference_map50"] >= gate.min_reference_map50)
    return checks


def measure_latency(runner: Runner, feed: dict[str, np.ndarray], runs: int, warmup: int) -> dict[str, float] | None:
    """Wall time of one inference of `feed` in milliseconds: p10, p50 and p90 over `runs` runs
    after `warmup` runs."""
    import numpy as np

    if runs <= 0:
        return None
    for _ in range(warmup):
        runner.infer(feed)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runner.infer(feed)
        times.append((time.perf_counter() - started) * 1000.0)
    p10, p50, p90 = (float(v) for v in np.percentile(times, [10, 50, 90]))
    return {"p10": p10, "p50": p50, "p90": p90}


def evaluation_to_dict(evaluation: Evaluation) -> dict[str, object]:
    """The measured part of an evaluation (no gates), for the step cache."""
    task = evaluation.task
    return {
        "samples": evaluation.samples,
        "outputs": [vars(m) for m in evaluation.outputs],
        "task": None if task is None else {"name": task.name, "value": task.value, "reference": task.reference,
                                           "agreement": task.agreement, "label_free": task.label_free,
                                           "higher_is_better": task.higher_is_better},
    }


def evaluation_from_dict(data: dict[str, Any]) -> Evaluation:
    task = data["task"]
    return Evaluation([OutputMetrics(**m) for m in data["outputs"]], None if task is None else TaskMetric(**task),
                      int(data["samples"]))
