"""reference and verify:<target>: the accuracy check, as steps that run side by side.

`reference` runs the reference model (PyTorch eager, the TorchScript source, or onnxruntime FP32
on an ONNX source) once over the evaluation data and keeps its outputs, batch by batch; it is
cached by model + data. Each `verify:<target>` then runs one artifact on the same batches and
compares, so artifacts are measured in parallel and a changed target re-verifies only itself.
Gates are not key material: they are applied to these cached measurements by the release.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from modelc_build.arm64 import is_arm
from modelc_build.arm64 import root_key as arm64_root_key
from modelc_build.fingerprint import DataSource
from modelc_build.recipe_types import ModelSource, Target, Task
from modelc_build.steps import Step, StepInputs, tool_versions
from modelc_build.steps.compile import compile_step_id
from modelc_build.steps.decode import decoded_needs

if TYPE_CHECKING:
    import numpy as np

    from modelc_build.backends import Runner
    from modelc_build.data import Batch

REFERENCE_STEP = "reference"
GOLDEN_STEP = "golden"  # steps/golden.py: the samples a release carries to prove itself where it runs
EVALUATION_FILE = "evaluation.json"
MEASURE_TOOLS = ("torch", "onnxruntime", "openvino", "numpy", "pillow")


def verify_step_id(target: Target) -> str:
    return f"verify:{target.id}"


def reference_runner(model: ModelSource, threads: int | None = None) -> tuple[Runner, str]:
    """The model every artifact is measured against, and how the report names it."""
    if model.kind == "onnx":
        from modelc_build.backends.onnxruntime import OnnxRuntimeRunner

        assert model.path is not None
        return OnnxRuntimeRunner(model.path, model.inputs, model.outputs, threads), f"onnxruntime FP32 on {model.path.name}"
    from modelc_build.backends.torchscript import TorchModuleRunner
    from modelc_build.sources import load_torch_model

    label = "PyTorch eager" if model.kind == "torch" else "the TorchScript source"
    return TorchModuleRunner(model.inputs, model.outputs, module=load_torch_model(model)), label


@dataclass(frozen=True)
class ReferenceStep(Step):
    model: ModelSource
    evaluation: DataSource
    kind: ClassVar[str] = "reference"
    fresh_process: ClassVar[bool] = True
    memory_hint: ClassVar[float] = 2.5
    id: ClassVar[str] = REFERENCE_STEP  # type: ignore[misc]

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return decoded_needs(self.evaluation)

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"run the reference model on {self.evaluation.label}"

    def crashed(self, exit_code: int | None) -> Exception:
        from modelc_build.steps.export import model_code_crashed

        return model_code_crashed(self.model, self.id, exit_code)

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"model": inputs.fingerprints.source(self.model), "data": inputs.fingerprints.data(self.evaluation),
                "tools": tool_versions(MEASURE_TOOLS)}

    def run(self, inputs: StepInputs, out: Path) -> None:
        import numpy as np

        from modelc_build.feeds import ModelCaller

        runner, label = reference_runner(self.model, inputs.threads)
        samples = 0
        shapes: dict[str, list[int]] = {}
        with runner:
            call = ModelCaller(self.model.inputs, runner.infer)
            for number, batch in enumerate(inputs.batches(self.evaluation)):
                outputs = call(batch.inputs)
                np.savez(out / f"outputs-{number:06d}.npz", **outputs)  # type: ignore[arg-type]
                samples += len(batch)
                shapes = shapes or {name: list(array.shape) for name, array in outputs.items()}
        data = self.evaluation.label
        carried = [f"{spec.name} ← {spec.state_from}" for spec in self.model.inputs if spec.state_from]
        if carried:
            data += f", read as one stream, one sample per call, state carried ({', '.join(carried)})"
        (out / "reference.json").write_text(json.dumps({"reference": label, "data": data, "samples": samples,
                                                        "shapes": shapes}, indent=2, sort_keys=True) + "\n")


def stored_reference_outputs(entry_folder: Path, batches: Iterator[Batch]) -> Iterator[tuple[Batch, dict[str, np.ndarray]]]:
    """Each evaluation batch with the reference's outputs for it, read back from the reference step."""
    import numpy as np

    for number, batch in enumerate(batches):
        with np.load(entry_folder / f"outputs-{number:06d}.npz", allow_pickle=False) as archive:
            yield batch, {name: archive[name] for name in archive.files}


