"""golden: the release's golden set, a few evaluation samples with the reference's outputs for them.

A release carries it (signed, like every file) so that the machine that runs an artifact can prove
it once more: `modelc verify --run` and `modelc_build.runtime` run each artifact on these inputs
with the settings the manifest records and hold the outputs to the tolerances the gates implied.
The build runs the same check on every artifact (verify steps), so a golden set that its own
artifacts would miss never ships.

Samples are the first ones of the evaluation set, one per entry (a model with state reads them as
one stream from zeros, as evaluation did), as many as fit `verify.golden_max_mb`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelc_build.fingerprint import DataSource
from modelc_build.steps import Step, StepInputs, tool_versions
from modelc_build.steps.decode import decoded_needs
from modelc_build.steps.verify import GOLDEN_STEP, REFERENCE_STEP, one_sample_at_a_time, stored_reference_outputs


@dataclass(frozen=True)
class GoldenStep(Step):
    evaluation: DataSource
    outputs: tuple[str, ...]
    samples: int
    max_bytes: int
    kind: ClassVar[str] = "golden"
    expected_seconds: ClassVar[float] = 0.2
    memory_hint: ClassVar[float] = 0.2
    id: ClassVar[str] = GOLDEN_STEP  # type: ignore[misc]

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (REFERENCE_STEP,) + decoded_needs(self.evaluation)

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"keep {self.samples} samples of {self.evaluation.label} with the reference's outputs (the golden set)"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"reference": inputs.entry(REFERENCE_STEP).files, "data": inputs.fingerprints.data(self.evaluation),
                "inputs": [spec.to_json() for spec in self.evaluation.inputs], "outputs": list(self.outputs),
                "samples": self.samples, "max_bytes": self.max_bytes, "tools": tool_versions(("numpy",))}

    def run(self, inputs: StepInputs, out: Path) -> None:
        from modelc_build.golden import write_golden_set

        pairs = one_sample_at_a_time(stored_reference_outputs(inputs.entry(REFERENCE_STEP).path,
                                                              inputs.batches(self.evaluation)))
        kept = write_golden_set(out, pairs, self.evaluation.inputs, self.outputs, self.samples, self.max_bytes)
        (out / "golden-step.json").write_text(json.dumps({"data": self.evaluation.label, **kept}, indent=2, sort_keys=True) + "\n")
