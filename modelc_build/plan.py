"""A recipe becomes a plan: the one step graph of a build. Nothing else encodes the order of steps;
the engine runs whatever this draws, and `modelc plan` shows it.

```
export ─ simplify ─┬─ compile:<target> ──────┬─ verify:<target> ─┐
                   ├─ quantize:qdq ─ compile:<int8 target on the Q/DQ graph> ─ ... ├─ (release)
                   ├─ sensitivity             ├─ latency:<target> ┤
reference ─────────┴── (every verify)          └─ worth:<mixed int8> ┘
                                               latency:reference
```

A plan is a function of the recipe, the backends' tables (modelc_build/backends/) and the host
facts it is given (`probe_host()` reads this machine's): what a target compiles from, whether its
INT8 is checked on emulated CPUs, which runtime settings it is measured under, all come from the
target's backend table, never from a list of backend names here.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from modelc_build.arm64 import is_arm
from modelc_build.backends import Capabilities, capabilities
from modelc_build.fingerprint import DataSource
from modelc_build.host import EMULATED_CLASSES, HostFacts
from modelc_build.recipe_types import Recipe, Target
from modelc_build.steps import Step
from modelc_build.steps.autocast import AUTOCAST_STEP, AutocastStep
from modelc_build.steps.compile import AccuracyControlSpec, CompileStep, FallbackSpec, compile_step_id
from modelc_build.steps.decode import DecodeStep, decodes
from modelc_build.steps.export import EXPORT_STEP, ExportStep
from modelc_build.steps.golden import GoldenStep
from modelc_build.steps.latency import LatencyStep
from modelc_build.steps.qdq import MODES, QDQ_STEP, QdqStep, qdq_step_id
from modelc_build.steps.sensitivity import SENSITIVITY_STEP, SensitivityStep
from modelc_build.steps.simplify import SIMPLIFY_STEP, SimplifyStep
from modelc_build.steps.verify import ReferenceStep, Setting, VerifyStep
from modelc_build.steps.worth import WorthStep

RELEASE_STEP = "release"


@dataclass(frozen=True)
class Plan:
    recipe_name: str
    version: str
    steps: tuple[Step, ...]
    graph: str  # the id of the step whose model.onnx is the release's ONNX graph
    host: HostFacts = HostFacts()  # the facts it was made with

    def only(self, step_ids: list[str]) -> tuple[Step, ...]:
        """These steps and everything they need, in plan order."""
        wanted = set(step_ids)
        for step in reversed(self.steps):
            if step.id in wanted:
                wanted.update(step.needs)
        return tuple(step for step in self.steps if step.id in wanted)


def probe_host() -> HostFacts:
    """This machine's facts, for a plan made here."""
    from modelc_build import arm64
    from modelc_build.emulation import emulator
    from modelc_build.gpus import FLAVOURS, FULL, GENERATIONS, RTX, engine_builder, installed, local_gpus

    runtime = installed(FULL) or installed(RTX)
    return HostFacts.of_cpu(emulator(), local_gpus() if runtime else (),
                            tuple(engine_builder(gpu, flavour) for gpu in GENERATIONS for flavour in FLAVOURS), arm64.emulator())


def table(target: Target) -> Capabilities:
    return capabilities(target.backend)


def source_graph(target: Target) -> str:
    """What the target compiles from: onnx (the simplified graph), qdq, autocast, or torch."""
    return table(target).graph(target.precision)


def uses_qdq_graph(target: Target) -> bool:
    return source_graph(target) == "qdq"


def uses_autocast_graph(target: Target) -> bool:
    return source_graph(target) == "autocast"


def measures_latency(target: Target, host: HostFacts) -> bool:
    """GPU engines are timed only where their GPU is (their source graph's CPU speed says nothing)."""
    return not table(target).gpu or any(gpu in host.gpus for gpu in target.gpus)


VALIDATION_SPLIT = 4  # without data.validation, tuning reads every 4th calibration sample


def data_source(recipe: Recipe, role: str) -> DataSource:
    """One of the three data roles; validation falls back to a split of the calibration set."""
    inputs, preprocess, classes = recipe.model.inputs, recipe.preprocess, recipe.task.classes
    if role == "validation" and recipe.validation is None:
        return DataSource(role, recipe.calibration, inputs, preprocess, classes, every=VALIDATION_SPLIT,
                          note=f"every {VALIDATION_SPLIT}th sample of data.calibration (the recipe has no data.validation)")
    dataset = {"calibration": recipe.calibration, "validation": recipe.validation, "evaluation": recipe.evaluation}[role]
    return DataSource(role, dataset, inputs, preprocess, classes)


