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


def engine_builder(gpu: str) -> EngineBuilder:
    """Full TensorRT where this machine has that GPU and TensorRT installed (it builds for the GPU it
    runs on); else TensorRT for RTX for the generations it targets (no GPU needed)."""
    if gpu in local_gpus() and installed(FULL):
        return EngineBuilder(gpu, FULL)
    if gpu in RTX_TARGETS:
        if installed(RTX):
            return EngineBuilder(gpu, RTX)
        return EngineBuilder(gpu, None, f"{words(gpu)} is built by TensorRT for RTX, which is not installed: "
                                        "pip install 'modelc-build[tensorrt-rtx]'")
    where = f"this machine has {', '.join(local_gpus())}" if local_gpus() else "this machine has no NVIDIA GPU"
    return EngineBuilder(gpu, None, f"{words(gpu)} needs full TensorRT on a machine with that GPU (TensorRT for RTX "
                                    f"builds {', '.join(RTX_TARGETS)} only; {where}): build it on the GPU runner "
                                    "(`pip install 'modelc-build[tensorrt]'` there), or leave it out with --skip-unavailable")


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
