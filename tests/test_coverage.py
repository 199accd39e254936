"""INT8 coverage as the runtime sees it: the count in the report is the CPU plugin's own."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from modelc_build.coverage import openvino_coverage


def c2f_like_model() -> object:
    """YOLOv8's C2f and SPPF in small: convolutions fed through Split, Concat and MaxPool, where
    the FakeQuantize sits before the split or on every concat input rather than on the conv."""
    import torch
    from torch import nn

    def conv(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.SiLU())

    class C2fLike(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.cv1, self.m, self.cv2 = conv(3, 16), conv(16, 16), conv(8, 8), conv(24, 16)
            self.pool, self.cv3 = nn.MaxPool2d(5, 1, 2), conv(32, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = self.cv1(self.stem(x)).chunk(2, 1)
            y = self.cv2(torch.cat([a, b, self.m(b)], 1))
            return self.cv3(torch.cat([y, self.pool(y)], 1))

    torch.manual_seed(0)
    return C2fLike().eval()


@pytest.mark.slow
def test_openvino_coverage_counts_what_the_cpu_plugin_runs_in_int8(tmp_path: Path) -> None:
    nncf = pytest.importorskip("nncf")
    ov = pytest.importorskip("openvino")
    import torch

    nncf.set_log_level(logging.ERROR)
    onnx_path = tmp_path / "c2f.onnx"
    torch.onnx.export(c2f_like_model(), (torch.rand(1, 3, 32, 32),), str(onnx_path), input_names=["x"], opset_version=17, dynamo=False)
    samples = [np.random.default_rng(i).random((1, 3, 32, 32), dtype=np.float32) for i in range(8)]
    quantized = nncf.quantize(ov.convert_model(str(onnx_path)), nncf.Dataset(samples), subset_size=8)
    xml = tmp_path / "model.xml"
    ov.save_model(quantized, str(xml))

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runtime = [op.get_rt_info()["runtimePrecision"].astype(str) for op in compiled.get_runtime_model().get_ordered_ops()
               if op.get_rt_info()["layerType"].astype(str) == "Convolution"]
    coverage = openvino_coverage(xml)
    assert coverage.layers == len(runtime) == 5
    assert coverage.quantized == sum(precision in ("u8", "i8") for precision in runtime)
    assert coverage.quantized == 5  # the split halves, the concats and the pooled branch included


def lstm_onnx(path: Path) -> None:
    """A speaker-encoder-like model: a 2-layer LSTM over 20 steps, then a linear head."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(16, 32, num_layers=2, batch_first=True)
            self.head = torch.nn.Linear(32, 8)

        def forward(self, frames: torch.Tensor) -> torch.Tensor:
            out, _ = self.lstm(frames)
            return self.head(out[:, -1])

    torch.manual_seed(0)
    torch.onnx.export(Encoder().eval(), (torch.rand(2, 20, 16),), str(path), input_names=["frames"], output_names=["embedding"],
                      dynamic_axes={"frames": {0: "batch"}}, dynamo=False)


