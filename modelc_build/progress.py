"""What a build tells the person watching: one live line per running step on a terminal (rich),
and a plain line per event otherwise (CI logs)."""
from __future__ import annotations

import sys
import threading
from typing import Any, Callable

_STDERR_LOCK = threading.Lock()


def _write_stderr(line: str) -> None:
    """One whole line per write, under a lock: steps finish on worker threads, and print()'s
    separate write of the newline let two steps' lines run together in CI logs."""
    with _STDERR_LOCK:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class BuildLog:
    """Plain log: every start, finish and note is one line on stderr."""

    def __init__(self, write: Callable[[str], None] | None = None) -> None:
        self._write = write or _write_stderr

    def __call__(self, line: str) -> None:
        self._write(line)

    def start(self, step_id: str, line: str) -> None:
        self._write(line)

    def done(self, step_id: str, line: str) -> None:
        self._write(line)

    def close(self) -> None:
        pass


class LiveBuildLog(BuildLog):
    """On a terminal: a spinner line per running step; finished steps scroll above it."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self._console = Console(stderr=True)
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=self._console, transient=True)
        self._tasks: dict[str, Any] = {}
        self._progress.start()
        super().__init__(lambda line: self._progress.console.print(line, highlight=False, markup=False))

    def start(self, step_id: str, line: str) -> None:
        self._tasks[step_id] = self._progress.add_task(line.removeprefix("▶ "), total=None)

    def done(self, step_id: str, line: str) -> None:
        task = self._tasks.pop(step_id, None)
        if task is not None:
            self._progress.remove_task(task)
            self._progress.refresh()  # redraw now, or the finished step lingers under the next print
        self._write(line)

    def close(self) -> None:
        self._progress.stop()


class QuietBuildLog(BuildLog):
    """Step lines dropped; warnings (lines that say so) still shown."""

    def __call__(self, line: str) -> None:
        if line.lstrip().startswith(("warning", "error")):
            self._write(line)

    def start(self, step_id: str, line: str) -> None:
        pass

    def done(self, step_id: str, line: str) -> None:
        if line.startswith("✗"):
            self._write(line)


def build_log(quiet: bool = False, plain: bool = False) -> BuildLog:
    """Live lines on an interactive terminal, plain lines in CI or when redirected (or asked for);
    `quiet`: warnings and failures only. Colour follows NO_COLOR / FORCE_COLOR (rich reads them)."""
    import os

    if quiet:
        return QuietBuildLog()
    if sys.stderr.isatty() and not os.environ.get("CI") and not plain:
        try:
            return LiveBuildLog()
        except ImportError:  # rich comes with the build extra; plain lines without it
            pass
    return BuildLog()
