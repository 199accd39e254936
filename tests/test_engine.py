"""The engine runs any step graph: step kinds defined here, in the test file alone."""
from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelc_build.cache import Cache
from modelc_build.engine import Engine, StepsFailed, step_key
from modelc_build.errors import BackendUnavailable, CompileError
from modelc_build.progress import BuildLog
from modelc_build.steps import Step, StepInputs

FAILING: set[str] = set()  # ids of WriteStep that fail while in this set (the "bug" a user fixes)


@dataclass(frozen=True)
class WriteStep(Step):
    """A new step kind: writes its text plus the digests of what it needs into out.txt."""

    id: str
    text: str
    needs: tuple[str, ...] = ()
    seconds: float = 0.0
    kind: ClassVar[str] = "write"

    @property
    def description(self) -> str:
        return f"write {self.text!r}"

    def material(self, inputs: StepInputs) -> dict[str, Any]:
        return {"text": self.text, "inputs": {need: inputs.digest(need, "out.txt") for need in self.needs}}

    def run(self, inputs: StepInputs, out: Path) -> None:
        time.sleep(self.seconds)
        if self.id in FAILING:
            raise CompileError(f"{self.id} cannot be built")
        parts = [self.text] + [inputs.file(need, "out.txt").read_text() for need in self.needs]
        (out / "out.txt").write_text("+".join(parts))


@dataclass(frozen=True)
class FreshStep(WriteStep):
    """The same, in a fresh process: it records the pid it ran in."""

    fresh_process: ClassVar[bool] = True

    def run(self, inputs: StepInputs, out: Path) -> None:
        import os

        super().run(inputs, out)
        (out / "pid").write_text(str(os.getpid()))


@dataclass(frozen=True)
class ExitingStep(FreshStep):
    """Ends its process without a word, as `os._exit` in a model's code would."""

    def run(self, inputs: StepInputs, out: Path) -> None:
        import os

        os._exit(7)


@dataclass(frozen=True)
class TimedStep(WriteStep):
    exclusive: ClassVar[bool] = True


@dataclass
class Recorder(BuildLog):
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.lines.append)


def started(log: Recorder) -> list[str]:
    return [line.split(":")[0].removeprefix("▶ ") for line in log.lines if line.startswith("▶ ")]


@pytest.fixture(autouse=True)
def nothing_fails() -> Any:
    FAILING.clear()
    yield
    FAILING.clear()


def graph() -> list[Step]:
    return [WriteStep("a", "A"), WriteStep("b", "B", ("a",)), WriteStep("c", "C", ("a",)), WriteStep("d", "D", ("b", "c"))]