def test_recurrent_layers_count_with_their_multiply_accumulates(tmp_path: Path) -> None:
    """The LSTMs hold ~99 % of such a model's MACs; onnxruntime's static Q/DQ leaves them in float,
    so its INT8 covers the head alone, and coverage says so instead of "1 of 1 layers, 100 %"."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from modelc_build.coverage import onnx_coverage

    float_model, int8_model = tmp_path / "lstm.onnx", tmp_path / "lstm-int8.onnx"
    lstm_onnx(float_model)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"frames": np.random.default_rng(i).random((2, 20, 16), dtype=np.float32)} for i in range(4)])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.feeds, None)

    quantize_static(str(float_model), str(int8_model), Reader(), quant_format=QuantFormat.QDQ)
    coverage = onnx_coverage(int8_model)
    assert coverage.layers == 3 and coverage.quantized == 1  # two LSTMs in float, the head in INT8
    assert sum("(LSTM)" in name for name in coverage.float_layers) == 2
    macs_lstm = 20 * (4 * 32 * 16 + 4 * 32 * 32) + 20 * (4 * 32 * 32 + 4 * 32 * 32)
    assert coverage.mac_share == pytest.approx(100.0 * 32 * 8 / (macs_lstm + 32 * 8), rel=1e-6)
    assert "3 weighted layers" in coverage.words() and coverage.mac_share < 1.0

    import openvino as ov

    from modelc_build.coverage import openvino_coverage

    xml = tmp_path / "lstm.xml"
    ov.save_model(ov.convert_model(str(float_model)), str(xml))
    ir = openvino_coverage(xml)
    assert ir.layers >= 3 and ir.quantized == 0 and ir.mac_share == 0.0  # the LSTMSequences are counted, in float


def test_an_int8_embedding_feeding_a_convolution_is_counted_as_the_cpu_plugin_runs_it(tmp_path: Path) -> None:
    """A byte classifier (int32 input → Embedding → Conv1d → max → Linear): NNCF compresses the
    embedding to int8 and the CPU plugin runs the convolution on i8 data with no FakeQuantize before
    it; coverage asks the plugin's runtime model, so the IR is not refused as "no INT8 layer"."""
    import nncf
    import openvino as ov
    import torch

    class Bytes(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Embedding(256, 16)
            self.conv = torch.nn.Conv1d(16, 32, 3, padding=1)
            self.head = torch.nn.Linear(32, 4)

        def forward(self, data: torch.Tensor) -> torch.Tensor:
            features = torch.relu(self.conv(self.embedding(data).transpose(1, 2)))
            return self.head(torch.amax(features, dim=2))

    torch.manual_seed(0)
    onnx_path = tmp_path / "bytes.onnx"
    torch.onnx.export(Bytes().eval(), (torch.randint(0, 256, (2, 64), dtype=torch.int32),), str(onnx_path),
                      input_names=["bytes"], output_names=["logits"], dynamic_axes={"bytes": {0: "batch"}}, dynamo=False)
    rng = np.random.default_rng(0)
    samples = [rng.integers(0, 256, (1, 64), dtype=np.int32) for _ in range(16)]
    quantized = nncf.quantize(ov.convert_model(str(onnx_path)), nncf.Dataset(samples), subset_size=16)
    xml = tmp_path / "bytes.xml"
    ov.save_model(quantized, str(xml))
    coverage = openvino_coverage(xml)
    assert coverage.layers == 2 and coverage.quantized == 2, coverage


def test_attention_products_count_and_dynamic_axes_take_a_samples_size(tmp_path: Path) -> None:
    """A product of two activations (attention's scores) is a layer with MACs of its own; a graph
    with a dynamic sequence axis has its MACs counted at a calibration sample's size (unknown
    without one)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from modelc_build.coverage import onnx_coverage

    rng = np.random.default_rng(5)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["q"], name="project"),
         helper.make_node("Transpose", ["q"], ["k"], perm=[0, 2, 1]),
         helper.make_node("MatMul", ["q", "k"], ["scores"], name="attention")],
        "attention", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "seq", "seq"])],
        [numpy_helper.from_array(rng.normal(size=(16, 16)).astype(np.float32), "w")])
    float_model, int8_model = tmp_path / "attention.onnx", tmp_path / "attention-int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(float_model))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"x": rng.normal(size=(2, 10, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self.feeds, None)

    quantize_static(str(float_model), str(int8_model), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                    nodes_to_exclude=["attention"])
    coverage = onnx_coverage(int8_model, {"x": (1, 10, 16)})
    assert coverage.layers == 2 and coverage.quantized == 1
    assert coverage.float_layers == ["attention (activation product)"]
    projection, scores = 10 * 16 * 16, 10 * 10 * 16
    assert coverage.mac_share == pytest.approx(100.0 * projection / (projection + scores))
    assert onnx_coverage(int8_model).mac_share is None  # the sequence length is unknown without a sample