def accuracy_controlled(recipe: Recipe, target: Target) -> bool:
    """An int8 target whose backend can tune to the task metric, and whose recipe gates the
    metric's drop, is quantized with accuracy control, on labelled validation data (never the
    evaluation set)."""
    gate = recipe.gate_for(target.precision)
    tuning = data_source(recipe, "validation").dataset
    return (table(target).accuracy_control and target.precision == "int8" and gate.max_metric_drop is not None
            and recipe.task.type in ("classification", "detection") and tuning is not None and tuning.labels != "none")


def make_plan(recipe: Recipe, host: HostFacts) -> Plan:
    model = recipe.model
    steps: list[Step] = [ExportStep(model, recipe.export)]
    graph = EXPORT_STEP
    if recipe.export.simplify:
        steps.append(SimplifyStep(model.inputs))
        graph = SIMPLIFY_STEP
    int8 = any(t.precision == "int8" for t in recipe.targets)
    if recipe.quantization.sensitivity_layers and int8:
        steps.append(SensitivityStep(graph, data_source(recipe, "calibration"), data_source(recipe, "validation"),
                                     recipe.task, model.outputs, recipe.quantization))
    for kind, mode in MODES.items():
        if any(source_graph(t) == kind for t in recipe.targets):
            steps.append(QdqStep(graph, data_source(recipe, "calibration"), recipe.quantization, mode))
    if any(uses_autocast_graph(t) for t in recipe.targets):
        steps.append(AutocastStep(graph))
    compiles = [_compile_step(recipe, target, graph, host) for target in recipe.targets]
    steps += compiles
    evaluation = data_source(recipe, "evaluation")
    if decodes(evaluation):
        steps.append(DecodeStep(evaluation))
    steps.append(ReferenceStep(model, evaluation))
    golden = recipe.verify.golden_samples > 0
    if golden:
        steps.append(GoldenStep(evaluation, model.outputs, recipe.verify.golden_samples,
                                int(recipe.verify.golden_max_mb * 2**20)))
    for target in recipe.targets:
        for setting in verify_settings(recipe, target, host):
            steps.append(VerifyStep(target, evaluation, recipe.task, model.outputs, setting, golden and setting.name == "deploy"))
    steps += [WorthStep(c.target, c.graph, model, evaluation, deploy_config(recipe, c.target)) for c in compiles
              if c.fallback is not None]
    if recipe.latency.runs > 0:
        steps.append(LatencyStep(None, model, evaluation, recipe.latency))
        for target in recipe.targets:
            if measures_latency(target, host):
                steps.append(LatencyStep(target, model, evaluation, recipe.latency, deploy_config(recipe, target)))
    return Plan(recipe.name, recipe.version, tuple(steps), graph, host)


def deploy_config(recipe: Recipe, target: Target) -> tuple[tuple[str, str], ...]:
    """The runtime settings a deploy stage passes with this artifact (recorded in the manifest)."""
    precision = recipe.verify.openvino_inference_precision
    if table(target).precision_hint and precision != "default":
        return (("INFERENCE_PRECISION_HINT", precision),)
    return ()


def emulated_cpus(recipe: Recipe, target: Target, host: HostFacts) -> list[tuple[str, str]]:
    """Each CPU model of `verify.cpus` with what happens for this target: `emulate`, `native` (the
    build machine is of that class: its native run is that check), or none (not an INT8 artifact
    whose kernels differ by CPU class)."""
    found = table(target)
    if not found.emulated_code and (target.precision != "int8" or not found.emulated_int8):
        return []
    cpus = [cpu for cpu in recipe.verify.cpus if not (found.x86_only and is_arm(cpu))]
    return [(cpu, "native" if EMULATED_CLASSES.get(cpu) == host.cpu_class and not recipe.verify.emulate_host_class
             else "emulate") for cpu in cpus]


