"""The worth step: a mixed-precision INT8 artifact is timed against its FP32 graph with nothing
beside it, and refused where it is no faster (exit 7); a full INT8 artifact is not judged there."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelc_build.cache import CacheEntry
from modelc_build.errors import CompileError
from modelc_build.fingerprint import DataSource, Fingerprints
from modelc_build.manifest import QUANTIZATION_NOTES
from modelc_build.recipe_types import ModelSource, Target, TensorSpec
from modelc_build.steps import StepInputs
from modelc_build.steps.worth import WORTH_FILE, WorthStep

INPUTS = (TensorSpec("x", (1, 64, 56, 56)),)
TARGET = Target("onnxruntime", "int8")


def convolutions(path: Path, count: int) -> Path:
    """`count` 3x3 convolutions of 64 channels on 56x56: the time grows with `count` (~1 ms each)."""
    rng = np.random.default_rng(0)
    nodes, weights, last = [], [], "x"
    for index in range(count):
        weights.append(numpy_helper.from_array((rng.standard_normal((64, 64, 3, 3)) * 0.05).astype(np.float32), f"w{index}"))
        out = "y" if index == count - 1 else f"h{index}"
        nodes.append(helper.make_node("Conv", [last, f"w{index}"], [out], pads=[1, 1, 1, 1]))
        last = out
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 56, 56])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 56, 56])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def entry(folder: Path, step: str, files: dict[str, object]) -> CacheEntry:
    folder.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, Path):
            (folder / name).write_bytes(content.read_bytes())
        else:
            (folder / name).write_text(json.dumps(content))
    return CacheEntry("k" * 64, step, folder, {name: "0" * 64 for name in files}, time.time(), 0)


def judge(tmp_path: Path, artifact_convs: int, notes: dict[str, object]) -> dict[str, object]:
    graph = entry(tmp_path / "graph", "simplify", {"model.onnx": convolutions(tmp_path / "float.onnx", 3)})
    compiled = entry(tmp_path / "compiled", "compile:onnxruntime-int8",
                     {"model.onnx": convolutions(tmp_path / "artifact.onnx", artifact_convs), QUANTIZATION_NOTES: notes})
    step = WorthStep(TARGET, "simplify", ModelSource("onnx", INPUTS, ("y",)), DataSource("evaluation", None, INPUTS, None))
    out = tmp_path / "out"
    out.mkdir()
    step.run(StepInputs({"simplify": graph, "compile:onnxruntime-int8": compiled}, Fingerprints()), out)
    return json.loads((out / WORTH_FILE).read_text())


SEARCHED = {"fallback": {"full_int8_cosine": 0.41, "mixed_cosine": 0.9999, "kept_in_float": ["conv_3"],
                         "summary": "at cosine 0.9999 with 1 layer(s) in float"}}


def test_a_mixed_graph_slower_than_fp32_is_refused_naming_its_speed(tmp_path: Path) -> None:
    with pytest.raises(CompileError) as refused:
        judge(tmp_path, 12, SEARCHED)  # four times the float graph's work
    message = refused.value.message
    assert message.startswith("onnxruntime-int8: INT8 is not worth it here: best mixed INT8 ")
    assert float(message.split("best mixed INT8 ")[1].split("×")[0]) > 2.0, message
    assert "at cosine 0.9999 with 1 layer(s) in float (full INT8 cosine 0.4100)" in message
    assert refused.value.exit_code == 7


def test_a_mixed_graph_faster_than_fp32_is_kept_with_its_ratio(tmp_path: Path) -> None:
    judged = judge(tmp_path, 1, SEARCHED)  # a third of the float graph's work
    assert judged["judged"] is True and judged["latency_vs_fp32"] < 0.9 and judged["fp32_ms"] > 0, judged


def test_full_int8_that_held_is_not_timed(tmp_path: Path) -> None:
    notes = {"fallback": {"full_int8_cosine": 0.999, "kept_in_float": [], "verdict": "full INT8 holds the gate"}}
    assert judge(tmp_path, 8, notes) == {"judged": False}