def test_a_new_step_kind_is_run_cached_and_planned_without_engine_changes(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    log = Recorder()
    assert Engine(cache, log).dry_run(graph()) == {"a": "will run", "b": "will run", "c": "will run", "d": "will run"}
    summary = Engine(cache, log, jobs=2).run(graph())
    assert sorted(summary.ran) == ["a", "b", "c", "d"] and summary.cached == []
    assert summary.entries["d"].file("out.txt").read_text() == "D+B+A+C+A"
    plan = Engine(cache, Recorder()).dry_run(graph())
    assert all(state.startswith("cached ") for state in plan.values())
    again = Recorder()
    rerun = Engine(cache, again, jobs=2).run(graph())
    assert rerun.ran == [] and sorted(rerun.cached) == ["a", "b", "c", "d"] and started(again) == []


def test_the_dry_run_uses_the_same_keys_as_the_run(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    summary = Engine(cache, Recorder()).run(graph())
    entries = summary.entries
    plan = Engine(cache, Recorder()).dry_run(graph())
    for step in graph():
        key = step_key(step, StepInputs({need: entries[need] for need in step.needs}))
        assert plan[step.id] == f"cached {key[:12]}"


def test_a_changed_step_reruns_itself_and_its_dependants_only(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    Engine(cache, Recorder()).run(graph())
    changed = [WriteStep("a", "A"), WriteStep("b", "B2", ("a",)), WriteStep("c", "C", ("a",)), WriteStep("d", "D", ("b", "c"))]
    log = Recorder()
    summary = Engine(cache, log).run(changed)
    assert sorted(summary.ran) == ["b", "d"] and sorted(summary.cached) == ["a", "c"]


def test_a_failed_step_keeps_its_siblings_work_and_the_rebuild_runs_only_it(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    steps: list[Step] = [WriteStep("export", "E"), WriteStep("compile:x", "X", ("export",), seconds=0.3),
                         WriteStep("compile:y", "Y", ("export",)), WriteStep("verify", "V", ("compile:x", "compile:y"))]
    FAILING.add("compile:y")
    log = Recorder()
    with pytest.raises(CompileError, match="compile:y cannot be built"):
        Engine(cache, log, jobs=2).run(steps)
    assert any(line.startswith("✓ compile:x (") for line in log.lines)  # both outcomes printed
    assert "✗ compile:y failed: compile:y cannot be built" in log.lines
    assert "- verify: skipped (a step it needs failed)" in log.lines
    FAILING.clear()  # the user fixes the failure
    log = Recorder()
    summary = Engine(cache, log, jobs=2).run(steps)
    assert sorted(summary.ran) == ["compile:y", "verify"] and sorted(summary.cached) == ["compile:x", "export"]


def test_every_failure_is_reported_with_the_first_ones_exit_code(tmp_path: Path) -> None:
    @dataclass(frozen=True)
    class Unavailable(WriteStep):
        def run(self, inputs: StepInputs, out: Path) -> None:
            raise BackendUnavailable("no tensorrt here")

    FAILING.add("x")
    steps: list[Step] = [WriteStep("a", "A"), WriteStep("x", "X", ("a",)), Unavailable("y", "Y", ("a",))]
    with pytest.raises(StepsFailed) as raised:
        Engine(Cache(tmp_path / "cache"), Recorder(), jobs=2).run(steps)
    assert raised.value.exit_code == CompileError.exit_code
    assert "x: x cannot be built" in raised.value.message and "y: no tensorrt here" in raised.value.message


def test_ready_steps_run_side_by_side_and_times_are_real(tmp_path: Path) -> None:
    steps: list[Step] = [WriteStep("slow", "S", seconds=0.6), WriteStep("fast", "F", seconds=0.05),
                         WriteStep("after-fast", "G", ("fast",))]
    log = Recorder()
    begun = time.perf_counter()
    Engine(Cache(tmp_path / "cache"), log, jobs=2).run(steps)
    assert time.perf_counter() - begun < 1.2
    order = [line.split(" ")[1] for line in log.lines if line.startswith("✓ ")]
    assert order.index("after-fast") < order.index("slow")  # started when its input existed, not after a wave


def test_an_exclusive_step_runs_alone(tmp_path: Path) -> None:
    running: list[str] = []
    overlaps: list[str] = []
    lock = threading.Lock()

    @dataclass(frozen=True)
    class Watched(WriteStep):
        def run(self, inputs: StepInputs, out: Path) -> None:
            with lock:
                if running and (self.id.startswith("time") or any(r.startswith("time") for r in running)):
                    overlaps.append(f"{self.id} beside {running}")
                running.append(self.id)
            try:
                super().run(inputs, out)
            finally:
                with lock:
                    running.remove(self.id)

    @dataclass(frozen=True)
    class WatchedTimed(Watched):
        exclusive: ClassVar[bool] = True

    steps: list[Step] = [Watched("a", "A", seconds=0.1), WatchedTimed("time-a", "T", ("a",), seconds=0.1),
                         Watched("b", "B", seconds=0.3), Watched("c", "C", ("b",), seconds=0.1),
                         WatchedTimed("time-c", "T", ("c",), seconds=0.1)]
    log = Recorder()
    Engine(Cache(tmp_path / "cache"), log, jobs=3).run(steps)
    assert overlaps == []
    assert started(log)[-2:] == ["time-a", "time-c"]  # after every accuracy-side step


def test_fresh_process_steps_run_in_new_processes(tmp_path: Path) -> None:
    import os

    steps: list[Step] = [FreshStep("p", "P"), FreshStep("q", "Q", ("p",))]
    summary = Engine(Cache(tmp_path / "cache"), Recorder(), jobs=2).run(steps)
    pids = {summary.entries[s].file("pid").read_text() for s in ("p", "q")}
    assert len(pids) == 2 and str(os.getpid()) not in pids
    assert summary.entries["q"].file("out.txt").read_text() == "Q+P"


@dataclass(frozen=True)
class HungryStep(FreshStep):
    """Touches `megabytes` of memory, then lets it go."""

    megabytes: int = 0

    def run(self, inputs: StepInputs, out: Path) -> None:
        block = bytearray(self.megabytes * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # every page resident
        del block
        super().run(inputs, out)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="per-process peak reset is Linux's")
def test_each_step_that_ran_has_its_seconds_and_its_own_peak_memory(tmp_path: Path) -> None:
    steps: list[Step] = [HungryStep("small", "S", megabytes=0), HungryStep("big", "B", ("small",), megabytes=300),
                         WriteStep("here", "H", ("big",))]
    summary = Engine(Cache(tmp_path / "cache"), Recorder(), jobs=1).run(steps)
    small, big, here = (summary.costs[s] for s in ("small", "big", "here"))
    assert big.peak_rss_bytes is not None and small.peak_rss_bytes is not None
    assert big.peak_rss_bytes - small.peak_rss_bytes > 250 * 2**20  # each step's own process
    assert here.peak_rss_bytes is None and here.seconds >= 0  # in the build's process: not its own figure
    again = Engine(Cache(tmp_path / "cache"), Recorder(), jobs=1).run(steps)
    assert again.costs == {} and sorted(again.cached) == ["big", "here", "small"]


@dataclass(frozen=True)
class ThreadsStep(FreshStep):
    """Writes the threads it was given: its input, OMP's and torch's."""

    def run(self, inputs: StepInputs, out: Path) -> None:
        import json
        import os

        import torch

        super().run(inputs, out)
        (out / "threads.json").write_text(json.dumps([inputs.threads, os.environ.get("OMP_NUM_THREADS"),
                                                      torch.get_num_threads()]))


@dataclass(frozen=True)
class ExclusiveThreadsStep(ThreadsStep):
    exclusive: ClassVar[bool] = True


def test_steps_side_by_side_share_the_cores_and_an_exclusive_step_gets_them_all(tmp_path: Path, monkeypatch) -> None:
    import json
    import os

    import torch

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    steps: list[Step] = [ThreadsStep("shared", "S"), ExclusiveThreadsStep("alone", "A", ("shared",))]
    summary = Engine(Cache(tmp_path / "cache"), Recorder(), jobs=2).run(steps)
    assert json.loads(summary.entries["shared"].file("threads.json").read_text()) == [1, "1", 1]  # 2 cores / 2 jobs
    default = torch.get_num_threads()  # the fork server's, untouched
    assert json.loads(summary.entries["alone"].file("threads.json").read_text()) == [None, None, default]
    one_job = Engine(Cache(tmp_path / "other"), Recorder(), jobs=1).run([ThreadsStep("shared", "S")])
    assert json.loads(one_job.entries["shared"].file("threads.json").read_text())[0] is None


def test_a_graph_out_of_order_is_a_bug_not_a_hang(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs"):
        Engine(Cache(tmp_path / "cache"), Recorder()).run([WriteStep("b", "B", ("a",)), WriteStep("a", "A")])


def test_timed_steps_are_a_kind_too(tmp_path: Path) -> None:
    summary = Engine(Cache(tmp_path / "cache"), Recorder()).run([WriteStep("a", "A"), TimedStep("t", "T", ("a",))])
    assert summary.entries["t"].file("out.txt").read_text() == "T+A"


def test_a_process_that_ends_without_an_answer_fails_only_its_step(tmp_path: Path) -> None:
    steps: list[Step] = [ExitingStep("dies", "D"), FreshStep("lives", "L", seconds=0.2)]
    log = Recorder()
    with pytest.raises(CompileError, match="the dies step's process ended with exit code 7 before it finished"):
        Engine(Cache(tmp_path / "cache"), log, jobs=2).run(steps)
    assert any(line.startswith("✓ lives (") for line in log.lines)  # its sibling finished and was cached


def test_the_plain_log_writes_each_line_whole_from_any_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Steps start and finish on worker threads: a line and its newline written apart let two
    steps' lines run together in a CI log (a concurrent-build test once missed a step that way)."""
    import io
    import threading

    class Writes(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[str] = []

        def write(self, text: str) -> int:
            self.calls.append(text)
            return super().write(text)

    stderr = Writes()
    monkeypatch.setattr("sys.stderr", stderr)
    log = BuildLog()
    workers = [threading.Thread(target=lambda n=n: [log.start(f"s{n}", f"▶ s{n}: line {i}") for i in range(200)])
               for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(call.count("\n") == 1 and call.endswith("\n") for call in stderr.calls)
    assert len(stderr.getvalue().splitlines()) == 800


@dataclass(frozen=True)
class HintedStep(WriteStep):
    """A step that declares what it is expected to cost in time (as an emulated check does) and
    to hold in memory, in FP32 model sizes (as a calibration does)."""

    cost: float = 1.0
    hint: float = 4.0

    @property
    def cost_hint(self) -> float:
        return self.cost

    @property
    def memory_peak_hint(self) -> float:
        return self.hint


def test_the_longest_chain_of_expected_work_starts_first(tmp_path: Path) -> None:
    """One worker, two ready chains: the cheap steps many others wait for used to go first; now
    the compile whose long check follows it runs first, and the check as soon as it can."""
    steps: list[Step] = [WriteStep("graph", "G"),
                         HintedStep("compile-int8", "I", ("graph",), cost=3.0),
                         HintedStep("compile-fp32", "F", ("graph",), cost=0.5),
                         HintedStep("verify-fp32", "VF", ("compile-fp32",), cost=0.5),
                         HintedStep("verify-fp32-again", "VF2", ("compile-fp32",), cost=0.5),
                         HintedStep("check-int8-emulated", "E", ("compile-int8",), cost=7.0),
                         HintedStep("verify-int8", "VI", ("compile-int8",), cost=0.5)]
    log = Recorder()
    Engine(Cache(tmp_path / "cache"), log, jobs=1).run(steps)
    assert started(log) == ["graph", "compile-int8", "check-int8-emulated", "compile-fp32", "verify-fp32",
                            "verify-fp32-again", "verify-int8"]



def spans(log: Recorder) -> dict[str, tuple[float, float]]:
    found = {}
    for line in log.lines:
        match = re.match(r"✓ (\S+) \([\d.]+ s, ([\d.]+)–([\d.]+) s", line)
        if match:
            found[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return found


def test_steps_side_by_side_stay_within_the_memory_limit(tmp_path: Path) -> None:
    """Two steps that would not fit together run one after the other; a small one runs beside
    either; with no limit all three run at once."""
    from modelc_build.engine import MemoryBudget

    mib = 2**20
    steps: list[Step] = [HintedStep("heavy-a", "A", seconds=0.4), HintedStep("heavy-b", "B", seconds=0.4),
                         HintedStep("small", "S", seconds=0.4, hint=0.2)]
    budget = MemoryBudget(limit_bytes=0, model_bytes=100 * mib)
    heavy, small = budget.expected(steps[0]), budget.expected(steps[2])
    limit = MemoryBudget.BUILD_BYTES + heavy + small + mib  # one heavy and the small one fit; two heavy do not
    log = Recorder()
    Engine(Cache(tmp_path / "limited"), log, jobs=3, memory=MemoryBudget(limit, 100 * mib)).run(steps)
    ran = spans(log)
    (a_start, a_end), (b_start, b_end) = ran["heavy-a"], ran["heavy-b"]
    assert b_start >= a_end or a_start >= b_end  # never side by side
    assert ran["small"][0] < min(a_end, b_end)  # beside the first heavy one

    log = Recorder()
    Engine(Cache(tmp_path / "unlimited"), log, jobs=3).run(steps)
    ran = spans(log)
    assert max(start for start, _ in ran.values()) < min(end for _, end in ran.values())  # all at once


def test_a_step_cache_that_refuses_a_put_costs_sharing_not_the_build(tmp_path: Path) -> None:
    """The store's step cache is how the jobs of a pipeline share work; a push it refuses (a
    registry race, a full quota) is said, and the build goes on with the step made here."""
    from modelc_build.errors import StoreError

    class Refusing:
        def get(self, key: str) -> tuple[Any, str]:
            return None, "not shared"

        def put(self, key: str, step: str, produced: Path) -> Any:
            raise StoreError("PUT step-… answered HTTP 400: MANIFEST_BLOB_UNKNOWN")

    log = Recorder()
    summary = Engine(Cache(tmp_path / "cache"), log, shared=Refusing()).run(graph())
    assert sorted(summary.ran) == ["a", "b", "c", "d"]
    assert any(line.startswith("warning: a was built but not shared through the store's step cache (PUT step-")
               for line in log.lines)
