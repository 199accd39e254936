"""From samples to model calls: the one place that knows how a model wants to be fed.

Data is always sample-first: every array a data set yields (image folders, .npy/.npz, a data
function) has its samples on axis 0, whatever the model's own layout. A model call differs in
three ways the recipe declares per input (`model.inputs`):

- `batch_axis`: where the model keeps the batch (axis 1 for a `[layers, batch, hidden]` recurrent
  state; none for a scalar such as a sample rate). Samples are moved there for the call.
- `value`: a fixed value fed on every call (a scalar input like `sr: 16000`); data does not give it.
- `state_from`: a recurrent state, carried from that output of the previous call into this input.
  The model then reads its samples as one stream, in order, one step per call: the first call gets
  zeros, each later one the state the same model returned before. Each model carries its own state,
  so an artifact whose error builds up over time is measured as such.

A model whose batch axis is fixed (an ONNX exported for batch 1) is fed that many samples per call;
the last call of an evaluation is padded with copies of its last sample and the padding's outputs
dropped, so every sample is measured.

Calibration data for a model with state needs realistic states, not zeros: `with_carried_state`
runs the float model over the calibration stream and adds, sample by sample, the state it carried
in, so quantizers see the value ranges the model meets.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import numpy as np

from modelc_build.recipe_types import TensorSpec

Infer = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def data_inputs(inputs: tuple[TensorSpec, ...]) -> tuple[TensorSpec, ...]:
    """The inputs data sets provide: not fixed in the recipe, not carried state."""
    return tuple(spec for spec in inputs if spec.value is None and spec.state_from is None)


def stateful(inputs: tuple[TensorSpec, ...]) -> bool:
    return any(spec.state_from is not None for spec in inputs)


def samples_per_call(inputs: tuple[TensorSpec, ...]) -> int | None:
    """1 for a model with state (one step per call), the fixed batch where the model has one, else
    None (any number)."""
    return 1 if stateful(inputs) else fixed_batch(inputs)


def fixed_batch(inputs: tuple[TensorSpec, ...]) -> int | None:
    """The model's fixed batch size, or None where the batch axis is dynamic. Calibration feeds of a
    model with state hold their states already (`with_carried_state`), so they need not go one
    step at a time: only a fixed batch limits them."""
    for spec in inputs:
        if spec.batch_axis is not None and isinstance(spec.shape[spec.batch_axis], int):
            return int(spec.shape[spec.batch_axis])
    return None


def fixed_value(spec: TensorSpec, dynamic_size: int = 1) -> np.ndarray:
    """The input's declared value, in its dtype, broadcast to its shape (batch `dynamic_size`)."""
    assert spec.value is not None
    return np.broadcast_to(np.asarray(spec.value, dtype=spec.dtype), spec.concrete_shape(dynamic_size)).copy()


def initial_state(spec: TensorSpec) -> np.ndarray:
    """Zeros for one sample of the state input, sample-first (its batch axis moved to axis 0)."""
    return np.moveaxis(np.zeros(spec.concrete_shape(1), dtype=spec.dtype), spec.batch_axis or 0, 0)


