"""TensorRT: not built by this version of modelc.

TensorRT engines need an NVIDIA GPU and NVIDIA's `tensorrt` wheels, which cannot be installed on
the CPU machines that run modelc's CI. The engine builder layer (strongly typed networks from a
Q/DQ or FP16 ONNX graph) is planned; until it lands, a tensorrt target stops the build with this
message instead of producing something half-made.
"""
from __future__ import annotations

from pathlib import Path

from modelc_build.backends import Backend, CompileRequest, Runner
from modelc_build.errors import BackendUnavailable
from modelc_build.recipe import TensorSpec

MESSAGE = ("tensorrt targets are not built by this version of modelc: engines must be built on a machine "
           "with an NVIDIA GPU and the tensorrt package from NVIDIA's index; remove the tensorrt target "
           "from the recipe (the release's onnx/model.onnx, and onnx-int8/model.onnx for int8, are the graphs such a "
           "build takes)")


class TensorRtBackend(Backend):
    name = "tensorrt"

    def compile(self, request: CompileRequest) -> list[Path]:
        raise BackendUnavailable(MESSAGE)

    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...],
               config: dict[str, str] | None = None) -> Runner:
        raise BackendUnavailable(MESSAGE)