@dataclass(frozen=True)
class Setting:
    """How an artifact is run for one measurement: as deployed (the runtime settings the recipe
    declares; gated), under another runtime setting of this machine (reported beside), or on an
    emulated deploy CPU (a QEMU CPU model; a sample subset, gated on the tensor metrics)."""

    name: str  # deploy | f32 | runtime-default | the emulated CPU model in lower case (haswell)
    config: tuple[tuple[str, str], ...] = ()  # runtime properties (OpenVINO compile_model)
    emulate: str | None = None  # a QEMU CPU model, e.g. Haswell
    emulator: str | None = None  # its executable, found when the plan was made (None: not installed)
    samples: int = 0  # emulated: at most this many evaluation samples ...
    budget_s: float = 0.0  # ... and as many as fit in this time

    @property
    def suffix(self) -> str:
        return "" if self.name == "deploy" else f"@{self.name}"

    @property
    def gated(self) -> bool:
        return self.name == "deploy" or self.emulate is not None

    def describe(self) -> str:
        if self.emulate:
            return f"on an emulated {self.emulate} CPU (QEMU)"
        return {"deploy": "as deployed", "f32": "pinned to f32",
                "runtime-default": "with the runtime's own defaults on this CPU"}.get(self.name, self.name)


DEPLOY = Setting("deploy")


