"""ARM64 deploy CPUs under QEMU user mode: an ARM64 root, aarch64 wheels, and a cpuinfo per core.

An x86 build machine runs an ARM64 Python under `qemu-aarch64 -cpu neoverse-n1 -L VIEW
VIEW/usr/bin/python3.11`. What that needs, prepared once per machine and kept (keyed by the
versions it holds) under ~/.cache/modelc/arm64/ (or $MODELC_ARM64_ROOT):

- a root of Debian's ARM64 packages (Python and the C++ runtime libraries; `mmdebstrap
  --variant=extract`, no chroot, no binfmt_misc: ~76 MB);
- the aarch64 wheels of the runtimes at the versions this machine runs (NumPy, onnxruntime,
  OpenVINO) from PyPI, installed into `site/` (pip --platform; every manylinux tag is named, or pip
  silently picks a release years old that has a wheel for the one tag it was given);
- one view of the root per CPU model: links to the root, plus the /proc/cpuinfo and MIDR register
  an ARM kernel would show on that core. QEMU serves /proc/cpuinfo from the host, an x86 file:
  onnxruntime's CPU detection then crashes, and OpenVINO's reads the core from MIDR_EL1.

modelc itself is pure Python: the emulated interpreter imports this checkout or installation
(its parent folder goes on PYTHONPATH after the wheels). `modelc prepare-cpus` prepares ahead (the
Action does not yet, nor caches it); a build prepares on first use.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from modelc_build.errors import BackendUnavailable

ROOT_VARIABLE = "MODELC_ARM64_ROOT"  # where the prepared roots live (default ~/.cache/modelc/arm64)
ROOTS_SERVICE = "arm64:roots"  # StepInputs.services: the roots folder as the build's process saw it
EMULATOR_VARIABLE = "MODELC_ARM64_EMULATOR"  # another qemu-aarch64 (or a wrapper) with its arguments
DEBIAN_SUITE = "bookworm"
PYTHON = "3.11"  # Debian bookworm's python3, the wheels' tag
PACKAGES = ("python3.11", "libstdc++6", "libgomp1")
RUNTIMES = ("numpy", "onnxruntime", "openvino")  # installed at this machine's versions
WHEEL_PLATFORMS = ("manylinux_2_35_aarch64", "manylinux_2_34_aarch64", "manylinux_2_31_aarch64", "manylinux_2_28_aarch64",
                   "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")
READY_FILE = "ready"


@dataclass(frozen=True)
class ArmCore:
    """What an ARM kernel shows of one core: /proc/cpuinfo and the MIDR_EL1 register."""

    part: int
    variant: int
    revision: int
    features: str
    kernel_class: str  # host.KERNEL_CLASSES: dotprod (SDOT/UDOT) INT8 kernels or plain NEON ones

    @property
    def midr(self) -> int:
        return (0x41 << 24) | (self.variant << 20) | (0xF << 16) | (self.part << 4) | self.revision


# QEMU 7.2's ARM64 CPU models (qemu-aarch64 -cpu help) that stand for deployed cores
ARM_CORES = {
    "neoverse-n1": ArmCore(0xD0C, 3, 1, "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                                        "lrcpc dcpop asimddp ssbs", "arm64-dotprod"),  # AWS Graviton2, Ampere Altra
    "cortex-a76": ArmCore(0xD0B, 4, 1, "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                                       "lrcpc dcpop asimddp", "arm64-dotprod"),  # Raspberry Pi 5
    "cortex-a72": ArmCore(0xD08, 0, 3, "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid", "arm64"),  # Raspberry Pi 4
}


class ArmRootUnavailable(BackendUnavailable):
    """The ARM64 root could not be prepared (no mmdebstrap, no network): the check did not run."""


def is_arm(cpu: str) -> bool:
    return cpu in ARM_CORES


def emulator() -> str | None:
    chosen = os.environ.get(EMULATOR_VARIABLE)
    if chosen:
        return chosen if shutil.which(chosen) else None
    return shutil.which("qemu-aarch64")


def runtime_versions() -> dict[str, str]:
    """The versions of the runtimes this machine runs (the ARM root holds the same); a runtime
    not installed here is not installed there."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in RUNTIMES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def root_key() -> str:
    """What the root holds, as one folder name: the suite, Python, and each runtime's version."""
    versions = "-".join(f"{name}{value}" for name, value in sorted(runtime_versions().items()))
    return f"{DEBIAN_SUITE}-py{PYTHON}-{versions}".replace("+", "_")


def use_roots(folder: str | None) -> None:
    """In a step's process (forked from a server started earlier): the roots folder the build saw."""
    if folder:
        os.environ[ROOT_VARIABLE] = folder


def roots_folder() -> Path:
    chosen = os.environ.get(ROOT_VARIABLE)
    return Path(chosen) if chosen else Path.home() / ".cache" / "modelc" / "arm64"


