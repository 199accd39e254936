"""Run an artifact on an emulated deploy CPU: QEMU user mode playing an older CPU class.

A result holds only on the CPU class it was measured on (modelc_build/host.py): pre-VNNI INT8
kernels sum 8-bit products in saturating int16 and can be wrong where VNNI kernels are right.
`qemu-x86_64 -cpu Haswell python …` runs this same interpreter with the CPUID of an AVX2 CPU, so
OpenVINO and onnxruntime pick the kernels they would pick there (limiting oneDNN's ISA through
`ONEDNN_MAX_CPU_ISA` does not: OpenVINO's own kernels ignore it and the process mixes families).

Emulation is slow, unevenly: integer kernels run ~100x slower than natively, float kernels far
more. So a check runs a subset of samples sized by a time budget, and the reference outputs are
never computed under emulation; the caller compares what comes back with outputs computed natively.

The child process is this module (`python -m modelc_build.emulation REQUEST_DIR`). It also runs a
canary, a tiny float model with known native outputs, and reports the CPU features it saw, so a
broken emulator is told apart from a broken artifact.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelc_build.host import EMULATED_CLASSES

if TYPE_CHECKING:
    import numpy as np

    from modelc_build.recipe_types import TensorSpec

EMULATOR_VARIABLE = "MODELC_EMULATOR"  # another emulator (or a stand-in) with qemu-x86_64's arguments
INSTALL_HINT = "apt-get install qemu-user"
STARTUP_ALLOWANCE_S = 180.0  # interpreter + runtime start under emulation (about 9 s here)
# A check is broken when it makes no progress (no canary, no sample's output written) for this long;
# a slow one that keeps writing outputs is waited for: one sample of a CNN + LSTM text recogniser's
# INT8 graph took 55 s under emulation here, a transformer recogniser's longer.
STALL_S = 300.0
HARD_LIMIT_S = 1800.0  # and never longer than this in all
MIN_SAMPLES = 2
CANARY_TOLERANCE = 1e-3  # relative to the canary output's largest magnitude


def emulator() -> str | None:
    """The emulator executable: $MODELC_EMULATOR, else qemu-x86_64 on the PATH."""
    chosen = os.environ.get(EMULATOR_VARIABLE)
    if chosen:
        return chosen if shutil.which(chosen) else None
    return shutil.which("qemu-x86_64")


def emulator_identity(found: str | None) -> str:
    """What runs the emulation, for cache keys: installing or changing the emulator re-runs checks."""
    if found is None:
        return "absent"
    try:
        first = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        first = []
    return f"{Path(found).name} {first[0] if first else ''}".strip()


def expected_class(cpu: str) -> str | None:
    return EMULATED_CLASSES.get(cpu)


def class_from_features(features: dict[str, bool]) -> str:
    """The CPU class from numpy's CPU feature probe (CPUID on x86, the kernel's HWCAP on ARM64;
    AMX and AVX-VNNI are not in it)."""
    for name, feature in (("avx512-vnni", "AVX512VNNI"), ("avx512", "AVX512F"), ("avx2", "AVX2"), ("avx", "AVX"),
                          ("sse4", "SSE42"), ("arm64-dotprod", "ASIMDDP"), ("arm64", "ASIMD")):
        if features.get(feature):
            return name
    return "unknown"


@dataclass(frozen=True)
class Canary:
    """What the canary model gave natively and under emulation."""

    healthy: bool
    detail: str


@dataclass(frozen=True)
class EmulatedRun:
    cpu: str  # the QEMU CPU model
    features: list[str]  # CPU features the emulated process saw (numpy's CPUID probe)
    seen_class: str
    kernels: list[str]  # the runtime's kernels that ran (OpenVINO exec types, onnxruntime op kernels)
    outputs: list[dict[str, np.ndarray]]  # per sample, sample-first (batch of 1)
    startup_s: float
    inference_s: float
    canary: Canary
    problem: str | None = None  # the emulation itself failed (timed out, crashed): no artifact verdict
    log_tail: list[str] = field(default_factory=list)
    runtime: dict[str, str] = field(default_factory=dict)  # what the runtime ran with there (the variant it chose)
    process: str = "own"  # own: a process for this check alone; service: the build's warm one (EmulationServices)
    fault: str | None = None  # the artifact itself cannot run on this CPU (an illegal instruction): a failed check

    @property
    def broken(self) -> str | None:
        """Why the emulation cannot be trusted, or None."""
        if self.problem:
            return self.problem
        if not self.canary.healthy:
            return self.canary.detail
        wanted = expected_class(self.cpu)
        if wanted is not None and self.seen_class != wanted:
            return (f"the emulated process saw a {self.seen_class} CPU ({', '.join(self.features[-4:])}), "
                    f"not the {wanted} class of {self.cpu}: the emulator does not emulate that CPU")
        return None


def canary_model(folder: Path) -> Path:
    """A tiny float CNN with seeded weights (conv, ReLU, pooling, a dense layer): any sound
    emulation computes what native code computes, to float rounding."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weights = {"conv_w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
               "conv_b": rng.standard_normal(8).astype(np.float32),
               "dense_w": rng.standard_normal((8, 5)).astype(np.float32),
               "dense_b": rng.standard_normal(5).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "dense_w", "dense_b"], ["y"])]
    graph = helper.make_graph(nodes, "canary", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                              [numpy_helper.from_array(value, name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "canary.onnx"
    onnx.save(model, str(path))
    return path


def canary_input() -> dict[str, np.ndarray]:
    import numpy as np

    return {"x": np.random.default_rng(11).random((1, 3, 16, 16), dtype=np.float32)}


def _canary_runner(backend: str, path: Path) -> Any:
    """The canary runs in the artifact's own runtime, on its float kernels."""
    from modelc_build.backends import get_backend
    from modelc_build.recipe_types import TensorSpec

    return get_backend(backend).float_runner(path, (TensorSpec("x", (1, 3, 16, 16)),), ("y",))


def run_canary(backend: str, path: Path) -> np.ndarray:
    with _canary_runner(backend, path) as runner:
        return runner.infer(canary_input())["y"]


def judge_canary(native: np.ndarray, emulated: np.ndarray | None) -> Canary:
    import numpy as np

    if emulated is None:
        return Canary(False, "the canary model gave no output under emulation")
    scale = float(np.abs(native).max()) or 1.0
    error = float(np.abs(native.astype(np.float64) - emulated.astype(np.float64)).max()) / scale \
        if emulated.shape == native.shape else float("inf")
    if not np.isfinite(error) or error > CANARY_TOLERANCE:
        return Canary(False, f"the canary model (a tiny float CNN) differs from its native outputs by {error:.3g} "
                             f"of their scale under emulation (tolerance {CANARY_TOLERANCE:g}): the emulator is broken")
    return Canary(True, f"canary within {error:.2g} of native")


def run_emulated(found: str, cpu: str, backend: str, files: list[Path], config: dict[str, str], inputs: tuple[TensorSpec, ...],
                 outputs: tuple[str, ...], samples: list[dict[str, np.ndarray]], budget_s: float, work: Path,
                 service: str | None = None, threads: int | None = None) -> EmulatedRun:
    """Run `samples` (sample-first, one sample each, in order: a model with state carries it) on
    the artifact under `qemu-x86_64 -cpu CPU`, for as many as fit in `budget_s` (at least two).
    `service`: the socket of a warm emulated process for this CPU and backend (EmulationServices),
    used where it answers; else a process is started for this run alone. Both run the same code."""
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    canary = canary_model(work)
    native_canary = run_canary(backend, canary)
    for number, sample in enumerate(samples):
        np.savez(work / f"sample-{number:06d}.npz", **sample)  # type: ignore[arg-type]
    request = {"backend": backend, "files": [str(f) for f in files], "config": config,
               "inputs": [spec.to_json() for spec in inputs], "outputs": list(outputs),
               "samples": len(samples), "budget_s": budget_s, "canary": str(canary), "threads": threads}
    (work / "request.json").write_text(json.dumps(request, indent=2))
    log = work / "emulator.log"
    started = time.monotonic()
    problem = _run_in_service(service, work, budget_s) if service else SERVICE_UNAVAILABLE
    process = "service"
    if problem in (SERVICE_UNAVAILABLE, SERVICE_ENDED):  # a service that died on the check: alone, to learn why
        problem, process = _run_once(found, cpu, work, log, budget_s), "own"
    elapsed = time.monotonic() - started
    tail = _log_tail(log)
    result_file = work / "result.json"
    if problem == ILLEGAL_INSTRUCTION and (work / "canary-output.npz").is_file():
        return _faulted(cpu, judge_canary(native_canary, _emulated_canary(work)), elapsed, tail, process)
    if problem is None and not result_file.is_file():
        problem = "the emulated process wrote no result"
    if problem is not None:
        return EmulatedRun(cpu, [], "unknown", [], [], elapsed, 0.0, Canary(False, problem), problem, tail, process=process)
    result = json.loads(result_file.read_text())
    if result.get("error"):
        problem = f"the artifact could not run under emulation: {result['error']}"
    emulated_outputs = []
    for number in range(int(result.get("samples_done", 0))):
        with np.load(work / f"output-{number:06d}.npz", allow_pickle=False) as archive:
            emulated_outputs.append({name: archive[name] for name in archive.files})
    features = [name for name, present in result.get("features", {}).items() if present]
    return EmulatedRun(cpu, features, class_from_features(result.get("features", {})), result.get("kernels", []),
                       emulated_outputs, float(result.get("startup_s", elapsed)), float(result.get("inference_s", 0.0)),
                       judge_canary(native_canary, _emulated_canary(work)), problem, tail, result.get("runtime") or {}, process)


SERVICE_UNAVAILABLE = "no emulation service answered"  # run_emulated then starts a process of its own
SERVICE_ENDED = "the emulation service ended while it ran this check"
ILLEGAL_INSTRUCTION = "the emulated process was killed by SIGILL (an illegal instruction)"


def _emulated_canary(work: Path) -> np.ndarray | None:
    """The canary's output the emulated process wrote, if it got that far."""
    import numpy as np

    if not (work / "canary-output.npz").is_file():
        return None
    with np.load(work / "canary-output.npz", allow_pickle=False) as archive:
        return archive["y"] if "y" in archive.files else None


def _faulted(cpu: str, canary: Canary, elapsed: float, tail: list[str], process: str) -> EmulatedRun:
    """The canary ran (the emulator is sound), then the artifact executed an instruction this CPU
    does not have: the artifact's defect on this CPU, not the emulator's."""
    if not canary.healthy:
        return EmulatedRun(cpu, [], "unknown", [], [], elapsed, 0.0, canary, canary.detail, tail, process=process)
    fault = (f"the artifact cannot run on {cpu}: it executed an instruction this CPU does not have (SIGILL, illegal "
             "instruction); build it for an ISA every deploy CPU has")
    return EmulatedRun(cpu, [], expected_class(cpu) or "unknown", [], [], elapsed, 0.0, canary, None, tail, process=process,
                       fault=fault)


def _run_once(found: str, cpu: str, work: Path, log: Path, budget_s: float) -> str | None:
    """The request in `work`, in an emulated process of its own; None, or why it gave nothing."""
    command = _emulated_python(found, cpu, str(work))
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=_child_environment(cpu),
                                   preexec_fn=_die_with_parent)
        stalled = _wait_while_progressing(lambda window: _exited(process, window), work, budget_s)
        if stalled is not None:
            process.kill()
            process.wait()
            return f"the emulated process {stalled}"
    if process.returncode == -signal.SIGILL:
        return ILLEGAL_INSTRUCTION
    if process.returncode != 0:
        return f"the emulated process exited with code {process.returncode}"
    return None


def _exited(process: subprocess.Popen[bytes], window: float) -> bool:
    try:
        process.wait(timeout=window)
        return True
    except subprocess.TimeoutExpired:
        return False


def _progress(work: Path) -> float:
    """When the emulated run last wrote something (its canary's output, a sample's output)."""
    written = [path.stat().st_mtime for path in work.glob("output-*.npz")]
    canary = work / "canary-output.npz"
    if canary.is_file():
        written.append(canary.stat().st_mtime)
    return max(written, default=0.0)


def _wait_while_progressing(finished: Any, work: Path, budget_s: float) -> str | None:
    """Wait for `finished(window)` (True when the run ended) for as long as the run makes progress:
    None when it ended, else why it was given up (no progress within STALL_S, or HARD_LIMIT_S)."""
    started = time.monotonic()
    last, seen = started, _progress(work)
    while True:
        if finished(min(30.0, STALL_S)):
            return None
        now = time.monotonic()
        if (progress := _progress(work)) > seen:
            seen, last = progress, now
        if now - last > max(STALL_S, budget_s + STARTUP_ALLOWANCE_S):
            return f"made no progress for {now - last:.0f} s (no canary or sample output written)"
        if now - started > HARD_LIMIT_S:
            return f"did not finish within {HARD_LIMIT_S:.0f} s"


def _emulated_python(emulator_path: str, cpu: str, *arguments: str) -> list[str]:
    """This interpreter running this module under `emulator -cpu CPU` (a request or a service); for
    an ARM64 core, the ARM64 root's interpreter (arm64.py).

    The interpreter is named as this process was started (a virtual environment's `bin/python`),
    not resolved to the base interpreter it links to: Python finds its environment (pyvenv.cfg, the
    site-packages and the .pth files an installed or editable modelc is found through) from that
    path, and QEMU runs the binary the link points at."""
    from modelc_build import arm64

    if arm64.is_arm(cpu):
        return arm64.command(emulator_path, cpu, *arguments)
    return [emulator_path, "-cpu", cpu, interpreter(), "-m", "modelc_build.emulation", *arguments]


def interpreter() -> str:
    """sys.executable, unless it is no ELF binary QEMU can run (then the file it resolves to)."""
    try:
        with open(sys.executable, "rb") as handle:
            if handle.read(4) == b"\x7fELF":
                return sys.executable
    except OSError:
        pass
    return os.path.realpath(sys.executable)


def _run_in_service(address: str, work: Path, budget_s: float) -> str | None:
    """The request in `work`, by a warm service: None when it answered, SERVICE_UNAVAILABLE when
    it never took the request (not started, gone: the caller runs it alone), else what went wrong
    while it ran the request (that is the emulation failing, as a crash of a lone process is)."""
    import socket

    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(address)  # refused (or not found) when the service is gone
        connection.settimeout(budget_s + STARTUP_ALLOWANCE_S)
        connection.sendall(f"{work}\n".encode())
        replies = _Replies(connection)
        if replies.next(budget_s + STARTUP_ALLOWANCE_S) != "started":
            return SERVICE_UNAVAILABLE
        answer: list[str | None] = []

        def finished(window: float) -> bool:
            try:
                answer.append(replies.next(window))
                return True
            except TimeoutError:
                return False

        stalled = _wait_while_progressing(finished, work, budget_s)
        if stalled is not None:
            return f"the emulation service {stalled}"
        return None if answer[0] == "done" else SERVICE_ENDED
    except TimeoutError:
        return f"the emulation service did not start this check within {budget_s + STARTUP_ALLOWANCE_S:.0f} s"
    except OSError:
        return SERVICE_UNAVAILABLE
    finally:
        connection.close()


class _Replies:
    """The newline-ended words the other side of a service's socket sends, one at a time, each
    awaited at most a window (None: as long as it takes; a TimeoutError leaves what was received so
    far for the next call)."""

    def __init__(self, connection: Any) -> None:
        self.connection, self.pending, self.closed = connection, b"", False

    def next(self, window: float | None) -> str | None:
        while b"\n" not in self.pending:
            if self.closed:
                return None
            self.connection.settimeout(window)
            chunk = self.connection.recv(256)
            if not chunk:
                self.closed = True
                return None
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return line.decode()


class EmulationServices:
    """Warm emulated processes for a build, one per (emulator, CPU model, backend) its checks use.

    An emulated check spends about as long starting (the interpreter, NumPy and the runtime, each
    ~100x slower under QEMU) as measuring; a service pays that once, at the start of the build,
    while export keeps one core busy, and then runs each check of its CPU and backend in turn, with
    the same code a lone process would. Services run at a lower priority (nice), so while they warm
    up they take only the cores the build leaves idle; a check waits on its service without using
    a core, so while it runs the service has that core to itself. A service ends with the build
    (stop(), and the kernel's parent-death signal if the build is killed); a check whose service is
    gone runs in a process of its own."""

    NICENESS = 10

    def __init__(self, wanted: list[tuple[str, str, str]], threads: int | None) -> None:
        self.wanted = sorted(set(wanted))  # (emulator executable, CPU model, backend)
        self.threads = threads
        self.folder: Path | None = None
        self.sockets: dict[tuple[str, str, str], str] = {}  # each started service's socket
        self.processes: list[subprocess.Popen[bytes]] = []

    def addresses(self) -> dict[str, str]:
        """Each started service's socket, keyed as VerifyStep looks it up (service_name)."""
        return {service_name(*wanted): socket for wanted, socket in self.sockets.items()}

    def start(self) -> None:
        import tempfile

        if not self.wanted or self.folder is not None:
            return
        from modelc_build import arm64

        self.folder = Path(tempfile.mkdtemp(prefix="modelc-emu-"))  # short: a socket path has ~100 bytes
        for number, (emulator_path, cpu, backend) in enumerate(self.wanted):
            if arm64.is_arm(cpu) and not arm64.ready():
                continue  # its first check prepares the ARM64 root (or says why it cannot), in a process of its own
            environment = _child_environment(cpu)
            if self.threads is not None:  # what the service's libraries start with; each request names its runner's threads
                environment["OMP_NUM_THREADS"] = str(self.threads)
            address = str(self.folder / f"{number}.sock")
            self.sockets[(emulator_path, cpu, backend)] = address
            self._start_one(emulator_path, cpu, backend, address, environment)

    def _start_one(self, emulator_path: str, cpu: str, backend: str, address: str, environment: dict[str, str]) -> None:
        """The socket is bound and listening here, then handed to the service, which holds its only
        copy: checks can connect (and queue) at once, and when the service is gone for any reason
        the socket is closed with it, so a check learns so at once and runs alone."""
        import socket

        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(16)
        command = _emulated_python(emulator_path, cpu, "--serve", str(listener.fileno()), backend)
        try:
            with open(f"{address}.log", "wb") as log:
                self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment,
                                                       pass_fds=(listener.fileno(),), preexec_fn=_die_with_parent_niced))
        except OSError:
            os.unlink(address)  # checks run in processes of their own
        finally:
            listener.close()

    def stop(self) -> None:
        import shutil

        for process in self.processes:
            process.kill()
        for process in self.processes:
            process.wait()
        self.processes = []
        self.sockets = {}
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def service_name(emulator_path: str, cpu: str, backend: str) -> str:
    return f"emulation:{emulator_path}:{cpu}:{backend}"


