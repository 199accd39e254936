"""The golden set: the format a release carries it in, and the check that runs an artifact on it.

```
golden/golden.json      format_version, samples, inputs (specs), outputs, bytes
golden/inputs.npz       per sample and input: "<sample>|<input>" (sample-first, one sample)
golden/reference.npz    per sample and output: the reference model's outputs
golden/tolerances.json  per artifact: the tolerances its gates implied (written by the release)
```

The check (`measure`) is what `modelc verify --run`, `modelc pull --check`,
`modelc_build.runtime.load(..., check=True)` and every build's verify step run, so the check that
ships is the one that was run. It needs NumPy and the artifact's runtime, never torch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from modelc_build.accuracy import OutputAccumulator, OutputMetrics
from modelc_build.recipe_types import Gate, TensorSpec

if TYPE_CHECKING:
    import numpy as np

    from modelc_build.data import Batch

FOLDER = "golden"
DESCRIPTION = "golden.json"
INPUTS = "inputs.npz"
REFERENCE = "reference.npz"
TOLERANCES = "tolerances.json"
FILES = (DESCRIPTION, INPUTS, REFERENCE)
FORMAT_VERSION = 1


def _key(sample: int, name: str) -> str:
    return f"{sample:06d}|{name}"


def write_golden_set(out: Path, pairs: Iterable[tuple[Batch, dict[str, np.ndarray]]], inputs: tuple[TensorSpec, ...],
                     outputs: tuple[str, ...], samples: int, max_bytes: int) -> dict[str, Any]:
    """The first `samples` samples (one sample per pair) that fit `max_bytes`, inputs and reference
    outputs; returns what was kept (and why fewer, where fewer)."""
    import numpy as np

    kept_inputs: dict[str, np.ndarray] = {}
    kept_outputs: dict[str, np.ndarray] = {}
    size, count, note = 0, 0, None
    for index, (batch, expected) in enumerate(pairs):
        if index >= samples:
            break
        sample_inputs = {_key(index, name): array for name, array in batch.inputs.items()}
        sample_outputs = {_key(index, name): expected[name] for name in outputs}
        cost = sum(a.nbytes for a in sample_inputs.values()) + sum(a.nbytes for a in sample_outputs.values())
        if size + cost > max_bytes:
            note = (f"{count} of {samples} samples: one more would pass verify.golden_max_mb "
                    f"({max_bytes / 2**20:g} MiB; a sample here is {cost / 2**20:.2f} MiB)")
            break
        kept_inputs.update(sample_inputs)
        kept_outputs.update(sample_outputs)
        size += cost
        count += 1
    np.savez_compressed(out / INPUTS, **kept_inputs)  # type: ignore[arg-type]
    np.savez_compressed(out / REFERENCE, **kept_outputs)  # type: ignore[arg-type]
    description = {"format_version": FORMAT_VERSION, "samples": count, "inputs": [spec.to_json() for spec in inputs],
                   "outputs": list(outputs), "bytes": (out / INPUTS).stat().st_size + (out / REFERENCE).stat().st_size,
                   **({"note": note} if note else {})}
    (out / DESCRIPTION).write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    return {"samples": count, "bytes": description["bytes"], **({"note": note} if note else {})}


@dataclass(frozen=True)
class GoldenSet:
    folder: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[str, ...]
    samples: int
    size_bytes: int

    @classmethod
    def load(cls, folder: Path) -> GoldenSet:
        from modelc_build.errors import InputError

        try:
            description = json.loads((folder / DESCRIPTION).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{folder / DESCRIPTION}: no readable golden set ({exc}); releases built by modelc 0.1 "
                             "with verify.golden_samples > 0 carry one") from exc
        if description.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{folder / DESCRIPTION}: golden set format {description.get('format_version')}, "
                             f"this modelc reads {FORMAT_VERSION}: use a matching modelc")
        return cls(folder, tuple(TensorSpec.from_json(s) for s in description["inputs"]), tuple(description["outputs"]),
                   int(description["samples"]), int(description.get("bytes", 0)))

    def pairs(self) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Each sample's inputs (sample-first) and the reference's outputs for it, in order."""
        import numpy as np

        with np.load(self.folder / INPUTS, allow_pickle=False) as given, \
                np.load(self.folder / REFERENCE, allow_pickle=False) as expected:
            for index in range(self.samples):
                yield ({name.split("|", 1)[1]: given[name] for name in given.files if name.startswith(f"{index:06d}|")},
                       {name: expected[_key(index, name)] for name in self.outputs})


def measure(infer: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], golden: GoldenSet,
            outputs: tuple[str, ...] | None = None) -> list[OutputMetrics]:
    """Run `infer` (a runner's) over the golden samples in order, state carried as in evaluation;
    per output, how the results compare with the reference's."""
    from modelc_build.feeds import ModelCaller

    names = outputs or golden.outputs
    call = ModelCaller(golden.inputs, infer)
    accumulators = {name: OutputAccumulator() for name in names}
    for given, expected in golden.pairs():
        got = call(given)
        for name in names:
            accumulators[name].update(expected[name], got[name])
    return [accumulators[name].result(name) for name in names]


ERROR_HEADROOM = 1.5  # a deploy machine may err this much more than the build did on the same samples


def tolerances(gate: Gate, built: list[OutputMetrics]) -> dict[str, dict[str, float]]:
    """Per output, the tensor tolerances the gate implies on a handful of samples: the gate's own
    threshold, or, where the build's own outputs on these samples came close to it (a few samples
    scatter more than a whole evaluation set), ERROR_HEADROOM times the error the build saw.
    A collapsed artifact or saturating kernels err many times more and miss either way. Task
    metrics need more samples than a golden set has and are not part of it."""
    import math

    limits: dict[str, dict[str, float]] = {}
    for m in built:
        own: dict[str, float] = {}
        if gate.min_cosine is not None:
            own["min_cosine"] = min(gate.min_cosine, 1.0 - ERROR_HEADROOM * (1.0 - m.cosine))
        if gate.max_abs_error is not None:
            own["max_abs_error"] = max(gate.max_abs_error, ERROR_HEADROOM * m.max_abs_error)
        if gate.max_mean_abs_error is not None:
            own["max_mean_abs_error"] = max(gate.max_mean_abs_error, ERROR_HEADROOM * m.mean_abs_error)
        if gate.min_snr_db is not None:
            headroom_db = 20.0 * math.log10(ERROR_HEADROOM)
            own["min_snr_db"] = gate.min_snr_db if m.snr_db is None else min(gate.min_snr_db, m.snr_db - headroom_db)
        limits[m.output] = own
    return limits


def misses(metrics: list[OutputMetrics], limits: dict[str, dict[str, float]]) -> list[str]:
    """Each tolerance a measurement misses, as words."""
    found = []
    for m in metrics:
        observed = {"min_cosine": m.cosine, "max_abs_error": m.max_abs_error, "max_mean_abs_error": m.mean_abs_error,
                    "min_snr_db": m.snr_db}
        for key, limit in limits.get(m.output, {}).items():
            value = observed[key]
            if value is None:  # identical outputs: infinite SNR
                continue
            if (value < limit) if key.startswith("min_") else (value > limit):
                found.append(f"{key} on output '{m.output}': {value:.6g} vs {limit:.6g}")
    return found
