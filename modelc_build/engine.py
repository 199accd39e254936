"""Runs a step graph: any graph of `modelc_build.steps.Step`s, whatever their kinds.

For each step whose needs are met, in plan order:
1. key = sha256 over canonical JSON of `{key_format, kind, **step.material(inputs)}`;
2. look the key up: the local cache, then the store's shared step cache; a hit is done at once;
3. otherwise run it under the key's file lock (another build on the same cache may be making it),
   up to `jobs` steps at once, each in this process or, where the step asks for it, in a fresh
   process forked from a server that has only imported the libraries;
4. move its output folder into the cache (and the shared cache) as soon as it finishes.

Results are taken as they complete, so start and finish times are real and a failure never loses
a sibling's finished work: the engine keeps running every step that does not depend on a failed
one, then raises (the failure itself when there is one, `StepsFailed` naming each when several).
A step marked `exclusive` (latency measurement) starts only when nothing else runs or can start,
and nothing starts beside it. `dry_run` walks the same graph with the same keys and reports what
is cached: `modelc plan` has no copy of any key.

Why fresh processes: torch (TorchScript type mangling) and OpenVINO (generated layer names) number
things with process-wide counters, so a step's bytes would otherwise depend on what the same
process did before it. In a fresh process a step's output is a function of its inputs alone,
whatever the schedule, cache state or `-j`.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Iterable, Sequence

from modelc_build.cache import TRANSIENT_FILE, Cache, CacheEntry, cache_key
from modelc_build.errors import ModelcError, first_line
from modelc_build.steps import KEY_FORMAT, Step, StepInputs
from modelc_build.workers import run_in_fresh_process

if TYPE_CHECKING:
    from modelc_build.fingerprint import Fingerprints
    from modelc_build.progress import BuildLog
    from modelc_build.stores import StepCache


def step_key(step: Step, inputs: StepInputs) -> str:
    return cache_key({"key_format": KEY_FORMAT, "step": step.kind, **step.material(inputs)})


class StepsFailed(ModelcError):
    """More than one step failed; the exit code is that of the first failure in plan order."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        self.failures = failures
        first = failures[0][1]
        self.exit_code = first.exit_code if isinstance(first, ModelcError) else 1
        lines = [f"{step_id}: {_message(error)}" for step_id, error in failures]
        super().__init__(f"{len(failures)} steps failed: " + " | ".join(lines))


def _message(error: BaseException) -> str:
    text = error.message if isinstance(error, ModelcError) else f"{type(error).__name__}: {error}"
    return text.strip() or type(error).__name__


@dataclass(frozen=True)
class StepCost:
    """What one step that ran cost: wall seconds, and the peak resident memory of its own process
    (None for steps that run in the build's process, whose peak is shared: see RunSummary)."""

    seconds: float
    peak_rss_bytes: int | None


@dataclass
class RunSummary:
    """What a run did: every step's entry, and which ran, came from a cache, failed or was skipped."""

    entries: dict[str, CacheEntry] = field(default_factory=dict)
    costs: dict[str, StepCost] = field(default_factory=dict)  # steps that ran
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, BaseException] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


