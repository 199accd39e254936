"""What the side-by-side benchmarks share: time a command in a fresh process, print two medians
and their ratio measured in one run."""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(command: list[str], cwd: Path) -> float:
    """Wall seconds of one run; a failed run stops the benchmark with its error output."""
    return timed_with_output(command, cwd)[0]


def timed_with_output(command: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of one run and what it printed; a failed run stops the benchmark."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{command[:3]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - started, result.stdout


def print_ratio(baseline: tuple[str, list[float]], ours: tuple[str, list[float]], ratio_label: str, target: str,
                digits: int = 2) -> None:
    """Both medians with their runs, then ours / baseline."""
    (base_label, base_runs), (our_label, our_runs) = baseline, ours
    b, o = statistics.median(base_runs), statistics.median(our_runs)
    print(f"{base_label}: median {b:.{digits}f} s  runs {[round(t, digits) for t in base_runs]}")
    print(f"{our_label}: median {o:.{digits}f} s  runs {[round(t, digits) for t in our_runs]}")
    print(f"ratio {ratio_label}: {o / b:.3f} ({target})")
