"""CTC text recognisers' task metric: greedy decoding (best class per step, repeats merged, blank 0
dropped) of the artifact against the reference's decoding of the same line.

`identity`: the share of lines (%) whose decoded text equals the reference's (the headline);
`char_accuracy`: 100 × (1 − edit distance / reference length), averaged over lines.
Outputs arrive sample-first, `[batch, steps, classes]`: modelc moves a time-major output's batch axis
(ddddocr's `[steps, 1, classes]`) to the front.
"""
from __future__ import annotations

import numpy as np


def decode(scores: np.ndarray) -> list[int]:
    best = scores.argmax(-1)
    return [int(c) for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]


def edit_distance(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def _score(artifact: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    same, characters = [], []
    for ours, theirs in zip(artifact, reference):
        got, want = decode(ours), decode(theirs)
        same.append(100.0 * (got == want))
        characters.append(100.0 * (1 - edit_distance(got, want) / max(1, len(want))))
    return {"identity": float(np.mean(same)), "char_accuracy": float(np.mean(characters))}


def identity(outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray], labels: list) -> dict[str, float]:
    """Outputs `[batch, steps, classes]` (modelc hands a time-major output over sample-first)."""
    name = next(iter(reference))
    return _score(outputs[name], reference[name])
