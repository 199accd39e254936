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
from modelc_build.engine import Engine, MemoryBudget, RunSummary
from modelc_build.errors import InputError, ModelcError
from modelc_build.fingerprint import Fingerprints, check_disjoint
from modelc_build.host import HostFacts
from modelc_build.plan import Plan, buildable, checked_cpus, data_source, make_plan, stage_steps, target_step_ids, verify_settings
from modelc_build.progress import BuildLog
from modelc_build.recipe_types import Recipe
from modelc_build.release import CompiledArtifact, Measured, Released, assemble_report, keep_reports, make_report, release, summary_lines
from modelc_build.steps import Step
from modelc_build.steps.compile import compile_step_id
from modelc_build.steps.qdq import QDQ_STEP
from modelc_build.steps.sensitivity import SENSITIVITY_STEP
from modelc_build.steps.verify import GOLDEN_STEP, REFERENCE_STEP, VerifyStep
from modelc_build.workers import start_fresh_process_server

if TYPE_CHECKING:
    from modelc_build.signing import Signer
    from modelc_build.stores import Store

# What the fresh-process server imports once, so a step's process starts without paying for it: these,
# then each target's backend module and its runtimes (its table's `preload`), then LIBRARIES. The
# runtimes come first: OpenVINO starts a thread at import that imports more, and a fork while it
# holds an import lock deadlocks the child.
PRELOAD = ("modelc_build.plan", "modelc_build.accuracy", "modelc_build.data", "modelc_build.tasks", "modelc_build.sources",
           "modelc_build.backends.onnxruntime")
LIBRARIES = ("onnxruntime", "torch", "PIL.Image", "onnx", "onnxsim")


@dataclass(frozen=True)
class BuildOptions:
    failed_reports_dir: Path
    force: bool = False
    share_steps: bool = False  # pull and push step outputs through the store's step cache
    only_targets: tuple[str, ...] = ()  # build just these targets' steps; no verify, no release
    stage: str | None = None  # a fanned-out pipeline's job: prepare | target (with only_targets) | release
    job_records: Path | None = None  # a folder of the pipeline's job records: read (earlier jobs' keys), this job's written
    expect_class: str | None = None  # the CPU class this job was routed to (a runner label): another one fails
    jobs: int = 1  # steps run side by side
    signer: Signer | None = None  # sign the release before it goes to the store
    skip_unavailable: bool = False  # leave out engines this machine cannot build (the report lists them)
    max_memory: int | None = None  # bytes the build may hold at once (None: the memory this machine has available)


@dataclass(frozen=True)
class BuildRun:
    """What the story did: the release (None when only some targets' steps were asked for) and the
    steps that ran or came from a cache. `modelc_build.api.BuildResult` is what callers see."""

    released: Released | None
    steps_run: int
    steps_cached: int
    step_seconds: float = 0.0  # the wall seconds of the steps this build ran, summed
    peak_mib: float | None = None  # the largest peak of a step process it ran


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