def checked_cpus(recipe: Recipe, host: HostFacts) -> list[dict[str, str]] | None:
    """verify.cpus as this build treats them, for the report: emulated, or covered by the build
    machine's own class."""
    seen: dict[str, str] = {}
    for target in recipe.targets:
        seen.update(emulated_cpus(recipe, target, host))
    if not seen:
        return None
    return [{"cpu": cpu, "class": EMULATED_CLASSES.get(cpu, "unknown"), "how": how, "build_machine_class": host.cpu_class}
            for cpu, how in seen.items()]


def verify_settings(recipe: Recipe, target: Target, host: HostFacts) -> list[Setting]:
    """As deployed (gated); a runtime whose CPU plugin may compute FP32 in lower precision also
    under the other precision setting where this CPU would compute differently (its bf16 default
    beside a pinned f32, or f32 beside the plugin's default), reported beside; INT8 also on each
    emulated CPU of `verify.cpus`, gated."""
    deploy = Setting("deploy", deploy_config(recipe, target))
    settings = [deploy]
    precision = recipe.verify.openvino_inference_precision
    if table(target).precision_hint:
        if precision == "f32" and host.low_precision_float:
            settings.append(Setting("runtime-default"))
        elif precision != "f32" and (precision != "default" or host.low_precision_float):
            settings.append(Setting("f32", (("INFERENCE_PRECISION_HINT", "f32"),)))
    for cpu, how in emulated_cpus(recipe, target, host):
        if how == "emulate":
            settings.append(Setting(cpu.lower(), deploy.config, cpu, host.emulator_for(cpu), recipe.verify.emulated_samples,
                                    recipe.verify.emulation_budget_s))
    return settings


# "torch": waits for the export's input checks
GRAPH_STEPS = {"torch": EXPORT_STEP, "autocast": AUTOCAST_STEP, **{kind: qdq_step_id(mode) for kind, mode in MODES.items()}}


def _compile_step(recipe: Recipe, target: Target, graph: str, host: HostFacts) -> CompileStep:
    source = GRAPH_STEPS.get(source_graph(target), graph)
    calibration = None
    if target.precision == "int8" and not uses_qdq_graph(target):
        calibration = data_source(recipe, "calibration")
    control = None
    if accuracy_controlled(recipe, target):
        max_drop = recipe.gate_for(target.precision).max_metric_drop
        assert max_drop is not None
        control = AccuracyControlSpec(max_drop, recipe.task, recipe.task.output or recipe.model.outputs[0],
                                      data_source(recipe, "validation"))
    return CompileStep(target, source, recipe.model, calibration, recipe.quantization, control,
                       cpu_variants(recipe, target, host), fallback_spec(recipe, target))


FALLBACK_MARGIN = 0.25  # tune to hold the gate with this share of its allowance (1 - min_cosine) to spare


def fallback_spec(recipe: Recipe, target: Target) -> FallbackSpec | None:
    """An int8 target of a backend that can keep layers in float, whose recipe gates the output
    cosine, tunes a mixed graph on the validation data where full INT8 misses that gate. It tunes
    to a little above the gate: a graph that holds it just on ~64 validation samples missed it on
    the evaluation set (OpenVINO MobileNetV2 at min_cosine 0.99: 0.9919 tuned, 0.9890 judged)."""
    min_cosine = recipe.gate_for(target.precision).min_cosine
    if (target.precision != "int8" or not table(target).mixed_precision or recipe.quantization.fallback != "auto"
            or min_cosine is None or data_source(recipe, "validation").dataset is None):
        return None
    aim = min(1.0, min_cosine + FALLBACK_MARGIN * (1.0 - min_cosine))
    spec = FallbackSpec(round(aim, 6), data_source(recipe, "validation"), recipe.quantization.fallback_layers)
    max_drop = recipe.gate_for(target.precision).max_metric_drop
    if max_drop is None or recipe.task.type in ("generic", "none") or accuracy_controlled(recipe, target):
        return spec
    # the recipe gates the task metric's drop too: the search holds both (a CTC recogniser's INT8
    # kept cosine 0.989 and lost 21 points of line identity)
    return replace(spec, task=recipe.task, output=recipe.task.output or recipe.model.outputs[0],
                   max_drop=round(max_drop * (1.0 - FALLBACK_MARGIN), 6))


