"""The machine a build runs on: CPU model and the instruction sets that decide which INT8 kernels
run (VNNI, AMX, AVX-512, AVX2). Recorded in the report and the manifest."""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

ISA_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI",
             "avx512_bf16": "AVX-512 BF16", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16"}


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("unknown", platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    isa = [name for flag, name in ISA_FLAGS.items() if flag in flags]
    return {"cpu": model, "machine": platform.machine(), "cores": cores, "isa": isa,
            "vnni": any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8")),
            "avx512": "avx512f" in flags,
            "low_precision_float": any(flag in flags for flag in ("avx512_bf16", "amx_bf16", "amx_fp16"))}
