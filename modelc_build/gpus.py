"""NVIDIA GPU generations: their names, which TensorRT can build an engine for each, and which GPU
this machine has.

TensorRT engines are locked to a compute capability (and a TensorRT version). TensorRT for RTX
builds ahead of time, with no GPU, for the generations it targets; full TensorRT builds only for
the GPU it runs on, so Hopper and data-center Blackwell engines need a machine with that GPU.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

GENERATIONS = {
    "sm75": "Turing: T4, RTX 20",
    "sm80": "Ampere data-center: A100, A30",
    "sm86": "Ampere: A10, A40, RTX 30",
    "sm89": "Ada: L4, L40, RTX 40",
    "sm90": "Hopper: H100, H200",
    "sm100": "Blackwell data-center: B200",
    "sm120": "Blackwell RTX: RTX 50, RTX PRO 6000",
    "sm121": "Blackwell: GB10",
}
ALIASES = {"turing": "sm75", "a100": "sm80", "ampere": "sm86", "ada": "sm89", "hopper": "sm90", "blackwell": "sm100",
           "blackwell-rtx": "sm120"}
RTX_TARGETS = ("sm75", "sm80", "sm86", "sm89", "sm120", "sm121")  # TensorRT for RTX's ComputeCapability values
DEFAULT_GPUS = ("sm86", "sm89")  # Ampere and Ada: the A10/L4 class of inference servers and RTX 30/40 cards
RTX = "tensorrt-rtx"
FULL = "tensorrt"
FLAVOURS = ("auto", FULL, RTX)  # a tensorrt target's `flavour`: who builds its engines

# What each TensorRT flavour runs on each generation, in modelc's precision names (`int8`: INT8
# activations and weights, the Q/DQ convolutions and GEMMs of a ModelOpt graph; `int8-wo`/`int4-wo`:
# weight-only GEMM; `fp8`, `fp4`). Sources:
# - TensorRT for RTX 1.0-1.5 support matrices, "GPU Architecture and Precision Support" (identical
#   rows in each): 12.0/12.1 FP32 FP16 BF16, INT8 WoQ GEMM, INT4 WoQ GEMM, FP8, FP4 GEMM; 8.9 the same
#   without FP4; 8.6 without FP8 and FP4; 7.5 FP32 and FP16 only. No INT8 convolution (nor INT8
#   activations) on any generation; its guide calls it "optimized for 16-bit floating point types".
#   8.0 (A100) is not in the matrix although the 1.7 wheel targets it: the Ampere row (8.6) is used.
# - TensorRT 10.x support matrix: INT8 (activations) from 7.5 on, BF16 from 8.0, FP8 from 8.9, FP4
#   from 10.0; INT4/INT8 weight-only GEMM from 7.5 (ModelOpt's weight-only paths).
_RTX_AMPERE = frozenset({"fp32", "fp16", "bf16", "int8-wo", "int4-wo"})
PRECISION_TABLE: dict[str, dict[str, frozenset[str]]] = {
    RTX: {
        "sm75": frozenset({"fp32", "fp16"}),
        "sm80": _RTX_AMPERE,
        "sm86": _RTX_AMPERE,
        "sm89": _RTX_AMPERE | {"fp8"},
        "sm120": _RTX_AMPERE | {"fp8", "fp4"},
        "sm121": _RTX_AMPERE | {"fp8", "fp4"},
    },
    FULL: {
        "sm75": frozenset({"fp32", "fp16", "int8", "int8-wo", "int4-wo"}),
        **{gpu: frozenset({"fp32", "fp16", "bf16", "int8", "int8-wo", "int4-wo"}) for gpu in ("sm80", "sm86")},
        **{gpu: frozenset({"fp32", "fp16", "bf16", "int8", "int8-wo", "int4-wo", "fp8"}) for gpu in ("sm89", "sm90")},
        **{gpu: frozenset({"fp32", "fp16", "bf16", "int8", "int8-wo", "int4-wo", "fp8", "fp4"})
           for gpu in ("sm100", "sm120", "sm121")},
    },
}
TABLE_SOURCE = "TensorRT for RTX 1.0-1.5 and TensorRT 10.x support matrices"


def canonical(name: str) -> str | None:
    """'ada' or 'SM89' -> 'sm89'; None for an unknown name."""
    lowered = name.strip().lower()
    lowered = ALIASES.get(lowered, lowered)
    return lowered if lowered in GENERATIONS else None


def words(gpu: str) -> str:
    return f"{gpu} ({GENERATIONS.get(gpu, 'unknown')})"


@lru_cache(maxsize=1)
def local_gpus() -> tuple[str, ...]:
    """The compute capabilities of this machine's NVIDIA GPUs (nvidia-smi), () without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    try:
        listed = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = []
    for line in listed.splitlines():
        major, _, minor = line.strip().partition(".")
        if major.isdigit() and minor.isdigit():
            found.append(f"sm{int(major)}{int(minor)}")
    return tuple(dict.fromkeys(found))