def cpu_variants(recipe: Recipe, target: Target, host: HostFacts) -> tuple[str, ...]:
    """An int8 target gets its backend's VNNI layout beside the portable one where the build
    machine can verify it (it has VNNI; QEMU cannot emulate VNNI) and the recipe wants it."""
    wanted = "vnni" in table(target).cpu_variants and target.precision == "int8" and recipe.quantization.onnxruntime_vnni
    return ("vnni",) if wanted and host.vnni else ()


def buildable(recipe: Recipe, host: HostFacts, skip_unavailable: bool) -> tuple[Recipe, list[str]]:
    """The recipe with only the engines this machine can build. A GPU generation nobody here can
    build (or engines that must be verified on a GPU this machine lacks) is exit 6 naming it and
    where it can be built; with `skip_unavailable` it is left out and listed instead."""
    from modelc_build.errors import BackendUnavailable
    from modelc_build.gpus import not_run_reason

    targets, problems = [], []
    for target in recipe.targets:
        if not table(target).gpu:
            targets.append(target)
            continue
        builders = {gpu: host.engine_builder(gpu, target.flavour) for gpu in target.gpus}
        unbuildable = {gpu: builder.reason for gpu, builder in builders.items() if builder.flavour is None}
        problems += [f"{target.id}: {reason}" for reason in unbuildable.values()]
        kept = tuple(gpu for gpu in target.gpus if gpu not in unbuildable)
        if kept and target.verify_on_gpu and not any(gpu in host.gpus for gpu in kept):
            problems.append(f"{target.id}: the recipe requires its engines verified on their GPU (verify_on_gpu), and "
                            f"{not_run_reason(kept)}: build it on the GPU runner, or leave it out with --skip-unavailable")
            kept = ()
        if kept:
            targets.append(replace(target, gpus=kept))
    if problems and not skip_unavailable:
        raise BackendUnavailable("; ".join(problems))
    if len(targets) == len(recipe.targets) and not problems:
        return recipe, []
    if not targets:
        raise BackendUnavailable("nothing left to build here: " + "; ".join(problems))
    return replace(recipe, targets=tuple(targets)), problems


STAGES = ("prepare", "target", "release")  # the job kinds of a fanned-out pipeline (`modelc build --stage`)


def job_of(step: Step) -> str:
    """The job of a fanned-out pipeline that makes a step: its target's job, else prepare (export,
    simplify, decoding, the reference, the golden set, graphs several targets share)."""
    target = getattr(step, "target", None)
    return f"target {target.id}" if target is not None else "prepare"


def stage_steps(plan: Plan, stage: str, targets: tuple[str, ...] = ()) -> tuple[tuple[Step, ...], dict[str, str]]:
    """The steps a job of `stage` walks, and of them those another job makes (id -> that job),
    which must come from the step cache: prepare runs the shared steps; target runs its targets'
    steps (compile, verification natively and on emulated CPUs, latency) on what prepare made;
    release runs nothing, reading every measurement from the cache."""
    if stage == "prepare":
        steps = tuple(step for step in plan.steps if job_of(step) == "prepare")
        return steps, {}
    if stage == "target":
        mine = {step.id for step in plan.steps if job_of(step) in {f"target {t}" for t in targets}}
        steps = plan.only(sorted(mine))
    else:
        mine, steps = set(), plan.steps
    return steps, {step.id: job_of(step) for step in steps if step.id not in mine}


def job_extras(recipe: Recipe, job: str) -> list[str]:
    """What a job installs beyond modelc's core: prepare loads the model (torch for a torch source)
    and makes the shared graphs (ModelOpt for Q/DQ and AutoCast); a target job compiles from cached
    graphs (`graph`: NumPy, ONNX, onnxruntime, no torch) with its backend's extra; release needs
    NumPy beside the core (`release`)."""
    if job == "release":
        return ["release"]
    if job == "prepare":
        extras = ["build"] if recipe.model.kind != "onnx" else ["graph"]
        if any(source_graph(t) != "onnx" and source_graph(t) != "torch" for t in recipe.targets):
            extras.append("modelopt")
        return extras
    target = next(t for t in recipe.targets if f"target {t.id}" == job)
    extra = table(target).build_extra
    return ["graph", *(["build"] if source_graph(target) == "torch" else []), *([extra] if extra else [])]


