from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modelc_build.backends import CompileRequest, get_backend
from modelc_build.errors import BackendUnavailable
from modelc_build.recipe_types import Target
from tests.conftest import TINY_INPUTS as INPUTS
from tests.fixtures.tiny_net import build_model


@pytest.mark.parametrize("backend,precision,tolerance", [
    ("onnxruntime", "fp32", 1e-5), ("openvino", "fp32", 1e-5), ("openvino", "fp16", 1e-2), ("torchscript", "fp32", 1e-5)])
def test_backend_compiles_and_runs(tmp_path: Path, onnx_file: Path, backend: str, precision: str, tolerance: float) -> None:
    model = build_model().eval()
    implementation = get_backend(backend)
    request = CompileRequest(Target(backend, precision), onnx_file, INPUTS, ("logits",), tmp_path, lambda: model)
    files = implementation.compile(request)
    assert files and all(f.is_file() and f.parent == tmp_path for f in files)
    x = np.random.default_rng(1).random((3, 3, 16, 16), dtype=np.float32)
    deployed = {"INFERENCE_PRECISION_HINT": "f32"} if backend == "openvino" else {}  # modelc's default deploy setting
    with implementation.runner(files, INPUTS, ("logits",), deployed) as runner:
        got = runner.infer({"images": x})["logits"]
    expected = model(torch.from_numpy(x)).detach().numpy()
    assert got.shape == (3, 3)
    assert np.abs(got - expected).max() < tolerance
    assert implementation.versions()


def test_openvino_computes_in_what_the_cpu_offers_unless_pinned(tmp_path: Path, onnx_file: Path) -> None:
    """The CPU plugin's own default is bf16 where the CPU has AVX-512 BF16 or AMX, f32 elsewhere;
    pinned to f32 it is f32 on every CPU. Both branches, whichever this machine is."""
    from modelc_build.host import cpu_info

    files = get_backend("openvino").compile(CompileRequest(Target("openvino", "fp32"), onnx_file, INPUTS, ("logits",), tmp_path))
    x = np.random.default_rng(1).random((3, 3, 16, 16), dtype=np.float32)
    results = {}
    for name, config in (("default", {}), ("pinned", {"INFERENCE_PRECISION_HINT": "f32"})):
        with get_backend("openvino").runner(files, INPUTS, ("logits",), config) as runner:
            results[name] = (runner.effective_settings()["INFERENCE_PRECISION_HINT"], runner.infer({"images": x})["logits"])
    assert results["pinned"][0] == "f32"
    if cpu_info()["low_precision_float"]:
        assert results["default"][0] == "bf16"
        assert np.abs(results["default"][1] - results["pinned"][1]).max() > 1e-5  # bf16 rounds visibly
    else:
        assert results["default"][0] == "f32"
        assert np.array_equal(results["default"][1], results["pinned"][1])


def test_openvino_fp16_weights_are_half_the_size(tmp_path: Path, onnx_file: Path) -> None:
    sizes = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path / precision
        out.mkdir()
        files = get_backend("openvino").compile(CompileRequest(Target("openvino", precision), onnx_file, INPUTS, ("logits",), out))
        sizes[precision] = next(f for f in files if f.suffix == ".bin").stat().st_size
    assert sizes["fp16"] < 0.6 * sizes["fp32"]


def test_runner_checks_feed_names(tmp_path: Path, onnx_file: Path) -> None:
    from modelc_build.errors import InputError

    runner = get_backend("onnxruntime").runner([onnx_file], INPUTS, ("logits",))
    with runner, pytest.raises(InputError, match=r"feed has inputs \['x'\], the model takes \['images'\]"):
        runner.infer({"x": np.zeros((1, 3, 16, 16), np.float32)})


def test_tensorrt_says_where_a_generation_can_be_built(tmp_path: Path, onnx_file: Path) -> None:
    from modelc_build.gpus import local_gpus

    if "sm90" in local_gpus():
        pytest.skip("this machine has an SM90 GPU")
    target = Target("tensorrt", "fp32", gpus=("sm90",))
    with pytest.raises(BackendUnavailable, match=r"tensorrt-fp32: sm90 \(Hopper: H100, H200\) needs full TensorRT on a "
                                                 r"machine with that GPU .* build it on the GPU runner"):
        get_backend("tensorrt").compile(CompileRequest(target, onnx_file, INPUTS, ("logits",), tmp_path))


