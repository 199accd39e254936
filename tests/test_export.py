from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from modelc_build.backends.onnxruntime import OnnxRuntimeRunner
from modelc_build.errors import InputError
from modelc_build.export import check_model_accepts_inputs, export_onnx, simplify_onnx
from modelc_build.recipe_types import ExportOptions, TensorSpec
from tests.fixtures.tiny_net import build_model, build_two_outputs

INPUTS = (TensorSpec("images", ("batch", 3, 16, 16)),)
REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_export_matches_torch_with_dynamic_batch(tmp_path: Path, exporter: str) -> None:
    model = build_model().eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, INPUTS, ("logits",), ExportOptions(exporter=exporter, opset=18), path)
    graph = onnx.load(str(path))
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # batch stays symbolic
    assert [o.name for o in graph.graph.output] == ["logits"]
    simplified = tmp_path / "s.onnx"
    assert simplify_onnx(path, simplified, INPUTS) == {"simplified": True}
    x = np.random.default_rng(0).random((5, 3, 16, 16), dtype=np.float32)
    with OnnxRuntimeRunner(simplified, INPUTS, ("logits",)) as runner:
        got = runner.infer({"images": x})["logits"]
    expected = model(torch.from_numpy(x)).detach().numpy()
    assert np.abs(got - expected).max() < 1e-5


def test_wrong_input_shape_is_an_input_error() -> None:
    wrong = (TensorSpec("images", ("batch", 4, 16, 16)),)
    with pytest.raises(InputError, match=r"the model does not accept the declared inputs images\['batch', 4, 16, 16\]"):
        check_model_accepts_inputs(build_model().eval(), wrong, ("logits",))


def test_output_count_must_match() -> None:
    with pytest.raises(InputError, match=r"the model returns 2 output\(s\) but model.outputs names 1"):
        check_model_accepts_inputs(build_two_outputs().eval(), INPUTS, ("y",))


SAVE_IN_A_FRESH_PROCESS = """
import sys
from modelc_build.backends.torch_convert import export_torchscript
from modelc_build.recipe_types import TensorSpec
from tests.fixtures.tiny_net import build_model
export_torchscript(build_model().eval(), (TensorSpec("images", ("batch", 3, 16, 16)),), sys.argv[1], __import__("pathlib").Path(sys.argv[2]))
"""


@pytest.mark.parametrize("mode", ["trace", "script"])
def test_torchscript_is_reproducible_across_processes_and_loads(tmp_path: Path, mode: str) -> None:
    """torch writes a random serialization id and process-wide name counters; two builds in two
    processes must still give identical bytes."""
    digests = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "model.pt"
        subprocess.run([sys.executable, "-c", SAVE_IN_A_FRESH_PROCESS, mode, str(path)], check=True, cwd=REPO)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    loaded = torch.jit.load(str(tmp_path / "a" / "model.pt"))
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(loaded(x), build_model().eval()(x), atol=1e-5)


def test_shape_inference_with_the_weights_set_aside_gives_the_same_model() -> None:
    """The large initializers' bytes are set aside while onnx infers shapes (dims are all it
    reads); a small shape constant a Reshape reads stays. The result is byte for byte what
    inference over the whole model gives."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelc_build.export import WEIGHT_BYTES, _infer_shapes_without_weights

    weight = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    assert weight.nbytes >= WEIGHT_BYTES
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([-1, 16, 16], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    expected = onnx.shape_inference.infer_shapes(model).SerializeToString()
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    got = _infer_shapes_without_weights(copy)
    assert got.SerializeToString() == expected
    assert [d.dim_value for d in got.graph.output[0].type.tensor_type.shape.dim][1:] == [16, 16]  # the Reshape read its shape
    assert numpy_helper.to_array(got.graph.initializer[0]).tobytes() == weight.tobytes()