class Engine:
    def __init__(self, cache: Cache, log: BuildLog, *, jobs: int = 1, force: bool = False,
                 shared: StepCache | None = None, preload: tuple[str, ...] = (), memory: MemoryBudget | None = None) -> None:
        self.cache, self.log, self.force, self.shared = cache, log, force, shared
        self.jobs = max(1, jobs)
        self.memory = memory  # None: steps start side by side whatever they are expected to hold
        self.preload = preload  # modules the fresh-process server imports once
        self._clock = time.perf_counter()
        self.before_first_run: Callable[[], None] | None = None  # called once, before a step first runs
        self._costs: dict[str, StepCost] = {}  # written by worker threads, one key each
        self.services: dict[str, str] = {}  # helper processes steps may use (StepInputs.services), by name
        self.failures: list[tuple[str, BaseException]] = []  # the last run's failed steps, one per cause, in plan order
        self.summary = RunSummary()  # the last run's, kept when it raised (what the other targets measured)
        # step id -> the job that makes it: such steps must come from a cache (a job of a fanned-out
        # pipeline never recomputes another job's step)
        self.made_elsewhere: dict[str, str] = {}
        # step id -> the key the job that made it filed it under (its tools may not be installed in
        # this job, so this job could not compute the same key)
        self.recorded_keys: dict[str, str] = {}

    # --- dry run -------------------------------------------------------------------------

    def dry_run(self, steps: Sequence[Step], facts: Fingerprints | None = None) -> dict[str, str]:
        """Each step's state without running anything: cached (with its key) or will run."""
        return {step_id: state for step_id, (state, _) in self._walk(steps, facts).items()}

    def step_keys(self, steps: Sequence[Step], facts: Fingerprints | None = None) -> dict[str, str]:
        """Each step's key where it can be computed without running anything, else why not (a
        step waiting for an output that is not cached yet is keyed by its description)."""
        return {step_id: key for step_id, (_, key) in self._walk(steps, facts).items()}

    def _walk(self, steps: Sequence[Step], facts: Fingerprints | None) -> dict[str, tuple[str, str]]:
        from modelc_build.errors import CodeNotRun

        _check_graph(steps)
        found: dict[str, tuple[str, str]] = {}
        entries: dict[str, CacheEntry] = {}
        for step in steps:
            if not all(need in entries for need in step.needs):
                found[step.id] = ("will run", f"after {','.join(step.needs)}: {step.description}")
                continue
            try:
                key = step_key(step, StepInputs(entries, facts))
            except CodeNotRun as unknown:
                found[step.id] = (f"will run ({unknown})", str(unknown))
                continue
            entry, _ = self.cache.get(key)
            if entry is None:
                found[step.id] = ("will run", key)
            else:
                entries[step.id] = entry
                found[step.id] = (f"cached {entry.key[:12]}", key)
        return found

    # --- run -----------------------------------------------------------------------------

    def run(self, steps: Sequence[Step], facts: Fingerprints | None = None) -> RunSummary:
        """Run the graph; raises after every runnable step has finished if any step failed."""
        _check_graph(steps)
        self._clock = time.perf_counter()
        summary = RunSummary()
        pending = _by_priority(steps)
        running: dict[Future[CacheEntry | None], Step] = {}
        scratch = Path(tempfile.mkdtemp(prefix="build-", dir=self._scratch_root()))
        try:
            with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="step") as threads:
                while True:
                    self._start_ready(pending, running, summary, facts, threads, scratch)
                    if not running:
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        self._collect(running.pop(future), future, summary)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        failures = _distinct([(s.id, summary.failed[s.id]) for s in steps if s.id in summary.failed])
        self.failures = failures
        self.summary = summary
        if len(failures) == 1:
            raise failures[0][1]
        if failures:
            raise StepsFailed(failures)
        return summary

    def _scratch_root(self) -> Path:
        self.cache.root.mkdir(parents=True, exist_ok=True)
        return self.cache.root

    def _start_ready(self, pending: list[Step], running: dict[Future[CacheEntry | None], Step], summary: RunSummary,
                     facts: Fingerprints | None, threads: ThreadPoolExecutor, scratch: Path) -> None:
        """Start every step whose needs are met, up to `jobs`; cache hits finish on the spot."""
        progress = True
        while progress:
            progress = False
            if any(step.exclusive for step in running.values()):
                return
            for step in list(pending):
                if any(need in summary.failed or need in summary.skipped for need in step.needs):
                    pending.remove(step)
                    summary.skipped.append(step.id)
                    self.log(f"- {step.id}: skipped (a step it needs failed)")
                    progress = True
                    continue
                if not all(need in summary.entries for need in step.needs):
                    continue
                if step.exclusive and (running or any(not s.exclusive and _ready(s, summary) for s in pending)):
                    continue
                if len(running) >= self.jobs:
                    return
                if running and self.memory is not None and not self.memory.fits(step, running.values()):
                    continue  # waits for memory to be freed; a smaller step further down may start
                pending.remove(step)
                progress = True
                try:
                    inputs = StepInputs({need: summary.entries[need] for need in step.needs}, facts, dict(self.services),
                                        self._threads(step))
                    key = self.recorded_keys.get(step.id) if step.id in self.made_elsewhere else None
                    key = key or step_key(step, inputs)
                    entry, reason = self._lookup(step, key)
                except Exception as error:  # noqa: BLE001 - a step's failure is reported with the others
                    self._fail(step, error, summary)
                    continue
                if entry is not None:
                    summary.entries[step.id] = entry
                    summary.cached.append(step.id)
                    continue
                if step.id in self.made_elsewhere:
                    self._fail(step, _missing(step, key, reason, self.made_elsewhere[step.id]), summary)
                    continue
                if self.before_first_run is not None:
                    self.before_first_run()
                    self.before_first_run = None
                running[threads.submit(self._execute, step, inputs, key, reason, scratch)] = step
                if step.exclusive:
                    return

    def _lookup(self, step: Step, key: str) -> tuple[CacheEntry | None, str]:
        if self.force:
            return None, "--force"
        entry, reason = self.cache.get(key)
        if entry is not None:
            self.log(f"✓ {step.id} (cached {key[:12]})")
            return entry, ""
        if self.shared is not None:
            shared_entry, _ = self.shared.get(key)
            if shared_entry is not None:
                self.log(f"✓ {step.id} (from the store's step cache, {key[:12]})")
                return self.cache.put(key, step.id, shared_entry.path), ""
        return None, reason

    def _execute(self, step: Step, inputs: StepInputs, key: str, reason: str, scratch: Path) -> CacheEntry | None:
        """In a worker thread: run one step under its key's lock and cache its output. Returns
        None when a concurrent build made the entry while this one waited for the lock."""
        with self.cache.lock(key):
            if not self.force:
                entry, _ = self.cache.get(key)
                if entry is not None:
                    self.log(f"✓ {step.id} (made by a concurrent build, {key[:12]})")
                    return entry
            out = Path(tempfile.mkdtemp(prefix=f"{step.kind}-", dir=scratch))
            started = time.perf_counter()
            self.log.start(step.id, f"▶ {step.id}: {step.description} [{reason}, key {key[:12]}] "
                                    f"at {started - self._clock:.1f} s")
            peak = None
            if step.fresh_process:
                peak = run_in_fresh_process(step, inputs, out, self.preload)
            else:
                step.run(inputs, out)
            entry = self.cache.put(key, step.id, out)
            if self.shared is not None and not (out / TRANSIENT_FILE).is_file():
                self._share(step, key, out)
            shutil.rmtree(out, ignore_errors=True)
            finished = time.perf_counter()
            self._costs[step.id] = StepCost(finished - started, peak)
            memory = f", peak {peak / 2**20:.0f} MiB" if peak is not None else ""
            self.log.done(step.id, f"✓ {step.id} ({finished - started:.1f} s, "
                                   f"{started - self._clock:.1f}–{finished - self._clock:.1f} s{memory})")
            return entry

    def _share(self, step: Step, key: str, out: Path) -> None:
        """Put a step's output in the store's step cache. It is an optimisation for the other jobs
        of a pipeline (which otherwise make the step themselves): a failure is said, not fatal."""
        assert self.shared is not None
        try:
            self.shared.put(key, step.id, out)
        except ModelcError as error:
            self.log(f"warning: {step.id} was built but not shared through the store's step cache ({first_line(error)}); "
                     "other jobs make it themselves")

    def _threads(self, step: Step) -> int | None:
        """A step that may share the machine gets its share of the cores (steps side by side with a
        thread per core each oversubscribe it); an exclusive step (a timing) gets them all."""
        return None if step.exclusive else self.shared_threads()

    def shared_threads(self) -> int | None:
        """The threads of work that runs beside other steps (None: the runtimes' defaults)."""
        return None if self.jobs == 1 else max(1, (os.cpu_count() or 1) // self.jobs)

    def _collect(self, step: Step, future: Future[CacheEntry | None], summary: RunSummary) -> None:
        error = future.exception()
        if error is not None:
            self._fail(step, error, summary)
            return
        entry = future.result()
        assert entry is not None
        summary.entries[step.id] = entry
        summary.ran.append(step.id)
        if step.id in self._costs:
            summary.costs[step.id] = self._costs.pop(step.id)

    def _fail(self, step: Step, error: BaseException, summary: RunSummary) -> None:
        from modelc_build.errors import write_problem

        if not isinstance(error, ModelcError):  # a full disk, a read-only folder: said as such, not as a bug
            error = write_problem(error, f"the {step.id} step could not write its output") or error
        summary.failed[step.id] = error
        self.log.done(step.id, f"✗ {step.id} failed: {first_line(RuntimeError(_message(error)), 500)}")


@dataclass(frozen=True)
class MemoryBudget:
    """Steps side by side stay within `limit_bytes`: a step starts beside others only when the
    expected peaks of all of them fit (a step alone always starts). A step's expected peak is a
    bare worker's plus its memory_peak_hint times the FP32 model's size; the build's own process
    and the fork server are set aside first."""

    limit_bytes: int
    model_bytes: int

    BUILD_BYTES: ClassVar[int] = 768 * 2**20  # the build's process and the fork server (torch, OpenVINO, onnxruntime loaded)
    WORKER_BYTES: ClassVar[int] = 192 * 2**20  # a forked worker's own pages before its step runs

    def expected(self, step: Step) -> int:
        return self.WORKER_BYTES + int(step.memory_peak_hint * self.model_bytes)

    def fits(self, step: Step, running: Iterable[Step]) -> bool:
        held = sum(self.expected(other) for other in running)
        return self.BUILD_BYTES + held + self.expected(step) <= self.limit_bytes


def _distinct(failures: list[tuple[str, BaseException]]) -> list[tuple[str, BaseException]]:
    """One failure per cause: steps that read the same missing file all fail with its message."""
    seen: set[str] = set()
    kept = []
    for step_id, error in failures:
        if _message(error) not in seen:
            seen.add(_message(error))
            kept.append((step_id, error))
    return kept


def _by_priority(steps: Sequence[Step]) -> list[Step]:
    """Steps on the longest chain of expected work first (critical-path order): a step's priority
    is its own cost hint plus the largest priority among the steps that wait for it, so the INT8
    compile whose emulated check is long starts before cheap float compiles, and that check starts
    as soon as its artifact exists rather than after every quick measurement. Plan order among
    equals."""
    waiting: dict[str, list[str]] = {step.id: [] for step in steps}
    for step in steps:
        for need in step.needs:
            waiting[need].append(step.id)
    chain: dict[str, float] = {}
    for step in reversed(steps):  # a plan is in order: every step's dependants come after it
        chain[step.id] = step.cost_hint + max((chain[later] for later in waiting[step.id]), default=0.0)
    order = {step.id: index for index, step in enumerate(steps)}
    return sorted(steps, key=lambda step: (-chain[step.id], order[step.id]))


def _ready(step: Step, summary: RunSummary) -> bool:
    return all(need in summary.entries for need in step.needs)


def _check_graph(steps: Sequence[Step]) -> None:
    """Ids are unique and every step comes after the steps it needs (a plan is in order)."""
    seen: set[str] = set()
    for step in steps:
        if step.id in seen:
            raise ValueError(f"two steps have the id {step.id!r}")
        unknown = [need for need in step.needs if need not in seen]
        if unknown:
            raise ValueError(f"step {step.id!r} needs {unknown}, which do not come before it")
        seen.add(step.id)


def _missing(step: Step, key: str, reason: str, job: str) -> Exception:
    from modelc_build.errors import MissingStep

    return MissingStep(f"{step.id} is not in the step cache (key {key[:12]}: {reason}): the {job} job makes it and this "
                       "job never recomputes it; run that job first, with --share-steps on the same store (a native check "
                       "is keyed by the runner's CPU class: it must run on the class of the job that made it)")