def _die_with_parent_niced() -> None:
    _die_with_parent()
    os.nice(EmulationServices.NICENESS)


def _child_environment(cpu: str) -> dict[str, str]:
    from modelc_build import arm64

    environment = dict(os.environ)
    environment.pop("ONEDNN_MAX_CPU_ISA", None)
    if arm64.is_arm(cpu):  # the aarch64 wheels, then modelc
        return arm64.environment(environment)
    environment["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the same packages, found the same way
    return environment


def _die_with_parent() -> None:
    """Linux: the emulated process gets SIGKILL when the process that started it dies."""
    from modelc_build.processes import die_with_parent

    die_with_parent()


def _log_tail(log: Path, lines: int = 6) -> list[str]:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in text if "TCG doesn't support requested feature" not in line][-lines:]


# --- the emulated process -------------------------------------------------------------------------

def _features() -> dict[str, bool]:
    import numpy as np

    probe = getattr(np._core._multiarray_umath, "__cpu_features__", {})  # type: ignore[attr-defined]
    wanted = ("SSE42", "AVX", "FMA3", "AVX2", "AVX512F", "AVX512BW", "AVX512VNNI", "AVX512BF16", "AVX512FP16",
              "ASIMD", "ASIMDHP", "ASIMDDP", "ASIMDFHM")
    return {name: bool(probe.get(name)) for name in wanted}