@dataclass(frozen=True)
class VerifyStep(Step):
    target: Target
    evaluation: DataSource
    task: Task
    outputs: tuple[str, ...]
    setting: Setting = DEPLOY
    golden: bool = False  # also run the release's golden-set check, as a deploy machine will
    kind: ClassVar[str] = "verify"
    fresh_process: ClassVar[bool] = True

    @property
    def memory_peak_hint(self) -> float:
        """An emulated check holds the artifact natively once (its outputs are compared there)."""
        return 1.0 if self.setting.emulate else self.memory_hint

    @property
    def cost_hint(self) -> float:
        """An emulated CPU runs a handful of samples ~100x slower than native: the longest check.
        TorchScript runs the whole set on torch's float kernels at about the reference's pace,
        twice the time of the other runtimes' (the shipped MobileNetV2: 14 s against 6 s for
        OpenVINO FP32), so it starts before them rather than alone at the end."""
        if self.setting.emulate:
            return 7.0
        from modelc_build.backends import capabilities

        return capabilities(self.target.backend).check_cost

    @property
    def id(self) -> str:  # type: ignore[override]
        return verify_step_id(self.target) + self.setting.suffix

    @property
    def needs(self) -> tuple[str, ...]:  # type: ignore[override]
        return ((compile_step_id(self.target), REFERENCE_STEP) + ((GOLDEN_STEP,) if self.golden else ())
                + decoded_needs(self.evaluation))

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"measure {self.target.id} {self.setting.describe()} against the reference on {self.evaluation.label}"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        from modelc_build.host import host_class

        # a native measurement holds for this CPU class only; an emulated one for the emulator's
        where = {"emulator": _emulator_identity(self.setting.emulator)} if self.setting.emulate else {"cpu_class": host_class()}
        if self.setting.emulate and is_arm(self.setting.emulate):  # and the ARM64 root's runtimes
            where["arm64_root"] = arm64_root_key()
        golden = {"golden": inputs.entry(GOLDEN_STEP).files} if self.golden else {}
        return {"artifact": inputs.entry(compile_step_id(self.target)).files, **golden,
                "reference": inputs.entry(REFERENCE_STEP).files, "data": inputs.fingerprints.data(self.evaluation),
                "task": inputs.fingerprints.task(self.task), "outputs": list(self.outputs), "setting": asdict(self.setting),
                "tools": tool_versions(MEASURE_TOOLS), **where}

    def run(self, inputs: StepInputs, out: Path) -> None:
        measured = self.measure_emulated(inputs, out) if self.setting.emulate else self.measure(inputs)
        measured["setting"] = {"name": self.setting.name, "config": dict(self.setting.config), "emulate": self.setting.emulate}
        (out / EVALUATION_FILE).write_text(json.dumps(measured, indent=2, sort_keys=True) + "\n")

    def _runner(self, inputs: StepInputs) -> Runner:
        from modelc_build.backends import get_backend

        artifact = inputs.entry(compile_step_id(self.target))
        files = [artifact.file(name) for name in artifact.files]
        return get_backend(self.target.backend).runner(files, self.evaluation.inputs, self.outputs, dict(self.setting.config),
                                                       inputs.threads)

    def measure(self, inputs: StepInputs) -> dict[str, Any]:
        from modelc_build.accuracy import compare, evaluation_to_dict

        runner = self._runner(inputs)
        pairs = stored_reference_outputs(inputs.entry(REFERENCE_STEP).path, inputs.batches(self.evaluation))
        with runner:
            evaluation = compare(pairs, {self.target.id: runner}, self.evaluation.inputs, self.outputs, self.task,
                                 mask_input(self.evaluation))
            runtime = runner.effective_settings()
            golden = self._golden_check(inputs, runner) if self.golden else None
        return {**evaluation_to_dict(evaluation[self.target.id]), "runtime": runtime, "golden": golden}

    def _golden_check(self, inputs: StepInputs, runner: Runner) -> list[dict[str, Any]]:
        """The deploy-time check, here: the same function on the same files a deploy machine runs."""
        from modelc_build.golden import GoldenSet, measure

        golden = GoldenSet.load(inputs.entry(GOLDEN_STEP).path)
        return [vars(m) for m in measure(runner.infer, golden, self.outputs)] if golden.samples else []

    def measure_emulated(self, inputs: StepInputs, out: Path) -> dict[str, Any]:
        """The artifact on an emulated CPU, on the first evaluation samples that fit the budget,
        against the reference's outputs (computed natively) and against its own native run."""
        import tempfile

        from modelc_build.accuracy import evaluation_to_dict, output_agreement, score
        from modelc_build.emulation import INSTALL_HINT, run_emulated, service_name
        from modelc_build.feeds import ModelCaller

        cpu = self.setting.emulate
        assert cpu is not None
        if self.setting.emulator is None:
            return {**_empty(), "not_run": f"the {cpu} check did not run: no emulator ({'qemu-aarch64' if is_arm(cpu) else 'qemu-x86_64'}) "
                                           f"on this machine; install it ({INSTALL_HINT}) and build again"}
        if is_arm(cpu):
            from modelc_build.arm64 import ROOTS_SERVICE, use_roots

            use_roots(inputs.services.get(ROOTS_SERVICE))
        problem = _arm64_root_problem(cpu, self.target)
        if problem is not None:  # not cached: the next build tries again
            from modelc_build.cache import TRANSIENT_FILE

            (out / TRANSIENT_FILE).write_text(problem + "\n")
            return {**_empty(), "not_run": f"the {cpu} check did not run: {problem}"}
        pairs = list(islice(one_sample_at_a_time(stored_reference_outputs(
            inputs.entry(REFERENCE_STEP).path, inputs.batches(self.evaluation))), self.setting.samples))
        artifact = inputs.entry(compile_step_id(self.target))
        with tempfile.TemporaryDirectory(prefix="modelc-emulated-") as scratch:
            run = run_emulated(self.setting.emulator, cpu, self.target.backend, [artifact.file(name) for name in artifact.files],
                               dict(self.setting.config), self.evaluation.inputs, self.outputs,
                               [batch.inputs for batch, _ in pairs], self.setting.budget_s, Path(scratch),
                               inputs.services.get(service_name(self.setting.emulator, cpu, self.target.backend)),
                               inputs.threads)
        emulation = {"cpu": cpu, "features": run.features, "class": run.seen_class, "kernels": run.kernels[:8],
                     "samples": len(run.outputs), "samples_asked": self.setting.samples, "budget_s": self.setting.budget_s,
                     "startup_s": round(run.startup_s, 2), "inference_s": round(run.inference_s, 2),
                     "canary": run.canary.detail, "log": run.log_tail, "runtime": run.runtime, "process": run.process}
        if run.fault is not None:  # the artifact's own defect on this CPU: judged, and failed
            return {**_empty(), "emulation": emulation, "fault": run.fault}
        if run.broken:  # a setup defect: this build reports it; the next one tries again
            from modelc_build.cache import TRANSIENT_FILE

            (out / TRANSIENT_FILE).write_text(f"the emulated check could not run: {run.broken}\n")
            return {**_empty(), "emulation": emulation, "emulation_broken": run.broken}
        done = pairs[:len(run.outputs)]
        runner = self._runner(inputs)
        with runner:
            call = ModelCaller(self.evaluation.inputs, runner.infer)
            native = [call(batch.inputs) for batch, _ in done]
        wrong = _shape_fault(cpu, run.outputs, native)
        if wrong is not None:  # the artifact ran there and gave outputs of another shape: judged, and failed
            return {**_empty(), "emulation": emulation, "fault": wrong}
        produced = ((batch, expected, {"emulated": got, "native": here})
                    for (batch, expected), got, here in zip(done, run.outputs, native))
        evaluations = score(produced, ("emulated", "native"), self.outputs, self.task, whole_set=False,
                            mask=mask_input(self.evaluation))
        emulation["versus_native"] = [{"output": m.output, "cosine": m.cosine, "max_abs_error": m.max_abs_error}
                                      for m in output_agreement(run.outputs, native, self.outputs)]
        # the same samples on this machine: what a handful of samples scores natively, which the
        # emulated run is held to beside the gate (modelc_build/golden.py: tolerances)
        emulation["native_subset"] = [vars(m) for m in evaluations["native"].outputs]
        return {**evaluation_to_dict(evaluations["emulated"]), "emulation": emulation}


