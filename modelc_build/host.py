"""The machine a build runs on: CPU model and the instruction sets that decide which INT8 kernels
run (VNNI, AMX, AVX-512, AVX2). Recorded in the report and the manifest.

INT8 kernels come in families by CPU class, and the families differ in speed and in accuracy:
pre-VNNI 8-bit kernels (AVX2, AVX-512 without VNNI) sum products in saturating int16, VNNI and AMX
kernels do not. A result measured on one class holds for that class only, so the class is key
material of every native measurement and names the CPUs an emulated check stands for.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from modelc_build.arm64 import ARM_CORES
from modelc_build.gpus import EngineBuilder

ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
             "avx512_bf16": "AVX-512 BF16", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16"}

# CPU classes by the INT8 kernels they run, newest first: (class, the /proc/cpuinfo flag that makes it)
KERNEL_CLASSES = (("amx", "amx_int8"), ("avx512-vnni", "avx512_vnni"), ("avx-vnni", "avx_vnni"),
                  ("avx512", "avx512f"), ("avx2", "avx2"), ("avx", "avx"), ("sse4", "sse4_2"),
                  # ARM64, by the `Features` of its /proc/cpuinfo: 8-bit matrix multiply, dot product, NEON
                  ("arm64-i8mm", "i8mm"), ("arm64-dotprod", "asimddp"), ("arm64", "asimd"))
PRE_VNNI = frozenset({"avx512", "avx2", "avx", "sse4"})  # 8-bit products summed in saturating int16

# QEMU CPU models that QEMU 7.2's TCG emulates completely (up to AVX2), by the class they stand for.
# Models that ask for AVX-512 or VNNI (Skylake-Server, Cascadelake-Server, ...) lose those under TCG.
EMULATED_CLASSES = {"Haswell": "avx2", "Broadwell": "avx2", "Skylake-Client": "avx2", "EPYC": "avx2",
                    "EPYC-Rome": "avx2", "EPYC-Milan": "avx2", "SandyBridge": "avx", "IvyBridge": "avx",
                    "Nehalem": "sse4", "Westmere": "sse4",
                    **{cpu: core.kernel_class for cpu, core in ARM_CORES.items()}}  # qemu-aarch64 (arm64.py)


def kernel_class(flags: set[str]) -> str:
    """The CPU class of a set of /proc/cpuinfo flags (see KERNEL_CLASSES)."""
    return next((name for name, flag in KERNEL_CLASSES if flag in flags), "unknown")


def _cpu_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", platform.processor()):
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:  # x86, ARM64
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


# numpy's CPUID probe name -> the /proc/cpuinfo flag it confirms (the vector extensions a pre-VNNI
# Haswell lacks tell an emulated Haswell from its host even where the host has no AVX-512)
CPUID_FLAGS = {"AVX2": "avx2", "AVX512F": "avx512f", "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16",
               "GFNI": "gfni", "VAES": "vaes", "VPCLMULQDQ": "vpclmulqdq"}
UNPROBED = ("avx_vnni", "amx_int8", "amx_bf16", "amx_tile", "amx_fp16")  # numpy cannot confirm these; QEMU emulates none


def _as_executed(flags: set[str]) -> tuple[set[str], bool]:
    """The flags as this process's CPUID answers, where they differ from /proc/cpuinfo: under QEMU
    user mode /proc/cpuinfo is the host's while the CPU the program runs on is the emulated one.
    Returns the corrected flags and whether a correction was made (numpy's probe, when installed).
    An emulated process keeps no flag numpy cannot confirm (AVX-VNNI, AMX): QEMU's TCG plays none
    of them, and a host's AVX-VNNI seen through /proc/cpuinfo made an emulated Haswell a VNNI CPU."""
    try:
        import numpy as np

        probe = getattr(np._core._multiarray_umath, "__cpu_features__", None)  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        return flags, False
    if not probe:
        return flags, False
    missing = {flag for name, flag in CPUID_FLAGS.items() if flag in flags and not probe.get(name)}
    if not missing:
        return flags, False
    if "avx512f" in missing:  # no AVX-512 at all: none of its extensions either
        missing |= {f for f in flags if f.startswith("avx512")}
    missing |= {f for f in flags if f in UNPROBED}
    return flags - missing, True


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    model, flags = _cpu_flags()
    flags, emulated = _as_executed(flags)
    if emulated:
        model += " (emulated CPU: CPUID differs from /proc/cpuinfo)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    isa = [name for flag, name in ISA_FLAGS.items() if flag in flags]
    return {"cpu": model, "machine": platform.machine(), "cores": cores, "isa": isa,
            "vnni": any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8")),
            "avx512": "avx512f" in flags, "kernel_class": kernel_class(flags),
            "low_precision_float": any(flag in flags for flag in ("avx512_bf16", "amx_bf16", "amx_fp16"))}


def host_class() -> str:
    return str(cpu_info()["kernel_class"])


@dataclass(frozen=True)
class HostFacts:
    """What a plan may depend on about the machine it is made on, read once and passed in
    explicitly: a plan is a function of the recipe and these facts (`modelc_build.plan.probe_host`
    reads them; a test states them)."""

    cpu_class: str = "unknown"  # the INT8 kernel class (KERNEL_CLASSES)
    vnni: bool = False  # VNNI INT8 kernels: a VNNI-only layout can be verified here
    low_precision_float: bool = False  # OpenVINO runs FP32 IR in bf16 by default here
    emulator: str | None = None  # the emulator executable (qemu-x86_64), None: not installed
    arm_emulator: str | None = None  # qemu-aarch64, for the ARM64 CPUs of verify.cpus (arm64.py), None: not installed
    gpus: tuple[str, ...] = ()  # GPU generations whose engines can run here (a TensorRT runtime beside the GPU)
    engine_builders: tuple[EngineBuilder, ...] = ()  # who builds an engine for each GPU generation here, or why nobody

    @classmethod
    def of_cpu(cls, emulator: str | None, gpus: tuple[str, ...], engine_builders: tuple[EngineBuilder, ...],
               arm_emulator: str | None = None) -> HostFacts:
        info = cpu_info()
        return cls(str(info["kernel_class"]), bool(info["vnni"]), bool(info["low_precision_float"]), emulator, arm_emulator,
                   gpus, engine_builders)

    def emulator_for(self, cpu: str) -> str | None:
        """The emulator that plays a QEMU CPU model: qemu-aarch64 for an ARM64 core, else qemu-x86_64."""
        from modelc_build.arm64 import is_arm

        return self.arm_emulator if is_arm(cpu) else self.emulator

    CPU_FACTS = ("cpu_class", "vnni", "low_precision_float")

    def cpu_facts(self) -> dict[str, object]:
        """What of this machine a native check's key depends on: a job that measured on one runner
        hands these to the release job on another, which then plans the same keys."""
        return {key: getattr(self, key) for key in self.CPU_FACTS}

    def with_cpu_facts(self, facts: dict[str, object]) -> HostFacts:
        from dataclasses import replace

        return replace(self, cpu_class=str(facts["cpu_class"]), vnni=bool(facts["vnni"]),
                       low_precision_float=bool(facts["low_precision_float"]))

    def engine_builder(self, gpu: str, flavour: str = "auto") -> EngineBuilder:
        found = next((builder for builder in self.engine_builders if builder.gpu == gpu and builder.asked == flavour), None)
        return found or EngineBuilder(gpu, None, f"no engine builder for {gpu} is known on this machine")