def model_feed(inputs: tuple[TensorSpec, ...], data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One call's feed from sample-first arrays (state included, values not): samples moved to each
    input's batch axis, fixed values added."""
    feed = {}
    for spec in inputs:
        if spec.value is not None:
            feed[spec.name] = fixed_value(spec)
        elif spec.batch_axis in (None, 0):
            feed[spec.name] = data[spec.name] if spec.batch_axis == 0 else data[spec.name][0]
        else:
            feed[spec.name] = np.ascontiguousarray(np.moveaxis(data[spec.name], 0, spec.batch_axis))
    return feed


def sample_first(inputs: tuple[TensorSpec, ...], outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A call's outputs with a state output's batch axis moved to axis 0 (like its input's)."""
    moved = dict(outputs)
    for spec in inputs:
        if spec.state_from in moved and spec.batch_axis not in (None, 0):
            moved[spec.state_from] = np.moveaxis(moved[spec.state_from], spec.batch_axis, 0)
    return moved


def batch_first(output: np.ndarray, samples: int) -> np.ndarray:
    """An output whose axis 0 is not the call's sample count, with the one axis that is moved to 0:
    a time-major `[steps, batch, classes]` CTC or sequence output (a CRNN's) becomes sample-first like
    every other output, so that padding is cut, samples are counted and task metrics read samples,
    not time steps. An output with no such axis (no batch axis), or several, is left as it is."""
    if output.ndim < 2 or output.shape[0] == samples:
        return output
    matching = [axis for axis, size in enumerate(output.shape) if size == samples]
    return np.moveaxis(output, matching[0], 0) if len(matching) == 1 else output


def split(data: dict[str, np.ndarray], size: int | None, pad: bool) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Sample-first arrays cut into calls of `size` samples, with how many of each are real; a short
    last call is padded with its last sample (`pad`) or dropped."""
    count = len(next(iter(data.values()))) if data else 1
    if size is None:
        yield data, count
        return
    for start in range(0, count, size):
        part = {name: array[start:start + size] for name, array in data.items()}
        real = min(size, count - start)
        if real < size:
            if not pad:
                return
            part = {name: np.concatenate([array, np.repeat(array[-1:], size - real, axis=0)])
                    for name, array in part.items()}
        yield part, real


class ModelCaller:
    """Runs sample-first batches through one model (`infer`, a runner's), one evaluation pass:
    calls cut to the model's batch, layouts moved, fixed values added, state carried from call to
    call. Make a new one for each pass."""

    def __init__(self, inputs: tuple[TensorSpec, ...], infer: Infer) -> None:
        self.inputs = inputs
        self.infer = infer
        self.per_call = samples_per_call(inputs)
        self.state = {spec.name: initial_state(spec) for spec in inputs if spec.state_from is not None}

    def __call__(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        parts = []
        for call, real in split(self.provided(data), self.per_call, pad=True):
            outputs = sample_first(self.inputs, self.infer(model_feed(self.inputs, {**call, **self.state})))
            if not self.state:
                outputs = {name: batch_first(array, self.per_call or real) for name, array in outputs.items()}
            for spec in self.inputs:
                if spec.state_from is not None:
                    self.state[spec.name] = outputs[spec.state_from]
            parts.append({name: array[:real] for name, array in outputs.items()})
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def first_feed(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The feed of a first call with one sample (or the model's fixed batch): for timing."""
        size = self.per_call or 1
        call = {name: np.ascontiguousarray(array[:size]) for name, array in self.provided(data).items()}
        return model_feed(self.inputs, {**call, **{name: np.repeat(s, size, axis=0) for name, s in self.state.items()}})

    def provided(self, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = {spec.name for spec in data_inputs(self.inputs)}
        return {name: array for name, array in data.items() if name in names}


def with_carried_state(feeds: Callable[[], Iterable[dict[str, np.ndarray]]], float_model: Any,
                       inputs: tuple[TensorSpec, ...]) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """Calibration feeds (sample-first) with each state input added: the state the float ONNX model
    `float_model` carried into that sample when run over the stream in order. Without state: `feeds`."""
    if not stateful(inputs):
        return lambda: iter(feeds())

    def carried() -> Iterator[dict[str, np.ndarray]]:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(float_model), providers=["CPUExecutionProvider"])

        def infer(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            names = [o.name for o in session.get_outputs()]
            return dict(zip(names, session.run(names, feed)))

        caller = ModelCaller(inputs, infer)
        for feed in feeds():
            states: dict[str, list[np.ndarray]] = {name: [] for name in caller.state}
            for call, _ in split(caller.provided(feed), 1, pad=False):
                for name, value in caller.state.items():
                    states[name].append(value)
                caller(call)
            yield {**caller.provided(feed), **{name: np.concatenate(values) for name, values in states.items()}}

    return carried


def sample_shape(spec: TensorSpec) -> tuple[int | str, ...]:
    """One sample's shape: the input's shape without its batch axis."""
    if spec.batch_axis is None:
        return spec.shape
    return spec.shape[:spec.batch_axis] + spec.shape[spec.batch_axis + 1:]


def random_samples(inputs: tuple[TensorSpec, ...], count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random sample-first arrays for the inputs data would give; named axes other than the
    batch take their example sizes (an image's height and width from data.preprocess.size)."""
    rng = np.random.default_rng(seed)
    return {spec.name: np.moveaxis(_random(rng, spec, spec.concrete_shape(count)), spec.batch_axis or 0, 0)
            for spec in data_inputs(inputs)}


def example_inputs(inputs: tuple[TensorSpec, ...], dynamic_size: int = 1, seed: int = 0) -> list[np.ndarray]:
    """Seeded random arrays of the declared shapes: symbolic dimensions get `dynamic_size`."""
    rng = np.random.default_rng(seed)
    # a fixed value (a sample rate the model may branch on) is the declared one
    return [fixed_value(spec, dynamic_size) if spec.value is not None
            else _random(rng, spec, spec.concrete_shape(dynamic_size)) for spec in inputs]


def _random(rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform [0, 1) for float inputs, 0 or 1 for the others (ids, masks, flags)."""
    if spec.dtype.startswith("float"):
        return rng.random(shape, dtype=np.float32).astype(spec.dtype)
    return rng.integers(0, 2, size=shape).astype(spec.dtype)


class FeedReader:
    """onnxruntime's CalibrationDataReader protocol (plus ModelOpt's `get_first`) over modelc's
    batches: one batch in memory at a time, at most `limit` samples, each feed cut to the model's
    batch size where that is fixed (a `[1, 3, H, W]` model is fed one sample at a time)."""

    def __init__(self, feeds: Callable[[], Iterator[dict[str, Any]]], limit: int,
                 inputs: tuple[TensorSpec, ...] = ()) -> None:
        self._feeds = lambda: _fitted(feeds(), inputs)
        self._inputs = inputs
        self._limit = limit
        self._iterator: Iterator[dict[str, Any]] | None = None
        self._given = 0
        self.samples = 0

    def get_next(self) -> dict[str, Any] | None:
        if self._iterator is None:
            self._iterator = self._feeds()
        if self._given >= self._limit:
            return None
        feed = next(self._iterator, None)
        if feed is None:
            return None
        room = self._limit - self._given
        feed = {name: array[:room] for name, array in feed.items()}
        count = len(next(iter(feed.values())))
        self._given += count
        self.samples = self._given
        return model_feed(self._inputs, feed)

    def get_first(self) -> dict[str, Any] | None:
        """ModelOpt peeks at one feed to try the session; it does not move the reader."""
        first = next(iter(self._feeds()), None)
        return None if first is None else model_feed(self._inputs, {name: array[:self._limit] for name, array in first.items()})

    def samples_per_feed(self) -> int:
        """How many samples the first feed holds (the model's fixed batch, or a data batch)."""
        first = next(iter(self._feeds()), None)
        return 0 if first is None else min(self._limit, len(next(iter(first.values()))))

    def rewind(self) -> None:
        self._iterator = None
        self._given = 0


def _fitted(feeds: Iterator[dict[str, Any]], inputs: tuple[TensorSpec, ...]) -> Iterator[dict[str, Any]]:
    """Sample-first feeds cut to the model's fixed batch (a short remainder is dropped)."""
    size = fixed_batch(inputs)
    for feed in feeds:
        for call, _ in split(feed, size, pad=False):
            yield call


def dynamic_shapes(model: Any, inputs: tuple[TensorSpec, ...]) -> Any:
    """torch.export's dynamic_shapes for the recipe's named axes (None: every axis fixed), one Dim per
    name; positional, so the forward's own argument names need not match the recipe's input names."""
    import torch

    dims: dict[str, Any] = {}
    shapes: Any = tuple({axis: dims.setdefault(name, torch.export.Dim(name)) for axis, name in spec.dynamic_axes.items()}
                        or None for spec in inputs)
    if not any(shapes):
        return None
    return (shapes,) if takes_varargs(model) else shapes  # modelc's wrapper (sources.py): forward(*args) holds them all


def takes_varargs(model: Any) -> bool:
    """Whether the model's forward takes *args (modelc's wrapper of a source, sources.py)."""
    import inspect

    try:
        parameters = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
