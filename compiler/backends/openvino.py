"""OpenVINO IR (.xml + .bin) converted from the simplified ONNX graph; FP16 compresses the weights.

The runner pins the CPU plugin's inference precision to f32, so the accuracy check measures the
artifact itself rather than the plugin's own choice of bf16 on CPUs that have it.
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from compiler.backends import Backend, CompileRequest, Runner, require
from compiler.errors import CompileError
from compiler.recipe import TensorSpec


class OpenVinoRunner(Runner):
    def __init__(self, xml: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> None:
        super().__init__(inputs, outputs)
        self.xml = xml
        self._request = None

    def activate(self) -> None:
        ov = require("openvino", "openvino", "openvino")
        core = ov.Core()
        compiled = core.compile_model(str(self.xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        self._request = compiled.create_infer_request()

    def deactivate(self) -> None:
        self._request = None

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self._request is not None
        self._request.infer(feed)
        return {name: np.array(self._request.get_tensor(name).data) for name in self.outputs}


class OpenVinoBackend(Backend):
    name = "openvino"

    def compile(self, request: CompileRequest) -> list[Path]:
        ov = require("openvino", self.name, "openvino")
        xml = request.out_dir / "model.xml"
        try:
            model = ov.convert_model(str(request.onnx_model))
        except Exception as exc:
            raise CompileError(f"OpenVINO could not convert {request.onnx_model.name}: {exc}") from None
        if request.target.precision == "int8":
            model = self._quantize(model, request)
        ov.save_model(model, str(xml), compress_to_fp16=request.target.precision == "fp16")
        return [xml, xml.with_suffix(".bin")]

    @staticmethod
    def _quantize(model: Any, request: CompileRequest) -> Any:
        """NNCF post-training quantization on the recipe's calibration data, one sample per item."""
        nncf = require("nncf", "openvino int8", "openvino")
        nncf.set_log_level(logging.ERROR)
        if request.calibration is None:
            raise CompileError("an int8 target needs data.calibration")
        options = request.quantization
        samples = [{name: array[i:i + 1] for name, array in feed.items()}
                   for feed in request.calibration() for i in range(len(next(iter(feed.values()))))]
        names = [spec.name for spec in request.inputs]
        dataset = nncf.Dataset(samples, lambda item: item[names[0]] if len(names) == 1 else tuple(item[n] for n in names))
        ignored = nncf.IgnoredScope(names=list(options.ignore_names), types=list(options.ignore_types),
                                    patterns=list(options.ignore_patterns), validate=True)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout
                return nncf.quantize(
                    model, dataset, subset_size=min(options.subset_size, len(samples)),
                    preset=nncf.QuantizationPreset.MIXED if options.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
                    fast_bias_correction=options.fast_bias_correction,
                    model_type=nncf.ModelType.TRANSFORMER if options.model_type == "transformer" else None,
                    ignored_scope=ignored)
        except Exception as exc:
            raise CompileError(f"NNCF quantization failed: {str(exc).splitlines()[0][:300]}") from None

    def runner(self, files: list[Path], inputs: tuple[TensorSpec, ...], outputs: tuple[str, ...]) -> Runner:
        return OpenVinoRunner(next(f for f in files if f.suffix == ".xml"), inputs, outputs)

    def versions(self) -> dict[str, str]:
        return {"openvino": require("openvino", self.name, "openvino").__version__}