def root() -> Path:
    return roots_folder() / root_key()


def ready() -> bool:
    return (root() / READY_FILE).is_file()


def prepare(say: Callable[[str], None] | None = None) -> Path:
    """The ARM64 root for this machine's runtime versions, made once (a lock keeps two builds
    from making it twice); returns its folder. Raises ArmRootUnavailable saying what failed."""
    from filelock import FileLock

    target = root()
    if (target / READY_FILE).is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ArmRootUnavailable(f"the ARM64 root could not be prepared: cannot create {target.parent} ({error.strerror}): "
                                 f"set {ROOT_VARIABLE} to a writable folder") from None
    with FileLock(str(target) + ".lock"):
        if (target / READY_FILE).is_file():
            return target
        if say is not None:
            say(f"preparing the ARM64 root for emulated ARM CPUs in {target} (once per machine)")
        scratch = Path(tempfile.mkdtemp(prefix=".making-", dir=target.parent))
        try:
            _debian_root(scratch / "root")
            _wheels(scratch / "site")
            shutil.rmtree(target, ignore_errors=True)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        (target / READY_FILE).write_text(root_key() + "\n")
    return target


def _run(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ArmRootUnavailable(f"the ARM64 root could not be prepared: {what} did not run ({error}); "
                                 "install mmdebstrap and qemu-user, with network access to Debian and PyPI, "
                                 "then run `modelc prepare-cpus`") from None
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-2:])[:300]
        raise ArmRootUnavailable(f"the ARM64 root could not be prepared: {what} exited {done.returncode} ({tail}); "
                                 "it needs network access to Debian and PyPI once: run `modelc prepare-cpus` where it has")


def _debian_root(folder: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise ArmRootUnavailable("the ARM64 root could not be prepared: mmdebstrap is not installed: "
                                 "apt-get install mmdebstrap, then run `modelc prepare-cpus`")
    _run(["mmdebstrap", "--quiet", "--mode=root" if os.geteuid() == 0 else "--mode=unshare", "--variant=extract",
          "--architectures=arm64", f"--include={','.join(PACKAGES)}", DEBIAN_SUITE, str(folder)], "mmdebstrap")


def _wheels(folder: Path) -> None:
    pins = [f"{name}=={value}" for name, value in sorted(runtime_versions().items())]
    platforms = [argument for tag in WHEEL_PLATFORMS for argument in ("--platform", tag)]
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(folder),
          *platforms, "--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp", *pins],
         "pip install of the aarch64 wheels")


def view(cpu: str) -> Path:
    """The root as seen on `cpu`: links to the prepared root, and that core's cpuinfo and MIDR."""
    core = ARM_CORES[cpu]
    base = root()
    folder = base / "views" / cpu
    if (folder / READY_FILE).is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for entry in (base / "root").iterdir():
        link = folder / entry.name
        if not link.is_symlink():
            link.symlink_to(entry)
    (folder / "proc").mkdir(exist_ok=True)
    (folder / "proc" / "cpuinfo").write_text(_cpuinfo(core, os.cpu_count() or 1))
    for number in range(os.cpu_count() or 1):
        registers = folder / f"sys/devices/system/cpu/cpu{number}/regs/identification"
        registers.mkdir(parents=True, exist_ok=True)
        (registers / "midr_el1").write_text(f"0x{core.midr:016x}\n")
    (folder / READY_FILE).write_text(cpu + "\n")
    return folder


def _cpuinfo(core: ArmCore, cores: int) -> str:
    blocks = [f"processor\t: {number}\nBogoMIPS\t: 50.00\nFeatures\t: {core.features}\nCPU implementer\t: 0x41\n"
              f"CPU architecture: 8\nCPU variant\t: 0x{core.variant:x}\nCPU part\t: 0x{core.part:03x}\n"
              f"CPU revision\t: {core.revision}\n" for number in range(cores)]
    return "\n".join(blocks) + "\n"


def command(emulator_path: str, cpu: str, *arguments: str) -> list[str]:
    """The emulated ARM64 Python running modelc's emulation module on `cpu`."""
    folder = view(cpu)
    return [emulator_path, "-cpu", cpu, "-L", str(folder), str(folder / "usr/bin/python3.11"), "-m", "modelc_build.emulation",
            *arguments]


def environment(base: dict[str, str]) -> dict[str, str]:
    """The aarch64 wheels, then modelc (pure Python) from where this process imports it."""
    import modelc_build

    package_parent = str(Path(modelc_build.__file__).resolve().parent.parent)
    child = {k: v for k, v in base.items() if not k.startswith("PYTHON")}
    child["PYTHONPATH"] = os.pathsep.join([str(root() / "site"), package_parent])
    child["PYTHONNOUSERSITE"] = "1"
    return child