def child_main(work: Path) -> int:
    """Run the request in `work` on this (emulated) CPU; write outputs, canary and result.json."""
    run_request(work, time.monotonic())
    return 0


def run_request(work: Path, started: float) -> None:
    """One check's request, in a lone emulated process or in a service (the same code)."""
    import numpy as np

    from modelc_build.backends import get_backend
    from modelc_build.feeds import ModelCaller
    from modelc_build.recipe_types import TensorSpec

    request = json.loads((work / "request.json").read_text())
    result: dict[str, Any] = {"features": _features(), "samples_done": 0}
    inputs = tuple(TensorSpec.from_json(spec) for spec in request["inputs"])
    try:
        emulated_canary = run_canary(request["backend"], Path(request["canary"]))
        np.savez(work / "canary-output.npz", y=emulated_canary)
        runner = get_backend(request["backend"]).runner([Path(f) for f in request["files"]], inputs,
                                                        tuple(request["outputs"]), request["config"], request.get("threads"))
        runner.record_kernels = True
        with runner:
            caller = ModelCaller(inputs, runner.infer)
            result["startup_s"] = time.monotonic() - started
            inference_started = time.monotonic()
            for number in range(int(request["samples"])):
                spent = time.monotonic() - inference_started
                if number >= MIN_SAMPLES and spent + spent / number > float(request["budget_s"]):
                    break
                with np.load(work / f"sample-{number:06d}.npz", allow_pickle=False) as archive:
                    sample = {name: archive[name] for name in archive.files}
                np.savez(work / f"output-{number:06d}.npz", **caller(sample))  # type: ignore[arg-type]
                result["samples_done"] = number + 1
            result["inference_s"] = time.monotonic() - inference_started
            result["kernels"] = runner.kernels_used()
            result["runtime"] = runner.effective_settings()
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which says what failed
        result["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:400]
    (work / "result.json").write_text(json.dumps(result, indent=2))


def serve(listening_fd: int, backend: str) -> int:
    """The service (EmulationServices), on the listening socket it was handed (checks may queue
    there already): import the runtime and load its CPU kernels, then run each request in turn,
    saying `started` and `done` on its connection."""
    import socket

    listener = socket.socket(fileno=listening_fd)
    _warm_up(backend)
    while True:
        connection, _ = listener.accept()
        with connection:
            started = time.monotonic()
            work = Path(_Replies(connection).next(None) or ".")
            if not (work / "request.json").is_file():
                continue
            connection.sendall(b"started\n")
            try:
                run_request(work, started)
            except Exception as exc:  # noqa: BLE001 - this request wrote no result (the check says so); serve the next
                print(f"request {work} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            connection.sendall(b"done\n")


def _warm_up(backend: str) -> None:
    """Import what a request of this backend imports, and load its runtime's CPU kernels."""
    import numpy  # noqa: F401

    from modelc_build.backends import get_backend
    from modelc_build.feeds import ModelCaller  # noqa: F401

    get_backend(backend).warm_up()


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        sys.exit(serve(int(sys.argv[2]), sys.argv[3]))
    sys.exit(child_main(Path(sys.argv[1])))