def build(recipe: Recipe, store: Store, log: BuildLog, cache: Cache, options: BuildOptions, host: HostFacts) -> BuildRun:
    """Run the plan made for `host` and release it (unless only some targets' steps were asked for,
    or a prepare or target job of a fanned-out pipeline)."""
    _check_class(host, options.expect_class)
    if options.stage == "release" and options.job_records is not None:
        measured = measured_on(options.job_records)
        if measured is not None:  # plan the native checks' keys of the CPU the target jobs measured on
            host = host.with_cpu_facts(measured)
    if options.stage in (None, "prepare"):  # later jobs read the model's graphs from the cache
        check_build_extra(recipe)
    recipe, skipped = buildable(recipe, host, options.skip_unavailable)
    for line in skipped:
        log(f"  skipped: {line}")
    plan = make_plan(recipe, host)
    steps = plan.steps
    if options.only_targets:
        unknown = [t for t in options.only_targets if t not in {target.id for target in recipe.targets}]
        if unknown:
            raise InputError(f"--target {', '.join(unknown)}: the recipe builds {', '.join(t.id for t in recipe.targets)}")
        if options.stage is None:
            steps = plan.only(target_step_ids(recipe, options.only_targets))
    made_elsewhere: dict[str, str] = {}
    if options.stage is not None:
        if options.stage == "target" and not options.only_targets:
            raise InputError("--stage target needs --target: the target this job measures")
        steps, made_elsewhere = stage_steps(plan, options.stage, options.only_targets)
    shared = store.step_cache() if options.share_steps else None
    if options.share_steps and shared is None:
        raise InputError("--share-steps: this store keeps no step cache")
    facts = Fingerprints(cache)
    _check_data(recipe, facts, log)
    engine = Engine(cache, log, jobs=options.jobs, force=options.force and not made_elsewhere, shared=shared,
                    preload=preload(recipe), memory=memory_budget(recipe, options.max_memory))
    engine.made_elsewhere = made_elsewhere
    engine.recorded_keys = read_job_keys(options.job_records) if options.job_records else {}
    services = EmulationServices(emulated_checks(steps), engine.shared_threads())
    try:
        engine.before_first_run = lambda: _start_helpers(engine, services, steps)
        done = engine.run(steps, facts)
    except ModelcError as error:
        error = _logs_kept(error, engine.failures, options.failed_reports_dir / recipe.name / recipe.version)
        if not options.only_targets:
            error = _partial_report(recipe, plan, engine.summary, engine.failures, options, log, facts, skipped, error)
        raise error from None
    finally:
        services.stop()
        if shared is not None and hasattr(shared, "close"):
            shared.close()
    counts = f"{len(done.ran)} step(s) run, {len(done.cached)} cached"
    if options.stage is not None and options.job_records is not None:
        write_job_record(options.job_records, options.stage, options.only_targets, host,
                         {step.id: done.entries[step.id].key for step in steps if step.id not in made_elsewhere})
    seconds = round(sum(cost.seconds for cost in done.costs.values()), 2)
    peaks = [cost.peak_rss_bytes for cost in done.costs.values() if cost.peak_rss_bytes is not None]
    peak = round(max(peaks) / 2**20, 1) if peaks else None
    if options.stage in ("prepare", "target"):
        what = "prepare" if options.stage == "prepare" else f"target {', '.join(options.only_targets)}"
        log(f"✓ {what} job: {counts}; the release job reads them from the step cache")
        return BuildRun(None, len(done.ran), len(done.cached), seconds, peak)
    if options.only_targets and options.stage is None:
        log(f"✓ built {', '.join(options.only_targets)}: {counts}; verification and release happen in a full build")
        return BuildRun(None, len(done.ran), len(done.cached), seconds, peak)
    return BuildRun(_release(recipe, plan, done, store, log, options, counts, cache, facts, skipped), len(done.ran),
                    len(done.cached), seconds, peak)


def _partial_report(recipe: Recipe, plan: Plan, done: RunSummary, failures: list[tuple[str, BaseException]],
                    options: BuildOptions, log: BuildLog, facts: Fingerprints, skipped: list[str], error: ModelcError) -> ModelcError:
    """A step of some target failed: the targets whose steps all finished still get their verdicts
    printed and a report kept beside the failed build (the failure listed in it), so that one broken
    target does not hide what the others measured. Nothing is released."""
    measured_targets = [t for t in recipe.targets
                        if all(step.id in done.entries for step in plan.steps if getattr(step, "target", None) == t)]
    if not measured_targets or plan.graph not in done.entries or REFERENCE_STEP not in done.entries:
        return error
    unmeasured = [f"{step_id}: {str(failure).splitlines()[0] if str(failure) else type(failure).__name__}"
                  for step_id, failure in failures]
    partial = replace(recipe, targets=tuple(measured_targets))
    measured = _measured(partial, plan, done, skipped)
    try:
        report = replace(make_report(partial, measured, SENSITIVITY_STEP, data_summary(recipe, facts)),
                         steps=step_costs(plan, done), failed_steps=unmeasured)
        for line in summary_lines(report):
            log(line)
        staging = Path(tempfile.mkdtemp(prefix=f"partial-{recipe.name}-", dir=Path(tempfile.gettempdir())))
        try:
            folder = staging / "release"
            assemble_report(folder, measured, report)
            kept = keep_reports(folder, options.failed_reports_dir / recipe.name / recipe.version)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except (ModelcError, OSError, KeyError, ValueError):  # the failure is what to see, not a second one
        return error
    return error.with_report(report, kept).amended(f" (the other targets' report: {kept / 'report.md'})")


def job_record_name(stage: str, targets: tuple[str, ...]) -> str:
    return stage if stage != "target" else f"target-{'-'.join(targets)}"


