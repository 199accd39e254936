"""Mixed precision for onnxruntime INT8, where full INT8 misses: find the few layers that cost most
and keep them in float.

1. Full INT8 (the recipe's own float layers apart) is scored on the tuning data (the validation
   set; the evaluation set stays for the gates): the lowest cosine of any output against the float
   graph. If it holds `min_cosine`, nothing changes.
2. Else the op kinds onnxruntime quantizes poorly go back to float first: every node that is not a
   weighted layer (the element-wise Mul/Add/Div/Sqrt of a decomposed LayerNorm, Softmax, an
   attention mask's Add) — one trial; kept when it gains.
3. Then each quantized weighted layer is put back in float alone and scored: how much of the loss
   it carries (one quantize_static per layer, from the ranges calibrated once).
4. The worst 1, 2, 4, … layers (at most `max_float_layers`) go back to float together until the
   graph holds `min_cosine`.
5. One that holds the cosine on no budget goes to the gates as the best found (they judge it on
   the evaluation data). Whether the mixed graph is faster than FP32 is timed by the worth step
   (steps/worth.py), with nothing beside it: one that is not is refused in one line — INT8 is
   not worth it here.

Everything is recorded in the artifact's quantization notes: full INT8's cosine, each layer's
cost, the layers kept in float and their share of the multiply-accumulates.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from modelc_build.errors import CompileError

if TYPE_CHECKING:
    import numpy as np

    from modelc_build.backends import CompileRequest, Fallback


class Int8Writer(Protocol):
    """What the search needs of a runtime's calibrated quantizer (onnxruntime's Int8Writer)."""

    request: CompileRequest
    op_types: list[str] | None

    def weighted_only(self) -> list[str] | None: ...

    def quantize(self, layout_name: str, destination: Path, also_float: tuple[str, ...] = ()) -> None: ...

    def write(self, destinations: dict[str, Path], also_float: tuple[str, ...] = ()) -> dict[str, Any]: ...

TIMED_RUNS = 15
MIN_TIMED_MS = 1.0  # below this FP32 latency, batch-1 timings are noise: INT8's worth is not judged (the gates are)
# INT8 must be at least this much faster than FP32 to be worth shipping: a mixed graph timed at
# 0.98x FP32 while the build ran other steps came out 1.03x in the exclusive latency step (a CTC
# recogniser with its LSTM and eight convolutions in float)
WORTH_IT_RATIO = 0.95


def find_mixed_precision(writer: Int8Writer, destinations: dict[str, Path], fallback: Fallback) -> dict[str, Any]:
    """Rewrite `destinations` with the fewest layers in float that make the graph hold
    `fallback.min_cosine` on the tuning data; notes of what was tried and kept."""
    request = writer.request
    feeds, _ = tuning_feeds(fallback, request.inputs)
    portable_name, portable = next(iter(destinations.items()))
    reference = [_run(request.onnx_model, feed, request.outputs) for feed in feeds]
    full = _cosine(portable, feeds, reference, request.outputs)
    notes: dict[str, Any] = {"min_cosine": fallback.min_cosine, "tuned_on": f"{sum(_count(f) for f in feeds)} validation samples",
                             "full_int8_cosine": round(full, 6), "kept_in_float": []}
    if fallback.max_drop is not None:
        notes["max_task_drop"] = fallback.max_drop
    if fallback.holds(full, lambda: _infer(portable, request.outputs), notes, "full_int8_task_drop"):
        notes["verdict"] = "full INT8 holds the gate: nothing kept in float"
        return notes
    with tempfile.TemporaryDirectory(prefix="modelc-mixed-") as scratch:
        trial = Path(scratch) / "trial.onnx"
        cosine = _weighted_layers_only(writer, portable_name, trial, feeds, reference, full, notes)
        start = trial if "op_kinds_in_float" in notes else portable
        chosen: tuple[str, ...] = ()
        holds = fallback.holds(cosine, lambda: _infer(start, request.outputs), notes, "task_drop")
        if not holds:
            chosen, cosine, holds = _layers_in_float(writer, portable_name, portable, trial, feeds, reference, cosine, fallback,
                                                     notes)
    return _finish(writer, destinations, chosen, cosine, holds, fallback, notes)


def _layers_in_float(writer: Int8Writer, layout: str, portable: Path, trial: Path, feeds: list[dict[str, np.ndarray]],
                     reference: list[list[np.ndarray]], start: float, fallback: Fallback,
                     notes: dict[str, Any]) -> tuple[tuple[str, ...], float, bool]:
    """The worst 1, 2, 4, … weighted layers by their cost alone, in float together, until the graph
    holds the aim or the budget is spent; the layers, the last round's cosine and whether it held. A layer's cost is the task metric it loses where the
    recipe gates that (the cosine breaks ties), else the cosine: a CTC recogniser's cosine barely
    moves while its line identity falls."""
    outputs = writer.request.outputs
    costs = []
    for layer in _quantized_layers(portable):
        writer.quantize(layout, trial, (layer,))
        gain = _cosine(trial, feeds, reference, outputs) - start
        if fallback.task_drop is not None:
            drop = fallback.task_drop(_infer(trial, outputs))
            costs.append(((-drop, gain), layer))
        else:
            costs.append(((0.0, gain), layer))
    costs.sort(key=lambda cost: cost[0], reverse=True)
    notes["layer_costs"] = [{"layer": layer, "cosine_gained_in_float": round(gain, 6),
                             **({"task_drop_with_it_in_float": round(-drop, 4)} if fallback.task_drop is not None else {})}
                            for (drop, gain), layer in costs[:16]]
    chosen: tuple[str, ...] = ()
    cosine, holds = start, False
    limit = min(fallback.max_float_layers, len(costs) - 1)  # one layer in INT8 at least, or it is no INT8
    for count in sorted({min(2 ** step, limit) for step in range(limit.bit_length() + 1)} - {0}):
        chosen = tuple(layer for _, layer in costs[:count])
        writer.quantize(layout, trial, chosen)
        cosine = _cosine(trial, feeds, reference, outputs)
        round_record: dict[str, Any] = {"in_float": len(chosen), "cosine": round(cosine, 6)}
        notes.setdefault("rounds", []).append(round_record)
        holds = fallback.holds(cosine, lambda: _infer(trial, outputs), round_record, "task_drop")
        if "task_drop" in round_record:  # the graph the destinations are written as
            notes["task_drop"] = round_record["task_drop"]
        if holds:
            break
    return chosen, cosine, holds


def _weighted_layers_only(writer: Int8Writer, layout: str, trial: Path, feeds: list[dict[str, np.ndarray]],
                          reference: list[list[np.ndarray]], full: float, notes: dict[str, Any]) -> float:
    """One trial with Q/DQ on the weighted layers alone; kept (on the writer) when it gains. Returns
    the cosine the layer search starts from."""
    weighted = writer.weighted_only()
    if weighted is None:
        return full
    before = writer.op_types
    writer.op_types = weighted
    writer.quantize(layout, trial)
    cosine = _cosine(trial, feeds, reference, writer.request.outputs)
    notes["weighted_layers_only_cosine"] = round(cosine, 6)
    if cosine > full:
        notes["op_kinds_in_float"] = f"every op kind but {', '.join(weighted)}"
        return cosine
    writer.op_types = before
    return full


def _finish(writer: Int8Writer, destinations: dict[str, Path], chosen: tuple[str, ...], cosine: float, holds: bool,
            fallback: Fallback, notes: dict[str, Any]) -> dict[str, Any]:
    """Write the graph the search settled on (the last one it scored: `cosine`, `holds`) and give
    the verdict; whether it is faster than FP32 is timed by the worth step (steps/worth.py)."""
    writer.write(destinations, chosen)
    kinds = " and every op kind but weighted layers" if "op_kinds_in_float" in notes else ""
    summary = f"at cosine {cosine:.4f} with {len(chosen)} layer(s){kinds} in float"
    notes.update(mixed_cosine=round(cosine, 6), kept_in_float=list(chosen), summary=summary)
    if not holds:  # the gates judge the best it found, on the evaluation data
        notes["verdict"] = (f"no mixed graph within quantization.fallback_layers ({fallback.max_float_layers}) holds "
                            f"{fallback.aims()} on the validation data; shipped to the gates: best mixed INT8 {summary}")
        return notes
    notes["verdict"] = f"mixed INT8 {summary}"
    return notes


def refuse_if_not_worth_it(target: str, ratio: float, fp32_ms: float, words: str, full: float) -> None:
    """A mixed INT8 graph no faster than FP32 (within WORTH_IT_RATIO) is refused, where FP32 is slow
    enough to time (a model that runs in well under a millisecond times as noise: the gates judge it
    as it is)."""
    if ratio > WORTH_IT_RATIO and fp32_ms >= MIN_TIMED_MS:
        raise CompileError(f"{target}: INT8 is not worth it here: {words} (full INT8 cosine {full:.4f}): "
                           "build fp32 for this runtime, or set quantization.fallback: off to see full INT8 judged")


TUNING_SAMPLES = 64  # validation samples each trial is scored on (a trial is a quantize_static and a pass)


def tuning_feeds(fallback: Fallback, inputs: Any) -> tuple[list[dict[str, np.ndarray]], int]:
    """The tuning data as the model's feeds (at most TUNING_SAMPLES samples), cut to its batch where
    that is fixed, and how many samples they hold; none is an error saying what to add."""
    from modelc_build.feeds import FeedReader

    reader = FeedReader(fallback.tuning, TUNING_SAMPLES, inputs)
    feeds = []
    while (feed := reader.get_next()) is not None:
        feeds.append(feed)
    if not feeds:
        raise CompileError("quantization.fallback: the validation data gave no sample to tune on: add data.validation")
    return feeds, reader.samples


def _count(feed: dict[str, Any]) -> int:
    first = next(iter(feed.values()))
    return int(first.shape[0]) if getattr(first, "ndim", 0) else 1


def _session(model: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _infer(model: Path, outputs: tuple[str, ...]) -> Any:
    """The model in a fresh session, as a feed -> outputs-by-name function."""
    session = _session(model)
    return lambda feed: dict(zip(outputs, session.run(list(outputs), feed)))


def _run(model: Path, feed: dict[str, np.ndarray], outputs: tuple[str, ...]) -> list[np.ndarray]:
    return list(_session(model).run(list(outputs), feed))


def _cosine(model: Path, feeds: list[dict[str, np.ndarray]], reference: list[list[np.ndarray]], outputs: tuple[str, ...]) -> float:
    """The lowest cosine of any output, over all tuning samples flattened, against the float graph."""
    import numpy as np

    session = _session(model)
    got = [session.run(list(outputs), feed) for feed in feeds]
    worst = 1.0
    for index in range(len(outputs)):
        a = np.concatenate([np.asarray(run[index], dtype=np.float64).ravel() for run in got])
        b = np.concatenate([np.asarray(run[index], dtype=np.float64).ravel() for run in reference])
        norm = float(np.linalg.norm(a) * np.linalg.norm(b))
        worst = min(worst, float(a @ b) / norm if norm else (1.0 if np.allclose(a, b) else 0.0))
    return worst


def _quantized_layers(model: Path) -> list[str]:
    """The weighted nodes of a QDQ graph that read a DequantizeLinear (those running in INT8)."""
    import onnx

    from modelc_build.onnx_graph import WEIGHTED_LAYERS

    graph = onnx.load(str(model), load_external_data=False).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [node.name for node in graph.node if node.op_type in WEIGHTED_LAYERS and dequantized & set(node.input)]


def interleaved_ratio(mixed: Callable[[], object], fp32: Callable[[], object], runs: int = TIMED_RUNS) -> tuple[float, float]:
    """Mixed INT8 over FP32 (each a call that runs one inference), the least of interleaved runs of
    each after a warm-up; and FP32's time in milliseconds. Both runtimes' searches time this way."""
    calls = {"mixed": mixed, "fp32": fp32}
    best = {name: float("inf") for name in calls}
    for call in calls.values():
        call()
    for _ in range(runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - started)
    return best["mixed"] / best["fp32"], best["fp32"] * 1000.0
