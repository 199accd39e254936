"""The story of a build: recipe → plan → engine runs the steps → release → store.

1. `make_plan` draws the step graph from the recipe (modelc_build/plan.py);
2. the engine runs it: every step cached by its key material, ready steps side by side, each in a
   fresh process where it asks for one (modelc_build/engine.py); `--target` runs just that target's
   steps and what they need, and stops there (a fanned-out CI job);
3. the release applies the gates to the measurements, writes the reports and the manifest, signs,
   and hands the finished folder to the store (modelc_build/release.py).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from modelc_build.cache import Cache
from modelc_build.emulation import EmulationServices
from modelc_build.engine import Engine, MemoryBudget, RunSummary, start_fresh_process_server
from modelc_build.errors import InputError, ModelcError
from modelc_build.fingerprint import Fingerprints, check_disjoint
from modelc_build.plan import Plan, checked_cpus, data_source, make_plan, target_step_ids, verify_settings
from modelc_build.progress import BuildLog
from modelc_build.recipe import Recipe
from modelc_build.release import CompiledArtifact, Measured, Released, make_report, release, summary_lines
from modelc_build.report import Report
from modelc_build.steps import Step
from modelc_build.steps.compile import compile_step_id
from modelc_build.steps.qdq import QDQ_STEP
from modelc_build.steps.sensitivity import SENSITIVITY_STEP
from modelc_build.steps.verify import GOLDEN_STEP, VerifyStep

if TYPE_CHECKING:
    from modelc_build.signing import Signer
    from modelc_build.stores import Store

# What the fresh-process server imports once, so a step's process starts without paying for it.
PRELOAD = ("modelc_build.plan", "modelc_build.accuracy", "modelc_build.data", "modelc_build.tasks", "modelc_build.backends.openvino",
           "modelc_build.backends.onnxruntime", "modelc_build.backends.torchscript", "modelc_build.sources", "onnxruntime",
           "openvino", "torch", "PIL.Image", "onnx", "onnxsim")


@dataclass(frozen=True)
class BuildOptions:
    failed_reports_dir: Path
    force: bool = False
    share_steps: bool = False  # pull and push step outputs through the store's step cache
    only_targets: tuple[str, ...] = ()  # build just these targets' steps; no verify, no release
    jobs: int = 1  # steps run side by side
    signer: Signer | None = None  # sign the release before it goes to the store
    skip_unavailable: bool = False  # leave out engines this machine cannot build (the report lists them)
    max_memory: int | None = None  # bytes the build may hold at once (None: the memory this machine has available)


@dataclass(frozen=True)
class BuildResult:
    released: Released
    steps_run: int
    steps_cached: int

    @property
    def location(self) -> str:
        return self.released.location

    @property
    def created(self) -> bool:
        return self.released.created

    @property
    def report(self) -> Report:
        return self.released.report

    @property
    def manifest(self) -> dict[str, Any]:
        return self.released.manifest


BUILD_MODULES = ("numpy", "PIL", "onnx", "onnxsim", "onnxruntime")


def check_build_extra(recipe: Recipe) -> None:
    """A core install (pull, verify, validate) has none of the build libraries: say which extra."""
    import importlib.util

    from modelc_build.errors import BackendUnavailable

    needed = BUILD_MODULES + (("torch",) if recipe.model.kind != "onnx" else ())
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise BackendUnavailable(f"building needs {', '.join(missing)}, which this install lacks: run "
                                 "`pip install torch==2.13.0 'modelc-build[build]'` (the core install pulls and verifies only)")


def build(recipe: Recipe, store: Store, log: BuildLog, cache: Cache, options: BuildOptions) -> BuildResult | None:
    """Run the plan and release it; returns None when only some targets' steps were asked for."""
    check_build_extra(recipe)
    recipe, skipped = buildable_here(recipe, options.skip_unavailable)
    for line in skipped:
        log(f"  skipped: {line}")
    plan = make_plan(recipe)
    steps = plan.steps
    if options.only_targets:
        unknown = [t for t in options.only_targets if t not in {target.id for target in recipe.targets}]
        if unknown:
            raise InputError(f"--target {', '.join(unknown)}: the recipe builds {', '.join(t.id for t in recipe.targets)}")
        steps = plan.only(target_step_ids(recipe, options.only_targets))
    shared = store.step_cache() if options.share_steps else None
    if options.share_steps and shared is None:
        raise InputError("--share-steps: this store keeps no step cache")
    facts = Fingerprints(cache)
    _check_data(recipe, facts, log)
    engine = Engine(cache, log, jobs=options.jobs, force=options.force, shared=shared, preload=PRELOAD,
                    memory=memory_budget(recipe, options.max_memory))
    services = EmulationServices(emulated_checks(steps), engine.shared_threads())
    try:
        engine.before_first_run = lambda: _start_helpers(engine, services, steps)
        done = engine.run(steps, facts)
    except ModelcError as error:
        raise _logs_kept(error, options.failed_reports_dir / recipe.name / recipe.version) from error
    finally:
        services.stop()
        if shared is not None and hasattr(shared, "close"):
            shared.close()
    _note_export(done, log)
    counts = f"{len(done.ran)} step(s) run, {len(done.cached)} cached"
    if options.only_targets:
        log(f"✓ built {', '.join(options.only_targets)}: {counts}; verification and release happen in a full build")
        return None
    return _release(recipe, plan, done, store, log, options, counts, cache, facts, skipped)