def installed(flavour: str) -> bool:
    return importlib.util.find_spec("tensorrt_rtx" if flavour == RTX else "tensorrt") is not None


@dataclass(frozen=True)
class EngineBuilder:
    """Who builds an engine for one generation here, or why nobody can."""

    gpu: str
    flavour: str | None  # tensorrt-rtx | tensorrt | None
    reason: str = ""  # when flavour is None: what is missing and where it can be built
    asked: str = "auto"  # the flavour the recipe asked for


def planned_flavour(gpu: str, flavour: str = "auto") -> str:
    """Who builds this generation's engine as the recipe asks, wherever it is built: `auto` is
    TensorRT for RTX where it targets the generation (no GPU needed), full TensorRT elsewhere."""
    if flavour != "auto":
        return flavour
    return RTX if gpu in RTX_TARGETS else FULL


def precision_verdict(gpu: str, precision: str, flavour: str = "auto") -> str | None:
    """None where the flavour that builds `gpu`'s engine runs `precision` there; else why not and
    what to ask for instead, in one line."""
    builder = planned_flavour(gpu, flavour)
    table = PRECISION_TABLE.get(builder, {})
    if gpu not in table:
        return None if builder == FULL else f"TensorRT for RTX does not target {words(gpu)}: use flavour: tensorrt"
    if precision in table[gpu]:
        return None
    name = "TensorRT for RTX" if builder == RTX else "TensorRT"
    if builder == RTX and precision == "int8":
        return (f"{name} lists no INT8 convolution for {gpu} (its 1.0-1.5 support matrices list INT8 only as weight-only "
                "GEMM): use fp16, or full TensorRT on a GPU runner for INT8 engines (flavour: tensorrt)")
    runs = ", ".join(sorted(table[gpu]))
    return f"{name} does not run {precision} on {words(gpu)} ({TABLE_SOURCE}; it runs {runs}): ask for one of those"


def engine_builder(gpu: str, flavour: str = "auto") -> EngineBuilder:
    """Full TensorRT where this machine has that GPU and TensorRT installed (it builds for the GPU it
    runs on); else TensorRT for RTX for the generations it targets (no GPU needed). A recipe that
    names its flavour gets that one or a reason."""
    if flavour != RTX and gpu in local_gpus() and installed(FULL):
        return EngineBuilder(gpu, FULL, asked=flavour)
    where = f"this machine has {', '.join(local_gpus())}" if local_gpus() else "this machine has no NVIDIA GPU"
    if flavour == FULL:
        installed_words = "" if installed(FULL) else "; full TensorRT is not installed (`pip install 'modelc-build[tensorrt]'`)"
        return EngineBuilder(gpu, None, f"{words(gpu)} with flavour: tensorrt needs full TensorRT on a machine with that "
                                        f"GPU ({where}{installed_words}): build it on the GPU runner", flavour)
    if gpu in RTX_TARGETS:
        if installed(RTX):
            return EngineBuilder(gpu, RTX, asked=flavour)
        return EngineBuilder(gpu, None, f"{words(gpu)} is built by TensorRT for RTX, which is not installed: "
                                        "pip install 'modelc-build[tensorrt-rtx]'", flavour)
    return EngineBuilder(gpu, None, f"{words(gpu)} needs full TensorRT on a machine with that GPU (TensorRT for RTX "
                                    f"builds {', '.join(RTX_TARGETS)} only; {where}): build it on the GPU runner "
                                    "(`pip install 'modelc-build[tensorrt]'` there), or leave it out with --skip-unavailable", flavour)


def runnable_here(gpus: tuple[str, ...]) -> str | None:
    """The local GPU one of these engines runs on, where a TensorRT runtime is installed too."""
    for gpu in local_gpus():
        if gpu in gpus and (installed(FULL) or installed(RTX)):
            return gpu
    return None


def not_run_reason(gpus: tuple[str, ...]) -> str:
    """Why engines for these generations did not run on this machine."""
    names = "/".join(g.upper() for g in gpus)
    if not local_gpus():
        return f"no {names} GPU on this machine (no NVIDIA GPU at all)"
    if not any(g in gpus for g in local_gpus()):
        return f"no {names} GPU on this machine (it has {', '.join(local_gpus())})"
    return "no TensorRT runtime installed beside the GPU"
