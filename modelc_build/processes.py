"""Child processes that end with the build: on Linux a child asks the kernel for SIGKILL when the
process that started it dies (prctl PR_SET_PDEATHSIG), so no emulator or worker outlives a build
that was killed, even by SIGKILL."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

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