def test_tensorrt_rtx_builds_an_engine_with_no_gpu_and_says_it_did_not_run(tmp_path: Path, onnx_file: Path) -> None:
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed (pip install 'modelc-build[tensorrt-rtx]')")
    from modelc_build.gpus import local_gpus

    files = get_backend("tensorrt").compile(CompileRequest(Target("tensorrt", "fp32", gpus=("sm86",)), onnx_file, INPUTS,
                                                           ("logits",), tmp_path))
    assert [f.name for f in files] == ["model.onnx", "sm86.engine", "engines.json"]
    stamps = json.loads((tmp_path / "engines.json").read_text())
    assert stamps["engines"][0]["gpu"] == "sm86" and stamps["engines"][0]["size"] > 10_000
    x = np.random.default_rng(1).random((2, 3, 16, 16), dtype=np.float32)
    with get_backend("tensorrt").runner(files, INPUTS, ("logits",)) as runner:
        got = runner.infer({"images": x})["logits"]
        settings = runner.effective_settings()
    expected = build_model().eval()(torch.from_numpy(x)).detach().numpy()
    assert np.abs(got - expected).max() < 1e-4
    if not local_gpus():  # the source graph ran, on the CPU, and the runner says so
        assert settings == {"measured": "the engines' source graph on onnxruntime (CPU)",
                            "engines": "built, not run: no SM86 GPU on this machine (no NVIDIA GPU at all)"}


def test_unknown_backend() -> None:
    with pytest.raises(BackendUnavailable, match="no backend named 'tflite'"):
        get_backend("tflite")


def test_openvino_int8_is_calibrated_on_the_given_data(tmp_path: Path, onnx_file: Path) -> None:
    rng = np.random.default_rng(2)
    feeds = [{"images": rng.random((4, 3, 16, 16), dtype=np.float32)} for _ in range(4)]
    request = CompileRequest(Target("openvino", "int8"), onnx_file, INPUTS, ("logits",), tmp_path,
                             calibration=lambda: iter(feeds))
    files = get_backend("openvino").compile(request)
    xml = next(f for f in files if f.suffix == ".xml").read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml  # NNCF inserted quantization nodes
    x = rng.random((3, 3, 16, 16), dtype=np.float32)
    with get_backend("openvino").runner(files, INPUTS, ("logits",)) as runner:
        got = runner.infer({"images": x})["logits"]
    expected = build_model().eval()(torch.from_numpy(x)).detach().numpy()
    assert np.abs(got - expected).max() < 0.1


def test_openvino_int8_without_data_is_a_compile_error(tmp_path: Path, onnx_file: Path) -> None:
    from modelc_build.errors import CompileError

    with pytest.raises(CompileError, match="an int8 target needs data.calibration"):
        get_backend("openvino").compile(CompileRequest(Target("openvino", "int8"), onnx_file, INPUTS, ("logits",), tmp_path))


