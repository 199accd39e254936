"""Steps in fresh processes: each forked from a server that imported torch, OpenVINO, onnxruntime
and onnx once, so a step starts from the same state as a new interpreter without paying for the
imports.

Why: torch (TorchScript type mangling) and OpenVINO (generated layer names) number things with
process-wide counters, so a step's bytes would otherwise depend on what the same process did
before it. In a fresh process a step's output is a function of its inputs alone, whatever the
schedule, cache state or `-j`. A worker is a child of the fork server, not of the build: it
watches the build's process and ends within a second of it (modelc_build/processes.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from modelc_build.processes import end_with, peak_memory_bytes, reset_peak_memory, share_cores
from modelc_build.steps import Step, StepInputs


def _child(step: Step, inputs: StepInputs, out: Path, answer: Any, build_pid: int) -> None:
    """In the fresh process: run the step and send back None or the exception it raised. It is a
    child of the fork server, not of the build, so it watches the build's process and ends within
    a second of it, whatever killed it (SIGKILL included)."""
    end_with(build_pid)
    if inputs.threads is not None:
        share_cores(inputs.threads)
    reset_peak_memory()  # the step's peak, not the fork server's
    _quiet_onnxruntime()
    outcome: BaseException | None = None
    try:
        step.run(inputs, out)
    except BaseException as error:  # noqa: BLE001 - every outcome goes back to the parent
        import traceback

        # the traceback stays in this process; its text travels as a note (`--debug` prints it)
        error.add_note("in the step's own process:\n" + "".join(traceback.format_exception(error)).rstrip())
        outcome = error
    try:
        answer.send((outcome, peak_memory_bytes()))
    except Exception:  # noqa: BLE001 - an exception that cannot be pickled: its text goes back
        answer.send((RuntimeError(f"{type(outcome).__name__}: {outcome}"), None))
    finally:
        answer.close()


def _quiet_onnxruntime() -> None:
    """onnxruntime's own warnings (a graph whose declared output shape is not what it computes
    prints one line per run) would drown the build's log; its errors still reach the step."""
    import sys

    if "onnxruntime" in sys.modules:
        sys.modules["onnxruntime"].set_default_logger_severity(3)


def run_in_fresh_process(step: Step, inputs: StepInputs, out: Path, preload: tuple[str, ...]) -> int | None:
    """One process per step, forked from the preloaded server. A process that ends without an
    answer (a crash in a library, `os._exit` in the model's code) fails this step alone, with the
    error the step names for it; it can never end modelc itself. Returns the process's peak
    resident memory in bytes (None where the platform does not say)."""
    context = fresh_process_context(preload)
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(step, inputs, out, send, os.getpid()), name=f"modelc {step.id}")
    process.start()
    send.close()
    try:
        outcome, peak = receive.recv()
    except EOFError:  # the child ended without sending anything
        process.join()
        raise step.crashed(process.exitcode) from None
    finally:
        receive.close()
    process.join()
    if outcome is not None:
        raise outcome
    return peak


def fresh_process_context(preload: tuple[str, ...]) -> Any:
    """Processes forked from a server that has imported `preload` once: every task starts from the
    same state as a new process without paying the imports of torch and OpenVINO per step."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["modelc_build.fork_server", "modelc_build.workers", *preload])
    return context


def start_fresh_process_server(preload: tuple[str, ...]) -> None:
    """Start the server early, so its imports overlap with work done in this process."""
    from multiprocessing import forkserver

    fresh_process_context(preload)
    forkserver.ensure_running()

