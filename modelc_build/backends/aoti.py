"""AOTInductor (.pt2): torch.export, then TorchInductor compiles the graph to C++ and packages it
(torch._inductor.aoti_compile_and_package); C++ loads it without Python, and so does
torch._inductor.aoti_load_package, which modelc's checks use. TorchScript's successor for servers.

Inductor compiles for the build machine by default (`-march=native` and the widest vectors it
has): on an AVX-512 host the package then dies with an illegal instruction on every AVX2-only CPU.
So a target declares its x86 ISA baseline (`isa`, default x86-64-v3: every AVX2 CPU since Haswell),
which sets both the compiler's -march and Inductor's vector width (one without the other still
emits AVX-512). `isa: native` builds for this machine only, and the artifact is stamped with the
machine's CPU class. Every x86 CPU of verify.cpus runs the package under emulation, at any
precision: its machine code, not its numbers, is what differs by CPU.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelc_build.backends import Backend, Capabilities, CompileRequest, Runner, pick, require
from modelc_build.backends.torchscript import TorchModuleRunner
from modelc_build.errors import CompileError
from modelc_build.recipe_types import TensorSpec

# isa -> Inductor settings (cpp.march: the C++ compiler's -march; cpp.simdlen: the vector width in bits)
ISAS: dict[str, dict[str, Any]] = {
    "x86-64-v3": {"cpp.march": "x86-64-v3", "cpp.simdlen": 256},  # AVX2 + FMA: Haswell (2013) and every x86 server since
    "x86-64-v4": {"cpp.march": "x86-64-v4", "cpp.simdlen": 512},  # AVX-512: Skylake-SP, Zen 4 and later
    "native": {},  # this machine's ISA (Inductor's default), stamped on the artifact
}
DEFAULT_ISA = "x86-64-v3"
PACKAGE = "model.pt2"
BUILD_NOTES = "aoti.json"
FP16_REFUSED = ("aoti fp16 is not offered: AVX2 CPUs (the default baseline) have no fp16 arithmetic and Inductor "
                "emulates it slower than fp32; build aoti fp32, or openvino fp16")
INT8_REFUSED = ("aoti int8 is not offered: PyTorch's PT2E x86 INT8 lowering for Inductor needs a oneDNN build with "
                "VNNI and fails on AVX2 CPUs, the default baseline; build onnxruntime int8 or openvino int8, or "
                "executorch int8 (XNNPACK) for ARM and edge CPUs")


class AotiRunner(TorchModuleRunner):
    """An AOTInductor package, loaded by torch and called as a module (its outputs come back
    flattened, in order)."""

    def __init__(self, path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...], threads: int | None = None) -> None:
        super().__init__(inputs, outputs, path=path)
        self.threads = threads

    def activate(self) -> None:
        torch = require("torch", "aoti", "torch")
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module = torch._inductor.aoti_load_package(str(self.path))

    def deactivate(self) -> None:
        self.module = None

    def effective_settings(self) -> dict[str, str]:
        assert self.path is not None
        notes = self.path.parent / BUILD_NOTES
        return {"isa": json.loads(notes.read_text())["isa"]} if notes.is_file() else {}


class AotiBackend(Backend):
    name = "aoti"
    capabilities = Capabilities(
        precisions=frozenset({"fp32"}), deploy_extra="build", runtime_modules=("numpy", "torch"), tools=("torch",),
        refused={"fp16": FP16_REFUSED, "int8": INT8_REFUSED},
        options=("isa",), graphs={"*": "torch"}, preload=("torch",), check_cost=2.0, emulated_code=True,
        x86_only=True)

    def compile(self, request: CompileRequest) -> list[Path]:
        require("torch", self.name, "torch")
        if request.torch_model is None:
            raise CompileError("an aoti target needs a torch or torchscript source")
        isa = request.target.isa or DEFAULT_ISA
        if isa not in ISAS:
            raise CompileError(f"aoti isa '{isa}' is not known: use one of {', '.join(ISAS)}")
        package = request.out_dir / PACKAGE
        _compile(request.torch_model(), request.inputs, ISAS[isa], package)
        from modelc_build.host import cpu_info

        info = cpu_info()
        notes = {"isa": isa, "inductor": ISAS[isa] or "Inductor's default: -march=native, this machine's vector width",
                 **({"built_for": f"this machine only: {info['kernel_class']} ({', '.join(info['isa'])})"} if isa == "native" else {})}
        (request.out_dir / BUILD_NOTES).write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")
        return [package, request.out_dir / BUILD_NOTES]

    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
               config: dict[str, str] | None = None, threads: int | None = None) -> Runner:
        return AotiRunner(pick(files, ".pt2"), inputs, outputs, threads)

    def float_runner(self, model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> Runner:
        """The emulation's canary (a float ONNX model) runs in onnxruntime, beside torch."""
        from modelc_build.backends import get_backend

        return get_backend("onnxruntime").float_runner(model, inputs, outputs)

    def versions(self) -> dict[str, str]:
        return {"torch": require("torch", self.name, "torch").__version__}

    def warm_up(self) -> None:
        require("torch", self.name, "torch")


def _compile(model: Any, inputs: tuple[TensorSpec, ...], settings: dict[str, Any], package: Path) -> None:
    """torch.export with the recipe's dynamic axes, then AOTInductor with `settings`."""
    import torch

    from modelc_build.feeds import dynamic_shapes, example_inputs

    example = tuple(torch.from_numpy(a) for a in example_inputs(inputs, dynamic_size=2))
    try:
        with torch.no_grad():
            program = torch.export.export(model.eval(), example, dynamic_shapes=dynamic_shapes(model, inputs))
            torch._inductor.aoti_compile_and_package(program, package_path=str(package), inductor_configs=dict(settings))
    except Exception as exc:
        from modelc_build.errors import first_line

        raise CompileError(f"AOTInductor could not compile the model: {first_line(exc, 400)}; a model torch.export "
                           "cannot capture cannot be an aoti target (build onnxruntime or openvino from the ONNX export)") from exc
    if not package.is_file():
        raise CompileError(f"AOTInductor wrote no package at {package}")