@pytest.mark.parametrize("weights", ["uint8", "int8"])
def test_onnxruntime_int8_is_quantized_for_its_cpu_kernels(tmp_path: Path, onnx_file: Path, weights: str) -> None:
    """QDQ with uint8 activations and uint8 weights (exact on pre-VNNI kernels) or 7-bit int8
    weights (the faster kernel), close to the float graph."""
    import onnx

    from modelc_build.recipe_types import Quantization

    rng = np.random.default_rng(4)
    feeds = [{"images": rng.random((4, 3, 16, 16), dtype=np.float32)} for _ in range(4)]
    request = CompileRequest(Target("onnxruntime", "int8"), onnx_file, INPUTS, ("logits",), tmp_path,
                             calibration=lambda: iter(feeds), quantization=Quantization(onnxruntime_weights=weights))
    files = get_backend("onnxruntime").compile(request)
    graph = onnx.load(str(files[0])).graph
    types = {i.name: i.data_type for i in graph.initializer}
    stored = [types[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in types
              and types[n.input[0]] in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    expected = onnx.TensorProto.UINT8 if weights == "uint8" else onnx.TensorProto.INT8
    assert stored and set(stored) == {expected}
    notes = json.loads((tmp_path / "quantization.json").read_text())
    assert notes["calibration_samples"] == 16
    assert notes["formats"] == {"u8u8" if weights == "uint8" else "u8s8-7bit":
                                "uint8 weights per channel, uint8 activations" if weights == "uint8"
                                else "int8 (7-bit) weights per channel, uint8 activations"}
    x = rng.random((3, 3, 16, 16), dtype=np.float32)
    with get_backend("onnxruntime").runner(files, INPUTS, ("logits",)) as quantized, \
            get_backend("onnxruntime").runner([onnx_file], INPUTS, ("logits",)) as float_model:
        got, expected = quantized.infer({"images": x})["logits"], float_model.infer({"images": x})["logits"]
    cosine = float((got * expected).sum() / np.linalg.norm(got) / np.linalg.norm(expected))
    assert cosine > 0.99


def test_openvino_int8_keeps_ignored_layer_types_in_float(tmp_path: Path, onnx_file: Path) -> None:
    from modelc_build.recipe_types import Quantization

    rng = np.random.default_rng(5)
    feeds = [{"images": rng.random((4, 3, 16, 16), dtype=np.float32)} for _ in range(2)]
    counts = {}
    for label, options in (("all", Quantization()), ("no-matmul", Quantization(ignore_types=("MatMul",)))):
        out = tmp_path / label
        out.mkdir()
        files = get_backend("openvino").compile(CompileRequest(Target("openvino", "int8"), onnx_file, INPUTS, ("logits",),
                                                               out, calibration=lambda: iter(feeds), quantization=options))
        counts[label] = next(f for f in files if f.suffix == ".xml").read_text().count('type="FakeQuantize"')
    assert counts["no-matmul"] < counts["all"]


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_an_unknown_ignored_name_is_an_input_error_on_every_backend(tmp_path: Path, onnx_file: Path, backend: str) -> None:
    from modelc_build.errors import InputError
    from modelc_build.recipe_types import Quantization

    feeds = [{"images": np.zeros((2, 3, 16, 16), np.float32)}]
    with pytest.raises(InputError, match="quantization.ignore.names: no_such_layer not in the ONNX graph"):
        get_backend(backend).compile(CompileRequest(Target(backend, "int8"), onnx_file, INPUTS, ("logits",), tmp_path,
                                                       calibration=lambda: iter(feeds),
                                                       quantization=Quantization(ignore_names=("no_such_layer",))))


def test_onnxruntime_int8_ships_a_vnni_layout_that_runs_only_where_the_cpu_has_vnni(tmp_path: Path, onnx_file: Path,
                                                                                       monkeypatch) -> None:
    """u8s8 (VNNI's kernel) beside the portable u8u8 model: the runner picks by the CPU it is on."""
    import onnx

    from modelc_build import host
    from modelc_build.recipe_types import Quantization

    rng = np.random.default_rng(4)
    feeds = [{"images": rng.random((4, 3, 16, 16), dtype=np.float32)} for _ in range(4)]
    request = CompileRequest(Target("onnxruntime", "int8"), onnx_file, INPUTS, ("logits",), tmp_path,
                             calibration=lambda: iter(feeds), quantization=Quantization(), cpu_variants=("vnni",))
    files = get_backend("onnxruntime").compile(request)
    assert [f.name for f in files] == ["model.onnx", "model-vnni.onnx", "quantization.json"]
    weights = {}
    for file in files[:2]:
        graph = onnx.load(str(file)).graph
        types = {i.name: i.data_type for i in graph.initializer}
        weights[file.name] = {types[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear"
                              and types.get(n.input[0]) in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    assert weights == {"model.onnx": {onnx.TensorProto.UINT8}, "model-vnni.onnx": {onnx.TensorProto.INT8}}
    measured = host.cpu_info()
    for vnni, chosen in ((True, "model-vnni.onnx"), (False, "model.onnx")):
        monkeypatch.setattr(host, "cpu_info", lambda vnni=vnni: {**measured, "vnni": vnni})
        runner = get_backend("onnxruntime").runner(files, INPUTS, ("logits",))
        assert runner.model.name == chosen and runner.effective_settings()["variant"].startswith(chosen)
    pinned = get_backend("onnxruntime").runner(files, INPUTS, ("logits",), {"variant": "portable"})
    assert pinned.model.name == "model.onnx"


@pytest.mark.parametrize("moving_average", [False, True])
def test_onnxruntime_calibration_in_pieces_gives_the_feeds_own_ranges(onnx_file: Path, tmp_path: Path, moving_average: bool) -> None:
    """Calibration runs each feed in pieces (its session holds every activation of a run: 1.9 GB
    for a MobileNetV2 feed of 16); the pieces' extremes combine into exactly the feed's ranges."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    from modelc_build.backends.onnxruntime import _calibrate

    class Feeds:
        def __init__(self) -> None:
            rng = np.random.default_rng(3)  # feeds of unequal spread: a moving average tells them apart
            self.feeds = [{"images": (rng.standard_normal((10, 3, 16, 16)) * (1 + i)).astype(np.float32)} for i in range(3)]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.feeds.pop(0) if self.feeds else None

    ranges = {}
    for chunk in (None, 4, 1):
        scratch = tmp_path / str(chunk)
        scratch.mkdir()
        _calibrate(onnx_file, Feeds(), None, moving_average, scratch / "ranges.json", scratch, chunk)
        data = load_tensors_data(scratch / "ranges.json")
        ranges[chunk] = {name: tuple(np.asarray(value.range_value).ravel().tolist()) for name, value in data.data.items()}
    assert ranges[4] == ranges[1] == ranges[None] and len(ranges[None]) >= 3


def test_onnxruntime_int8_quantizes_a_gemm_whose_bias_is_two_dimensional(tmp_path: Path) -> None:
    """onnxruntime's QDQ quantizer crashed on a Gemm bias of shape [1, N] (magika 1.0, after its
    pre-processing fused MatMul + Add): "The truth value of an array with more than one element is
    ambiguous". The bias is flattened first; the INT8 graph computes what the float one does."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    graph = helper.make_graph(  # the first layer reads the input (kept in float by default); the second is quantized
        [helper.make_node("Gemm", ["x", "w0", "b0"], ["h0"], name="input_dense"), helper.make_node("Relu", ["h0"], ["r0"]),
         helper.make_node("Gemm", ["r0", "w", "b"], ["h"], name="dense"), helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(rng.normal(size=(16, 16)).astype(np.float32), "w0"),
         numpy_helper.from_array(rng.normal(size=(16,)).astype(np.float32), "b0"),
         numpy_helper.from_array(rng.normal(size=(16, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.normal(size=(1, 8)).astype(np.float32), "b")])
    model = tmp_path / "dense.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(model))
    from modelc_build.recipe_types import TensorSpec

    inputs = (TensorSpec("x", ("batch", 16)),)
    feeds = [{"x": rng.normal(size=(16, 16)).astype(np.float32)} for _ in range(4)]
    out = tmp_path / "out"
    out.mkdir()
    request = CompileRequest(Target("onnxruntime", "int8"), model, inputs, ("y",), out, calibration=lambda: iter(feeds),
                             cpu_variants=("vnni",))  # the int8-weight layout is the one the check failed on
    files = get_backend("onnxruntime").compile(request)
    quantized = next(f for f in files if f.name == "model-vnni.onnx")
    assert "DequantizeLinear" in [node.op_type for node in onnx.load(str(quantized)).graph.node], [f.name for f in files]
    x = rng.normal(size=(4, 16)).astype(np.float32)
    expected = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(quantized)).run(None, {"x": x})[0]
    assert float((got * expected).sum() / np.linalg.norm(got) / np.linalg.norm(expected)) > 0.99
