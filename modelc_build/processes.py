"""Child processes that end with the build. A process the build starts itself (an emulator) asks the
kernel for SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG, Linux); a step's worker, which is a
child of the fork server rather than of the build, watches the build's process id and ends within
a second of it. So no worker or emulator outlives a build, however it ended, SIGKILL included."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Call in a freshly forked child (e.g. `subprocess.Popen(preexec_fn=...)`). Where the platform
    has no such call this does nothing; if the parent is already gone, the child ends now."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died between fork and prctl
        os._exit(1)


WATCH_INTERVAL_S = 0.25


def end_with(pid: int) -> None:
    """End this process (SIGKILL to itself and, through PDEATHSIG, its own children) within a
    moment of process `pid` ending: a daemon thread looks every WATCH_INTERVAL_S."""
    def watch() -> None:
        while True:
            time.sleep(WATCH_INTERVAL_S)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGKILL)
            except PermissionError:  # alive, owned by another user (pid reused): keep watching
                pass

    threading.Thread(target=watch, name=f"end with {pid}", daemon=True).start()


def reset_peak_memory() -> None:
    """Start this process's peak resident memory (VmHWM) again from what it holds now (Linux:
    /proc/self/clear_refs, value 5), so a forked worker's peak is its step's, not its parent's."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _proc_kilobytes(path: str, field: str) -> int | None:
    """A `FIELD: N kB` line of a /proc file, in bytes (Linux), None if absent."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_memory_bytes() -> int | None:
    """This process's peak resident memory (VmHWM on Linux; ru_maxrss elsewhere), None if unknown."""
    peak = _proc_kilobytes("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024
    except (ImportError, OSError):
        return None


def available_memory_bytes() -> int | None:
    """Memory this machine can give without swapping (MemAvailable; Linux), None if unknown."""
    return _proc_kilobytes("/proc/meminfo", "MemAvailable")


def share_cores(threads: int) -> None:
    """Run this step's process on `threads` threads: steps side by side on a few cores each
    spinning up a thread per core slow each other down (two MobileNetV2 reference runs at once:
    14.7 s with 2 threads each, 8.8 s with 1, on 2 cores). torch is told now, and libraries that
    start later read OMP_NUM_THREADS; onnxruntime and OpenVINO runners are given the count by the
    step (StepInputs.threads -> Backend.runner)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
