"""Imported by the fresh-process server alone (workers.fresh_process_context's preload list): it
makes that server end at once when the build ends.

The server holds torch, OpenVINO and onnxruntime; an interpreter that has loaded them spends ~0.5 s
tearing them down at exit. The server shares the build's stdout and stderr, so a caller that reads
the build's output to its end (CI, `subprocess.run`) waited for that teardown after the build had
finished. The server has nothing to flush or close, so it skips it."""
from __future__ import annotations

import atexit
import os
import sys


def _end_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _in_the_server() -> bool:
    """The forkserver's main module is a `-c` one-liner that imports multiprocessing.forkserver."""
    return "multiprocessing.forkserver" in sys.modules and getattr(sys.modules.get("__main__"), "__file__", None) is None


if _in_the_server():
    SERVER_PID = os.getpid()
    atexit.register(lambda: _end_now() if os.getpid() == SERVER_PID else None)
