"""ExecuTorch (.pte) for phones and edge boards: torch.export, lowered to the XNNPACK delegate
(`to_edge_transform_and_lower`); INT8 through PT2E with XNNPACK's quantizer (symmetric,
per-channel weights), calibrated on the recipe's data. Run here by `executorch.runtime`.

A program is exported at batch 1 (what an edge device runs); the runner feeds a batch one sample
at a time. XNNPACK's INT8 micro-kernels are chosen per CPU class (AVX2, AVX-512 VNNI, NEON dot
product), so INT8 programs are checked on the emulated x86 CPUs of verify.cpus. ExecuTorch's
Python runtime imports torch, and PyPI's ARM64 torch for this release is a CUDA build: the ARM64
CPUs of verify.cpus are said not checked, with that reason, rather than faked.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from modelc_build.backends import Backend, Capabilities, CompileRequest, Runner, pick, require, write_quantization_notes
from modelc_build.errors import CompileError
from modelc_build.recipe_types import TensorSpec

if TYPE_CHECKING:
    import numpy as np

PROGRAM = "model.pte"
NO_ARM_RUNTIME = ("ExecuTorch's Python runtime imports torch, and PyPI's ARM64 torch for this release is a CUDA build "
                  "that cannot be installed in the emulated ARM64 root: the program was not run on this CPU; run "
                  "`modelc verify --run` on the device (with executorch installed) to prove it there")
ACTIVATION_AVERAGING = 0.01  # the moving average's weight of each new sample's range
WEIGHTED = ("aten.conv1d", "aten.conv2d", "aten.conv3d", "aten.linear", "aten.conv_transpose2d")


class ExecuTorchRunner(Runner):
    """A .pte program's `forward`, one sample per call (it is exported at batch 1)."""

    def __init__(self, path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> None:
        super().__init__(inputs, outputs)
        self.path = path
        self.method: Any = None

    def activate(self) -> None:
        require("executorch.runtime", "executorch", "executorch")
        from executorch.runtime import Runtime

        self.method = Runtime.get().load_program(str(self.path)).load_method("forward")

    def deactivate(self) -> None:
        self.method = None

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import numpy as np
        import torch

        parts = []
        for sample in _one_at_a_time(self.inputs, feed):
            values = self.method.execute([torch.from_numpy(np.ascontiguousarray(sample[spec.name])) for spec in self.inputs])
            parts.append([value.detach().numpy().copy() for value in values])
        return {name: np.concatenate([part[index] for part in parts]) for index, name in enumerate(self.outputs)}


def _one_at_a_time(inputs: tuple[TensorSpec, ...], feed: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    batched = [spec for spec in inputs if spec.batch_axis == 0]
    count = int(feed[batched[0].name].shape[0]) if batched else 1
    for index in range(count):
        yield {spec.name: feed[spec.name][index:index + 1] if spec.batch_axis == 0 else feed[spec.name] for spec in inputs}


class ExecuTorchBackend(Backend):
    name = "executorch"
    capabilities = Capabilities(
        precisions=frozenset({"fp32", "int8"}), deploy_extra="executorch", build_extra="executorch", runtime_modules=("numpy", "executorch"),
        tools=("torch", "executorch"), calibration_tools=("torchao",), graphs={"*": "torch"}, preload=("torch",),
        check_cost=1.5, emulated_int8=True, no_arm_check=NO_ARM_RUNTIME)

    def compile(self, request: CompileRequest) -> list[Path]:
        require("executorch.exir", self.name, "executorch")
        if request.torch_model is None:
            raise CompileError("an executorch target needs a torch or torchscript source")
        import torch

        from modelc_build.feeds import example_inputs

        example = tuple(torch.from_numpy(a) for a in example_inputs(request.inputs, dynamic_size=1))
        model = request.torch_model().eval()
        notes: dict[str, Any] | None = None
        try:
            with torch.no_grad():
                program = torch.export.export(model, example)
                if request.target.precision == "int8":
                    if request.calibration is None:
                        raise CompileError("executorch int8 needs data.calibration")
                    program, notes = _quantized(program, example, request.inputs, request.calibration)
                _lower(program, request.out_dir / PROGRAM)
        except CompileError:
            raise
        except Exception as exc:
            from modelc_build.errors import first_line

            raise CompileError(f"ExecuTorch could not lower the model to XNNPACK: {first_line(exc, 400)}") from exc
        files = [request.out_dir / PROGRAM]
        if notes is not None:
            files.append(write_quantization_notes(request.out_dir, notes))
        return files

    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
               config: dict[str, str] | None = None, threads: int | None = None) -> Runner:
        return ExecuTorchRunner(pick(files, ".pte"), inputs, outputs)

    def float_runner(self, model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> Runner:
        """The emulation's canary (a float ONNX model) runs in onnxruntime, beside ExecuTorch."""
        from modelc_build.backends import get_backend

        return get_backend("onnxruntime").float_runner(model, inputs, outputs)

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version

        return {"executorch": version("executorch"), "torch": require("torch", self.name, "torch").__version__}

    def warm_up(self) -> None:
        require("executorch.runtime", self.name, "executorch")


def _quantized(program: Any, example: tuple[Any, ...], inputs: tuple[TensorSpec, ...],
               calibration: Callable[[], Iterator[dict[str, np.ndarray]]]) -> tuple[Any, dict[str, Any]]:
    """PT2E: XNNPACK's quantizer (symmetric per-channel INT8 weights; activations by a moving-average
    MinMax, as onnxruntime's), observers calibrated on every calibration sample, converted,
    exported again for lowering. XNNPACK's own activation observer (a histogram) scored cosine
    0.936 on the shipped MobileNetV2 calibrated on its 212 photos (0.971 on 32 of them: it widens
    with the data), the moving average 0.983. The layers whose outputs are the model's stay in float
    (XNNPACK lowers no INT8 layer with a float output): logits in 256 levels tie the top classes
    (top-1 agreement 50 % at cosine 0.983; 75 % with the classifier's output in float, as
    onnxruntime's INT8 of the same model)."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import QuantizationConfig
    from torchao.quantization.pt2e.observer import MovingAverageMinMaxObserver
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import QuantizationSpec

    xnnpack = get_symmetric_quantization_config(is_per_channel=True)
    activations = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_affine,
                                   is_dynamic=False, observer_or_fake_quant_ctr=MovingAverageMinMaxObserver.with_args(
                                       averaging_constant=ACTIVATION_AVERAGING, eps=2**-12))
    quantizer = XNNPACKQuantizer().set_global(QuantizationConfig(activations, activations, xnnpack.weight, xnnpack.bias))
    module = program.module()
    in_float = set(_output_layers(module))  # their outputs are the model's: those layers stay in float
    quantizer.set_filter_function(lambda node: _module_of(node) not in in_float)
    prepared = prepare_pt2e(module, quantizer)
    samples = 0
    for feed in calibration():
        for sample in _one_at_a_time(inputs, feed):
            prepared(*(torch.from_numpy(sample[spec.name]) for spec in inputs))
            samples += 1
    converted = convert_pt2e(prepared)
    layers, quantized = _coverage(converted)
    notes = {"method": "PT2E, XNNPACKQuantizer (symmetric per-channel INT8 weights)", "calibration_samples": samples,
             "calibration_method": f"moving-average MinMax activations ({ACTIVATION_AVERAGING})",
             "kept_in_float": {"layers": sorted(in_float)},
             "coverage": {PROGRAM: {"layers": layers, "quantized": quantized}}}
    if quantized == 0:
        raise CompileError(f"executorch-int8: no weighted layer was quantized (0 of {layers}): XNNPACK's quantizer "
                           "found no convolution or linear layer it takes")
    return torch.export.export(converted, example), notes


def _module_of(node: Any) -> str | None:
    """The qualified name of the innermost module whose call made `node` (None: the top level)."""
    stack = getattr(node, "meta", {}).get("nn_module_stack") or {}
    return list(stack.values())[-1][0] or None if stack else None


def _output_layers(module: Any) -> list[str]:
    """The modules (by qualified name) whose calls produce the graph's outputs."""
    names = []
    for node in module.graph.nodes:
        if node.op == "output":
            results = node.args[0] if isinstance(node.args[0], (list, tuple)) else (node.args[0],)
            names += [name for result in results if (name := _module_of(result))]
    return list(dict.fromkeys(names))


def _coverage(module: Any) -> tuple[int, int]:
    """Weighted layers (convolutions, linear) and how many read a dequantized INT8 weight."""
    layers = quantized = 0
    for node in module.graph.nodes:
        if node.op == "call_function" and any(str(node.target).startswith(name) for name in WEIGHTED):
            layers += 1
            weight = node.args[1] if len(node.args) > 1 else None
            if getattr(weight, "op", None) == "call_function" and "dequantize" in str(getattr(weight, "target", "")):
                quantized += 1
    return layers, quantized


def _lower(program: Any, destination: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    destination.write_bytes(lowered.buffer)