def _start_helpers(engine: Engine, services: EmulationServices, steps: Sequence[Step]) -> None:
    """Once some step is about to run: the fork server (its imports overlap with the first step's
    work) and the warm emulated processes the plan's CPU checks will use."""
    if any(step.fresh_process for step in steps):
        start_fresh_process_server(PRELOAD)
    services.start()
    engine.services.update(services.addresses())


def memory_budget(recipe: Recipe, max_memory: int | None) -> MemoryBudget | None:
    """What steps side by side may hold: --max-memory, else what this machine has available now;
    None where the model's size or the machine's memory is unknown (a factory without weights)."""
    from modelc_build.processes import available_memory_bytes

    model = recipe.model
    source = model.weights if model.kind == "torch" else model.path
    limit = max_memory if max_memory is not None else available_memory_bytes()
    if source is None or not source.is_file() or limit is None:
        return None
    return MemoryBudget(limit, source.stat().st_size)


def emulated_checks(steps: Sequence[Step]) -> list[tuple[str, str, str]]:
    """(emulator, CPU model, backend) of every emulated check the steps hold."""
    return [(step.setting.emulator, step.setting.emulate, step.target.backend) for step in steps
            if isinstance(step, VerifyStep) and step.setting.emulate and step.setting.emulator]


def _logs_kept(error: ModelcError, folder: Path) -> ModelcError:
    """Long logs a failed step left (an exporter's IR dump) go to files beside the failed report,
    and the one-line message names the file."""
    from modelc_build.engine import StepsFailed

    failures = error.failures if isinstance(error, StepsFailed) else [(getattr(error, "step_id", ""), error)]
    pointers = []
    for step_id, failure in failures:
        details = getattr(failure, "details", None)
        if details:
            folder.mkdir(parents=True, exist_ok=True)
            log = folder / f"{(step_id or 'build').replace(':', '-')}.log"
            log.write_text(details)
            pointers.append(str(log))
    if not pointers:
        return error
    error.message = f"{error.message} (full log: {', '.join(pointers)})"
    error.args = (error.message,)
    return error


def buildable_here(recipe: Recipe, skip_unavailable: bool) -> tuple[Recipe, list[str]]:
    """The recipe with only the engines this machine can build. A GPU generation nobody here can
    build (or engines that must be verified on a GPU this machine lacks) is exit 6 naming it and
    where it can be built; with `skip_unavailable` it is left out and listed instead."""
    from modelc_build.errors import BackendUnavailable
    from modelc_build.gpus import engine_builder, not_run_reason, runnable_here

    targets, problems = [], []
    for target in recipe.targets:
        if target.backend != "tensorrt":
            targets.append(target)
            continue
        unbuildable = {gpu: engine_builder(gpu).reason for gpu in target.gpus if engine_builder(gpu).flavour is None}
        problems += [f"{target.id}: {reason}" for reason in unbuildable.values()]
        kept = tuple(gpu for gpu in target.gpus if gpu not in unbuildable)
        if kept and target.verify_on_gpu and runnable_here(kept) is None:
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