def write_job_record(folder: Path, stage: str, targets: tuple[str, ...], host: HostFacts, keys: dict[str, str]) -> Path:
    """What a job of a fanned-out pipeline did, for the jobs after it: the CPU it measured on and
    the key of each step it made (a later job, with other extras installed, looks its steps up
    by these keys)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{job_record_name(stage, targets)}.json"
    path.write_text(json.dumps({"job": job_record_name(stage, targets), "cpu": host.cpu_facts(), "keys": keys},
                               indent=2, sort_keys=True) + "\n")
    return path


def read_job_records(folder: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def read_job_keys(folder: Path) -> dict[str, str]:
    return {step: key for record in read_job_records(folder) for step, key in record.get("keys", {}).items()}


def measured_on(folder: Path) -> dict[str, Any] | None:
    """The CPU facts the target jobs measured on (their records): one set, or an error naming the
    jobs that disagree (one release is judged on one CPU class)."""
    from modelc_build.errors import BackendUnavailable

    found = {record["job"]: record["cpu"] for record in read_job_records(folder) if record.get("job", "").startswith("target")}
    distinct = {tuple(sorted(facts.items())) for facts in found.values()}
    if len(distinct) > 1:
        classes = ", ".join(f"{job}: {facts['cpu_class']}" for job, facts in found.items())
        raise BackendUnavailable(f"the target jobs measured on different CPUs ({classes}): route them to one class "
                                 "(vars.MODELC_CPU_CLASS and vars.MODELC_RUNNERS) so that one release can be judged")
    return next(iter(found.values()), None)


def _check_class(host: HostFacts, expected: str | None) -> None:
    """A job routed to a CPU class (its runner label) that landed on another fails in one line:
    its native checks would be filed under the wrong class."""
    from modelc_build.errors import BackendUnavailable
    from modelc_build.host import cpu_info

    if expected is not None and host.cpu_class != expected:
        raise BackendUnavailable(f"this job was routed to CPU class {expected} but runs on {host.cpu_class} "
                                 f"({cpu_info()['cpu']}): fix the runner label of class {expected} "
                                 "(vars.MODELC_RUNNERS), or drop --expect-class")


def preload(recipe: Recipe) -> tuple[str, ...]:
    """The fresh-process server's imports: the build's own, and each target's backend's."""
    from modelc_build.backends import backend_class, capabilities

    backends = {target.backend for target in recipe.targets}
    modules = [backend_class(name).__module__ for name in sorted(backends)]
    runtimes = [module for name in sorted(backends) for module in capabilities(name).preload]
    return tuple(dict.fromkeys((*PRELOAD, *modules, *runtimes, *LIBRARIES)))


def _start_helpers(engine: Engine, services: EmulationServices, steps: Sequence[Step]) -> None:
    """Once some step is about to run: the fork server (its imports overlap with the first step's
    work) and the warm emulated processes the plan's CPU checks will use."""
    from modelc_build import arm64

    if any(step.fresh_process for step in steps):
        start_fresh_process_server(engine.preload)
    services.start()
    engine.services.update(services.addresses())
    engine.services[arm64.ROOTS_SERVICE] = str(arm64.roots_folder())  # as this process sees it (steps run forked)


def memory_budget(recipe: Recipe, max_memory: int | None) -> MemoryBudget | None:
    """What steps side by side may hold: --max-memory, else what this machine has available now;
    None where the model's size or the machine's memory is unknown (a factory without weights)."""
    from modelc_build.processes import available_memory_bytes

    source = recipe.model.model_file
    limit = max_memory if max_memory is not None else available_memory_bytes()
    if source is None or not source.is_file() or limit is None:
        return None
    return MemoryBudget(limit, source.stat().st_size)


def emulated_checks(steps: Sequence[Step]) -> list[tuple[str, str, str]]:
    """(emulator, CPU model, backend) of every emulated check the steps hold."""
    return [(step.setting.emulator, step.setting.emulate, step.target.backend) for step in steps
            if isinstance(step, VerifyStep) and step.setting.emulate and step.setting.emulator]


def _logs_kept(error: ModelcError, failures: list[tuple[str, BaseException]], folder: Path) -> ModelcError:
    """Long logs the failed steps left (an exporter's IR dump) go to files beside the failed report,
    and the one-line message names the files."""
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
    return error.amended(f" (full log: {', '.join(pointers)})")


def _release(recipe: Recipe, plan: Plan, done: RunSummary, store: Store, log: BuildLog, options: BuildOptions,
             counts: str, cache: Cache, facts: Fingerprints, skipped: list[str]) -> Released:
    measured = _measured(recipe, plan, done, skipped)
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
    return released


def _measured(recipe: Recipe, plan: Plan, done: RunSummary, skipped: list[str]) -> Measured:
    """What the engine produced for the recipe's targets, as a release (or a failed build's report)
    is made of."""
    return Measured(graph=done.entries[plan.graph], qdq=done.entries.get(QDQ_STEP), golden=done.entries.get(GOLDEN_STEP),
                    artifacts=[CompiledArtifact(t, done.entries[compile_step_id(t)]) for t in recipe.targets],
                    entries=done.entries, settings={t.id: verify_settings(recipe, t, plan.host) for t in recipe.targets},
                    cpus=checked_cpus(recipe, plan.host), skipped=skipped)


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
