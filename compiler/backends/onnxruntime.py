"""ONNX for onnxruntime: the simplified graph itself, run on the CPU execution provider."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from compiler.backends import QUANTIZATION_NOTES, Backend, CompileRequest, Runner, pick, require
from compiler.recipe import TensorSpec


class OnnxRuntimeRunner(Runner):
    def __init__(self, model: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...], threads: int = 0) -> None:
        super().__init__(inputs, outputs)
        self.model = model
        self.threads = threads
        self._session = None

    def activate(self) -> None:
        ort = require("onnxruntime", "onnxruntime", "onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        self._session = ort.InferenceSession(str(self.model), options, providers=["CPUExecutionProvider"])

    def deactivate(self) -> None:
        self._session = None

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._session is not None
        values = self._session.run(list(self.outputs), feed)
        return dict(zip(self.outputs, values))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def compile(self, request: CompileRequest) -> list[Path]:
        require("onnxruntime", self.name, "onnxruntime")
        destination = request.out_dir / "model.onnx"
        shutil.copyfile(request.onnx_model, destination)
        notes = request.onnx_model.with_name(QUANTIZATION_NOTES)
        if request.target.precision == "int8" and notes.is_file():  # the Q/DQ graph's calibration notes
            shutil.copyfile(notes, request.out_dir / QUANTIZATION_NOTES)
            return [destination, request.out_dir / QUANTIZATION_NOTES]
        return [destination]

    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> Runner:
        return OnnxRuntimeRunner(pick(files, ".onnx"), inputs, outputs)

    def versions(self) -> dict[str, str]:
        return {"onnxruntime": require("onnxruntime", self.name, "onnxruntime").__version__}
