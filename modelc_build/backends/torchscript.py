"""TorchScript (.pt): traced (default) or scripted from the torch model, frozen, run with torch.jit."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelc_build.backends import Backend, Capabilities, CompileRequest, Runner, pick, require
from modelc_build.errors import CompileError
from modelc_build.recipe_types import TensorSpec

if TYPE_CHECKING:  # NumPy loads when an artifact runs: the backend's table is read without it
    import numpy as np

TORCHSCRIPT_INT8_REMOVED = (
    "torchscript int8 is not offered: PyTorch FX post-training quantization collapsed on a real ImageNet "
    "MobileNetV2 (output cosine 0.63-0.82 against FP32) and PyTorch 2.13 deprecates quantized tensors; build "
    "openvino int8 or onnxruntime int8 instead (docs/recipe.md)")


class TorchModuleRunner(Runner):
    """Runs a torch module in eager mode or a loaded TorchScript file."""

    def __init__(self, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...], module: Any = None,
                 path: Path | None = None) -> None:
        super().__init__(inputs, outputs)
        self.module = module
        self.path = path

    def activate(self) -> None:
        torch = require("torch", "torchscript", "torch")
        if self.path is not None:
            self.module = torch.jit.load(str(self.path), map_location="cpu").eval()

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(feed[spec.name])) for spec in self.inputs]
        with torch.no_grad():
            result = self.module(*args)
        values = result if isinstance(result, (tuple, list)) else (result,)
        return {name: value.detach().numpy() for name, value in zip(self.outputs, values)}


class TorchScriptBackend(Backend):
    name = "torchscript"
    capabilities = Capabilities(
        precisions=frozenset({"fp32"}), deploy_extra="build", runtime_modules=("numpy", "torch"), tools=("torch",),
        refused={"int8": TORCHSCRIPT_INT8_REMOVED}, options=("mode",), graphs={"*": "torch"}, preload=("torch",),
        check_cost=1.5)

    def compile(self, request: CompileRequest) -> list[Path]:
        require("torch", self.name, "torch")
        from modelc_build.backends.torch_convert import export_torchscript

        if request.torch_model is None:
            raise CompileError("a TorchScript target needs a torch or torchscript source")
        model = request.torch_model()
        if request.target.precision != "fp32":
            raise CompileError(f"torchscript {request.target.precision} is not offered; build fp32")
        destination = request.out_dir / "model.pt"
        export_torchscript(model, request.inputs, request.target.mode or "trace", destination)
        return [destination]

    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
               config: dict[str, str] | None = None, threads: int | None = None) -> Runner:
        return TorchModuleRunner(inputs, outputs, path=pick(files, ".pt"))

    def versions(self) -> dict[str, str]:
        return {"torch": require("torch", self.name, "torch").__version__}
