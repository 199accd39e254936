"""latency:<artifact>: batch-1 latency of one artifact (or the reference), p10/p50/p90.

Exclusive: the engine runs it with nothing beside it, after the accuracy steps, so the figures
are not shared with other work. The machine is key material: a latency measured elsewhere (a
shared step cache) is not this machine's.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelc_build.fingerprint import DataSource
from modelc_build.recipe_types import Latency, ModelSource, Target
from modelc_build.steps import Step, StepInputs, tool_versions
from modelc_build.steps.compile import backend_tools, compile_step_id
from modelc_build.steps.decode import decoded_needs
from modelc_build.steps.verify import MEASURE_TOOLS, reference_runner

LATENCY_FILE = "latency.json"
REFERENCE_LATENCY_STEP = "latency:reference"


def latency_step_id(target: Target | None) -> str:
    return f"latency:{target.id}" if target is not None else REFERENCE_LATENCY_STEP


def machine() -> dict[str, Any]:
    from modelc_build.host import cpu_info

    return cpu_info()


@dataclass(frozen=True)
class LatencyStep(Step):
    target: Target | None  # None: the reference model
    model: ModelSource
    data: DataSource  # the first sample of it is timed
    settings: Latency
    config: tuple[tuple[str, str], ...] = ()  # the runtime settings it is deployed with
    kind: ClassVar[str] = "latency"
    expected_seconds: ClassVar[float] = 0.3
    fresh_process: ClassVar[bool] = True
    exclusive: ClassVar[bool] = True

    @property
    def id(self) -> str:  # type: ignore[override]
        return latency_step_id(self.target)

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return (((compile_step_id(self.target),) if self.target is not None else ())
                + decoded_needs(self.data))

    @property
    def description(self) -> str:  # type: ignore[override]
        what = self.target.id if self.target is not None else "the reference"
        return f"time {what}, batch 1, {self.settings.runs} runs after {self.settings.warmup} warm-up (nothing beside it)"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        facts = inputs.fingerprints
        if self.target is None:
            what: Any = {"reference": facts.source(self.model)}
            tools: tuple[str, ...] = MEASURE_TOOLS
        else:
            what = {"artifact": inputs.entry(compile_step_id(self.target)).files, "target": self.target.material(),
                    "config": list(self.config)}
            tools = backend_tools(self.target)
        return {**what, "data": facts.data(self.data), "settings": asdict(self.settings), "machine": machine(),
                "tools": tool_versions(tools)}

    def run(self, inputs: StepInputs, out: Path) -> None:
        from modelc_build.accuracy import measure_latency
        from modelc_build.backends import get_backend
        from modelc_build.feeds import ModelCaller, samples_per_call

        if self.target is None:
            runner, _ = reference_runner(self.model)
        else:
            artifact = inputs.entry(compile_step_id(self.target))
            runner = get_backend(self.target.backend).runner([artifact.file(n) for n in artifact.files],
                                                             self.model.inputs, self.model.outputs, dict(self.config))
        first = next(iter(inputs.batches(self.data)))
        feed = ModelCaller(self.model.inputs, runner.infer).first_feed(first.inputs)
        with runner:
            measured = measure_latency(runner, feed, self.settings.runs, self.settings.warmup)
            kernels = runner.kernel_profile(feed) if measured else None  # after the timed runs, apart
            runtime = runner.effective_settings()
        result = {"ms": measured, "batch": samples_per_call(self.model.inputs) or 1, "runs": self.settings.runs, "warmup": self.settings.warmup,
                  "threads": f"runtime default ({machine()['cores']} cores)", "config": dict(self.config),
                  "machine": machine(), "kernels": kernels, "runtime": runtime, "cpu_class": machine()["kernel_class"]}
        (out / LATENCY_FILE).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