def _release(recipe: Recipe, plan: Plan, done: RunSummary, store: Store, log: BuildLog, options: BuildOptions,
             counts: str, cache: Cache, facts: Fingerprints, skipped: list[str]) -> BuildResult:
    measured = Measured(graph=done.entries[plan.graph], qdq=done.entries.get(QDQ_STEP), golden=done.entries.get(GOLDEN_STEP),
                        artifacts=[CompiledArtifact(t, done.entries[compile_step_id(t)]) for t in recipe.targets],
                        entries=done.entries, settings={t.id: verify_settings(recipe, t) for t in recipe.targets},
                        cpus=checked_cpus(recipe), skipped=skipped)
    report = replace(make_report(recipe, measured, SENSITIVITY_STEP, data_summary(recipe, facts)),
                     steps=step_costs(plan, done))
    for line in summary_lines(report):
        log(line)
    staging = Path(tempfile.mkdtemp(prefix=f"release-{recipe.name}-", dir=cache.root))
    try:
        released = release(recipe, measured, report, store, staging, options.failed_reports_dir, options.signer, log)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{'✓ release' if released.created else '✓ release (identical version already stored)'}: {counts}")
    return BuildResult(released, len(done.ran), len(done.cached))


def step_costs(plan: Plan, done: RunSummary) -> dict[str, Any]:
    """Per step of the plan, in plan order: ran here (wall seconds, peak memory of its own process)
    or cached; and the build process's own peak, which the in-process steps share."""
    from modelc_build.processes import peak_memory_bytes

    def mib(size: int | None) -> float | None:
        return None if size is None else round(size / 2**20, 1)

    rows = []
    for step in plan.steps:
        if step.id not in done.entries:
            continue
        cost = done.costs.get(step.id)
        rows.append({"id": step.id, "ran": cost is not None, "seconds": None if cost is None else round(cost.seconds, 2),
                     "peak_rss_mib": None if cost is None else mib(cost.peak_rss_bytes)})
    return {"steps": rows, "build_process_peak_rss_mib": mib(peak_memory_bytes())}


def _note_export(done: RunSummary, log: BuildLog) -> None:
    """Say when exporter auto fell back, and why (the export step runs in its own process)."""
    import json

    from modelc_build.steps.export import EXPORT_NOTES, EXPORT_STEP

    entry = done.entries.get(EXPORT_STEP)
    if entry is None or EXPORT_NOTES not in entry.files:
        return
    reason = json.loads(entry.file(EXPORT_NOTES).read_text()).get("fallback_reason")
    if reason:
        log(f"note: torch.export could not capture the model ({reason}); exported with the TorchScript-based "
            "exporter instead (export.exporter: auto)")


MIN_CALIBRATION_SAMPLES = 32  # NNCF's statistics degraded visibly at 8 samples


def _check_data(recipe: Recipe, facts: Fingerprints, log: BuildLog) -> None:
    """Before any work: the data roles are disjoint, and int8 has enough calibration samples."""
    check_disjoint([data_source(recipe, role) for role in ("calibration", "validation", "evaluation")], facts)
    calibration = data_source(recipe, "calibration")
    if calibration.dataset is not None and any(t.precision == "int8" for t in recipe.targets):
        count = facts.samples(calibration)
        if count < MIN_CALIBRATION_SAMPLES:
            log(f"warning: data.calibration holds {count} samples; INT8 statistics want at least "
                f"{MIN_CALIBRATION_SAMPLES} (NNCF degraded at 8)")


def data_summary(recipe: Recipe, facts: Fingerprints) -> dict[str, Any]:
    """Each data set's role, path (as the recipe names it), sample count and digest."""
    import os

    summary: dict[str, Any] = {}
    for role in ("calibration", "validation", "evaluation"):
        source = data_source(recipe, role)
        if source.dataset is None:
            continue
        summary[role] = {"path": os.path.relpath(source.dataset.path, recipe.path.parent), "samples": facts.samples(source),
                         "digest": facts.data(source)["digest"], "note": source.note}
    return summary