def pipeline_jobs(plan: Plan, recipe: Recipe) -> list[dict[str, Any]]:
    """The prepare, target and release jobs of one recipe with the steps each runs, the expected
    step-seconds and peak memory (from the steps' hints: seconds on a small model on 2 cores,
    multiples of the model's size) and the extras each installs."""
    source = recipe.model.model_file
    model_mib = source.stat().st_size / 2**20 if source is not None and source.is_file() else None
    jobs: dict[str, list[Step]] = {"prepare": []}
    for target in recipe.targets:
        jobs[f"target {target.id}"] = []
    for step in plan.steps:
        jobs[job_of(step)].append(step)
    rows = []
    for job, steps in [*jobs.items(), ("release", [])]:
        peak = max((step.memory_peak_hint for step in steps), default=0.0)
        rows.append({"job": job, "kind": job.split()[0], "target": job.split()[1] if " " in job else None,
                     "steps": [step.id for step in steps], "expected_step_seconds": round(sum(s.cost_hint for s in steps), 1),
                     "expected_peak_mib": round(peak * model_mib, 1) if model_mib else None,
                     "extras": job_extras(recipe, job)})
    return rows


def critical_path(jobs: list[dict[str, Any]]) -> dict[str, float]:
    """Prepare, then the longest target job, then release (each job's steps run one after the
    other at worst): what N runners can bring the pipeline down to, against the sum of all jobs."""
    seconds = {job["kind"]: 0.0 for job in jobs}
    for job in jobs:
        seconds[job["kind"]] = max(seconds[job["kind"]], job["expected_step_seconds"]) if job["kind"] == "target" \
            else seconds[job["kind"]] + job["expected_step_seconds"]
    total = sum(job["expected_step_seconds"] for job in jobs)
    longest = sum(seconds.values())
    return {"total_step_seconds": round(total, 1), "critical_path_seconds": round(longest, 1),
            "speedup_with_a_runner_per_job": round(total / longest, 2) if longest else 1.0}


def gpu_engine_verdicts(recipe: Recipe, host: HostFacts) -> list[dict[str, Any]]:
    """Per GPU target and generation: the flavour that builds its engine, whether that flavour runs
    the precision there (modelc_build.gpus.PRECISION_TABLE), whether this machine builds it, and
    whether it can run it here (its GPU present)."""
    from modelc_build.gpus import planned_flavour, precision_verdict

    rows = []
    for target in recipe.targets:
        if not table(target).gpu:
            continue
        for gpu in target.gpus:
            builder = host.engine_builder(gpu, target.flavour)
            verdict = precision_verdict(gpu, target.precision, target.flavour)
            rows.append({"target": target.id, "gpu": gpu, "flavour": planned_flavour(gpu, target.flavour),
                         "runs": verdict is None, "why_not": verdict, "built_here": builder.flavour is not None,
                         "build_problem": builder.reason or None, "run_here": gpu in host.gpus})
    return rows


def target_step_ids(recipe: Recipe, target_ids: tuple[str, ...]) -> list[str]:
    return [compile_step_id(t) for t in recipe.targets if t.id in target_ids]


def ci_matrix(recipes: list[tuple[str, Recipe]]) -> dict[str, list[dict[str, str]]]:
    """A GitHub Actions matrix: one job per recipe x target. Jobs run
    `modelc build RECIPE --target TARGET --share-steps`; export and simplify are shared through
    the store's step cache, and a final `modelc build RECIPE --share-steps` verifies and releases.
    A TensorRT target runs on a GPU runner only where it must: a generation TensorRT for RTX does
    not build (sm90, sm100), or engines that must be verified on their GPU."""
    include = []
    for path, recipe in recipes:
        for target in recipe.targets:
            include.append({"recipe": path, "name": recipe.name, "version": recipe.version, "target": target.id,
                            "runner": "gpu" if needs_gpu_runner(target) else "cpu"})
    return {"include": include}


def needs_gpu_runner(target: Target) -> bool:
    from modelc_build.gpus import RTX_TARGETS

    return table(target).gpu and (target.verify_on_gpu or target.flavour == "tensorrt"
                                  or any(g not in RTX_TARGETS for g in target.gpus))


__all__ = ["Plan", "make_plan", "probe_host", "ci_matrix", "uses_qdq_graph", "RELEASE_STEP", "SENSITIVITY_STEP", "QDQ_STEP"]