def mask_input(source: DataSource) -> str | None:
    """A token data set's attention-mask input: outputs per token are measured where it is 1."""
    dataset = source.dataset
    tokens = dataset.tokens if dataset is not None and dataset.format == "tokens" else None
    return tokens.mask if tokens is not None else None


def _empty() -> dict[str, Any]:
    return {"samples": 0, "outputs": [], "task": None}


def _shape_fault(cpu: str, emulated: list[dict[str, Any]], native: list[dict[str, Any]]) -> str | None:
    """An output the emulated CPU gave in another shape than this machine (OpenVINO's INT8
    MobileNetV2 on an emulated Cortex-A72 returned empty logits): what differs, or None."""
    for number, (there, here) in enumerate(zip(emulated, native)):
        for name, value in here.items():
            got = there.get(name)
            if got is None or tuple(got.shape) != tuple(value.shape):
                shape = "no output" if got is None else f"shape {list(got.shape)}"
                return (f"the artifact gave {shape} for '{name}' on {cpu} (sample {number}), where this machine gives "
                        f"shape {list(value.shape)}: it does not compute this model on that CPU")
    return None


def _arm64_root_problem(cpu: str, target: Target) -> str | None:
    """An ARM64 core needs the ARM64 root (prepared here on first use) and a runtime for the target
    there: why it cannot be had, or None."""
    if not is_arm(cpu):
        return None
    from modelc_build.backends import capabilities

    if capabilities(target.backend).no_arm_check:
        return capabilities(target.backend).no_arm_check
    from modelc_build.arm64 import prepare
    from modelc_build.errors import BackendUnavailable

    try:
        prepare()
    except BackendUnavailable as error:
        return error.message
    return None


@lru_cache(maxsize=4)
def _emulator_identity(executable: str | None) -> str:
    from modelc_build.emulation import emulator_identity

    return emulator_identity(executable)


def one_sample_at_a_time(pairs: Iterator[tuple[Batch, dict[str, np.ndarray]]]) -> Iterator[tuple[Batch, dict[str, np.ndarray]]]:
    """Evaluation batches with their reference outputs, cut into single samples, in order."""
    from modelc_build.data import Batch

    for batch, expected in pairs:
        for index in range(len(batch)):
            one = slice(index, index + 1)
            yield (Batch({name: array[one] for name, array in batch.inputs.items()}, batch.sources[one], batch.labels[one]),
                   {name: array[one] for name, array in expected.items()})
