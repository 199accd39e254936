"""One TensorRT engine built in a process of its own, with address-space randomization off.

TensorRT for RTX's builder orders some of its choices by memory address: the same graph built for
the same generation gave 2-3 different engines across runs on this machine (a few bytes apart, or
more), under load or not, one core or two; with randomization off (`setarch -R`) it gave the same
bytes every time (5 of 5, each generation). So each engine is built by this module in a fresh
interpreter started with randomization off (the `personality` call `setarch` makes, in the child
before it executes Python). Where that is refused (a container whose seccomp profile forbids it),
the engine is built anyway and its stamp says its bytes may differ from build to build.

    python -m modelc_build.backends.engine_process REQUEST.json
"""
from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from modelc_build.backends import require
from modelc_build.errors import CompileError

ADDR_NO_RANDOMIZE = 0x0040000
QUERY = 0xFFFFFFFF
MODULE = "modelc_build.backends.engine_process"  # run as `python -m MODULE` (__name__ is then "__main__")


def _personality(value: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.personality(ctypes.c_ulong(value)))


def fixed_layout() -> bool:
    """Whether this process runs with address-space randomization off."""
    try:
        return bool(_personality(QUERY) & ADDR_NO_RANDOMIZE)
    except (OSError, AttributeError):
        return False


def _randomization_off() -> None:
    """In the child, before it executes Python: address-space randomization off for what it runs
    (it takes effect at exec). Where the kernel refuses, the child runs as it is."""
    try:
        current = _personality(QUERY)
        if current >= 0:
            _personality(current | ADDR_NO_RANDOMIZE)
    except (OSError, AttributeError):
        pass


def build_in_own_process(flavour: str, graph: Path, gpu: str, shapes: dict[str, Any], destination: Path) -> dict[str, Any]:
    """Build one engine into `destination` in a fresh process; returns what the process reported
    (`fixed_layout`: whether randomization was off)."""
    request = destination.with_suffix(".request.json")
    request.write_text(json.dumps({"flavour": flavour, "graph": str(graph), "gpu": gpu, "shapes": shapes,
                                   "destination": str(destination)}))
    try:
        done = subprocess.run([sys.executable, "-m", MODULE, str(request)], capture_output=True, text=True,
                              preexec_fn=_randomization_off)
    finally:
        request.unlink(missing_ok=True)
    answer = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    try:
        reported: dict[str, Any] = json.loads(answer[0]) if answer else {}
    except json.JSONDecodeError:
        reported = {}
    if done.returncode != 0 or "error" in reported or not destination.is_file():
        why = reported.get("error") or (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise CompileError(why)
    return reported


def tensorrt_module(flavour: str) -> Any:
    from modelc_build.gpus import RTX

    if flavour == RTX:
        return require("tensorrt_rtx", "tensorrt (TensorRT for RTX)", "tensorrt-rtx")
    return require("tensorrt", "tensorrt", "tensorrt")


class _Log:
    """A TensorRT logger that keeps its warnings and errors for the message of a failure."""

    def __init__(self, trt: Any) -> None:
        outer = self

        class Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, severity: Any, message: str) -> None:
                if severity <= trt.ILogger.Severity.WARNING:
                    outer.lines.append(message)

        self.lines: list[str] = []
        self.logger = Logger()


def build_engine(flavour: str, graph: Path, gpu: str, shapes: dict[str, dict[str, list[int]]]) -> bytes:
    """One serialized engine for one GPU generation from a graph that carries its precision."""
    from modelc_build.gpus import RTX

    trt = tensorrt_module(flavour)
    log = _Log(trt)
    builder = trt.Builder(log.logger)
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None) if flavour != RTX else None
    network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
    parser = trt.OnnxParser(network, log.logger)
    if not parser.parse_from_file(str(graph)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise CompileError(f"{flavour} could not parse {graph.name}: " + "; ".join(errors[:3]))
    config = builder.create_builder_config()
    optimization = builder.create_optimization_profile()
    for name, shape in shapes.items():
        optimization.set_shape(name, shape["min"], shape["opt"], shape["max"])
    config.add_optimization_profile(optimization)
    if flavour == RTX:  # ahead of time, for a named generation; full TensorRT builds for its own GPU
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, gpu.upper()), 0)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CompileError(f"{flavour} could not build an engine for {gpu} from {graph.name}: "
                           + ("; ".join(log.lines[-3:]) or "no message"))
    return bytes(serialized)


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text())
    try:
        data = build_engine(request["flavour"], Path(request["graph"]), request["gpu"], request["shapes"])
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it as the step's error
        print(json.dumps({"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}))
        return 1
    Path(request["destination"]).write_bytes(data)
    print(json.dumps({"fixed_layout": fixed_layout()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
