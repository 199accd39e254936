"""The Q/DQ INT8 graph (ModelOpt on the CPU): layout TensorRT expects, accuracy on onnxruntime, exclusions."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from modelc_build.backends import get_backend
from modelc_build.errors import BackendUnavailable, InputError
from modelc_build.recipe_types import Quantization
from tests.fixtures.tiny_net import build_model

pytest.importorskip("modelopt.onnx.quantization", reason="the modelopt extra is not installed")

from modelc_build.qdq import quantize_qdq  # noqa: E402
from tests.conftest import TINY_INPUTS as INPUTS


def feeds(count: int, batch: int = 4, seed: int = 3) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"images": rng.random((batch, 3, 16, 16), dtype=np.float32)} for _ in range(count)]


def quantize(onnx_file: Path, out: Path, options: Quantization = Quantization(),
             data: list[dict[str, np.ndarray]] | None = None) -> tuple[onnx.ModelProto, int]:
    batches = data if data is not None else feeds(4)
    notes = quantize_qdq(onnx_file, INPUTS, lambda: iter(batches), options, out)
    return onnx.load(str(out)), notes["calibration_samples"]


def initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in model.graph.initializer if i.name == name)


def test_weights_are_int8_symmetric_per_channel_and_activations_per_tensor(tmp_path: Path, onnx_file: Path) -> None:
    model, used = quantize(onnx_file, tmp_path / "q.onnx")
    assert used == 16
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    producers = {out: n for n in model.graph.node for out in n.output}
    weight_dq = producers[conv.input[1]]
    activation_dq = producers[conv.input[0]]
    assert weight_dq.op_type == activation_dq.op_type == "DequantizeLinear"
    weights = initializer(model, weight_dq.input[0])
    assert weights.dtype == np.int8  # stored as int8: only a DQ in front of the Conv
    assert initializer(model, weight_dq.input[1]).shape == (8,)  # one scale per output channel
    assert not initializer(model, weight_dq.input[2]).any()  # symmetric: zero points are 0
    assert initializer(model, activation_dq.input[1]).shape == ()  # one scale for the tensor


def test_qdq_graph_runs_on_onnxruntime_close_to_fp32(tmp_path: Path, onnx_file: Path) -> None:
    quantize(onnx_file, tmp_path / "q.onnx")
    x = feeds(1, batch=3, seed=9)[0]["images"]
    with get_backend("onnxruntime").runner([tmp_path / "q.onnx"], INPUTS, ("logits",)) as runner:
        got = runner.infer({"images": x})["logits"]
    expected = build_model().eval()(torch.from_numpy(x)).detach().numpy()
    assert 0 < np.abs(got - expected).max() < 0.1  # quantized (not identical), and close


def test_subset_size_caps_the_samples_read(tmp_path: Path, onnx_file: Path) -> None:
    _, used = quantize(onnx_file, tmp_path / "q.onnx", Quantization(subset_size=6))
    assert used == 6


def fed_by_dequantize(model: onnx.ModelProto, op_type: str) -> bool:
    producers = {out: n for n in model.graph.node for out in n.output}
    node = next(n for n in model.graph.node if n.op_type == op_type)
    return any(i in producers and producers[i].op_type == "DequantizeLinear" for i in node.input)


@pytest.mark.parametrize("options", [Quantization(ignore_types=("Conv",)), Quantization(ignore_names=("/conv/Conv",)),
                                     Quantization(ignore_patterns=(".*conv.*",))], ids=["type", "name", "pattern"])
def test_ignored_layers_stay_in_float(tmp_path: Path, onnx_file: Path, options: Quantization) -> None:
    assert fed_by_dequantize(quantize(onnx_file, tmp_path / "all.onnx")[0], "Conv")
    assert not fed_by_dequantize(quantize(onnx_file, tmp_path / "kept.onnx", options)[0], "Conv")


def test_unknown_ignored_node_name_says_which_names_exist(tmp_path: Path, onnx_file: Path) -> None:
    with pytest.raises(InputError, match="quantization.ignore.names: no_such_node not in the ONNX graph"):
        quantize(onnx_file, tmp_path / "q.onnx", Quantization(ignore_names=("no_such_node",)))


def test_calibration_is_deterministic(tmp_path: Path, onnx_file: Path) -> None:
    quantize(onnx_file, tmp_path / "a.onnx")
    quantize(onnx_file, tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_missing_modelopt_names_the_extra(tmp_path: Path, onnx_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelopt.onnx.quantization", None)  # import now fails
    with pytest.raises(BackendUnavailable, match=r"pip install 'modelc-build\[modelopt\]'"):
        quantize(onnx_file, tmp_path / "q.onnx")


def test_sensitivity_scores_each_quantized_layer_alone(onnx_file: Path) -> None:
    from modelc_build.data import Batch
    from modelc_build.recipe_types import Task
    from modelc_build.sensitivity import measure_sensitivity

    evaluation = [Batch(f, [f"x{i}" for i in range(4)]) for f in feeds(2, seed=11)]
    result = measure_sensitivity(onnx_file, INPUTS, ("logits",), lambda: iter(feeds(4)), lambda: iter(evaluation),
                                 Task(), Quantization())
    layers = result["layers"]
    assert [layer["layer"] for layer in layers] == ["/conv/Conv"]  # ModelOpt leaves this Gemm float
    assert result["metric"] is None and all(layer["metric_drop"] is None for layer in layers)  # generic task
    cosines = [layer["min_cosine"] for layer in layers]
    assert all(0.9 < c < 1.0 for c in cosines)  # really quantized, and close


def test_a_fixed_batch_streaming_model_with_state_and_a_scalar_input(tmp_path: Path) -> None:
    """ModelOpt used to crash on a fixed-batch graph ("'<=' not supported between 'NoneType' and
    'int'"); the calibration feeds now hold one call's batch, the state the float model carried in,
    and the scalar sample rate."""
    import onnxruntime

    from modelc_build.feeds import ModelCaller, with_carried_state
    from modelc_build.recipe_types import TensorSpec
    from models.tiny_stream import ScalarRateStream, make_stream

    model = ScalarRateStream()
    model.load_state_dict(torch.load(Path(__file__).parents[1] / "models/tiny_stream.pt", weights_only=True))
    source = tmp_path / "stream.onnx"
    torch.onnx.export(model.eval(), (torch.zeros(1, 64), torch.zeros(2, 1, 16), torch.tensor(16000)), str(source),
                      input_names=["x", "state", "sr"], output_names=["probability", "state_out"], opset_version=17,
                      dynamo=False)
    inputs = (TensorSpec("x", (1, 64)), TensorSpec("state", (2, 1, 16), batch_axis=1, state_from="state_out"),
              TensorSpec("sr", (), "int64", batch_axis=None, value=16000))
    chunks = make_stream(256, seed=21)[0]
    calibration = with_carried_state(lambda: iter([{"x": chunks[i:i + 16]} for i in range(0, 256, 16)]), source, inputs)
    notes = quantize_qdq(source, inputs, calibration, Quantization(), tmp_path / "int8.onnx")
    assert notes["calibration_samples"] == 256
    graph = onnx.load(str(tmp_path / "int8.onnx"))
    assert any(node.op_type == "QuantizeLinear" for node in graph.graph.node)

    def streamed(path: Path) -> np.ndarray:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        call = ModelCaller(inputs, lambda feed: dict(zip(["probability", "state_out"], session.run(None, feed))))
        return call({"x": make_stream(200, seed=22)[0]})["probability"][:, 0]

    reference, quantized = streamed(source), streamed(tmp_path / "int8.onnx")
    assert np.mean((reference > 0.5) == (quantized > 0.5)) > 0.9


@pytest.mark.slow
def test_the_shipped_transformer_gets_qdq_on_its_matmul_and_gemm_only(tmp_path: Path) -> None:
    """The TensorRT path for a transformer: ModelOpt's Q/DQ graph of the shipped text encoder (int64
    token inputs, dynamic batch and sequence) quantizes the MatMul/Gemm layers and nothing else, and
    its sentence embeddings stay close to the float model's."""
    import collections

    import onnxruntime

    from modelc_build.data import DataReader
    from modelc_build.export import export_onnx, simplify_onnx
    from modelc_build.feeds import ModelCaller
    from modelc_build.recipe import load_recipe
    from modelc_build.sources import load_torch_model

    recipe = load_recipe(Path(__file__).parents[1] / "recipes/text_encoder.yaml")
    assert recipe.calibration is not None and recipe.evaluation is not None
    exported, source = tmp_path / "exported.onnx", tmp_path / "encoder.onnx"
    export_onnx(load_torch_model(recipe.model), recipe.model.inputs, recipe.model.outputs, recipe.export, exported)
    simplify_onnx(exported, source, recipe.model.inputs)
    calibration = DataReader(recipe.calibration, recipe.model.inputs, None)
    notes = quantize_qdq(source, recipe.model.inputs, calibration.feeds, Quantization(), tmp_path / "int8.onnx")
    assert notes["calibration_samples"] == 300
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    readers = collections.Counter(n.op_type for n in graph.node if set(n.input) & dequantized)
    assert set(readers) == {"Gemm", "MatMul"}, readers

    def embeddings(path: Path) -> np.ndarray:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        call = ModelCaller(recipe.model.inputs, lambda feed: dict(zip(["embedding", "logits"], session.run(None, feed))))
        return np.concatenate([call(batch.inputs)["embedding"] for batch in
                               DataReader(recipe.evaluation, recipe.model.inputs, None).batches()])

    want, got = embeddings(source), embeddings(tmp_path / "int8.onnx")
    cosines = (want * got).sum(axis=1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cosines.mean() > 0.999 and cosines.min() > 0.99, (cosines.mean(), cosines.min())
