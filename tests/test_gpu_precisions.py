"""The precision table per TensorRT flavour and GPU generation (modelc_build.gpus.PRECISION_TABLE,
from NVIDIA's support matrices) and what validate makes of it."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from modelc_build.gpus import FULL, GENERATIONS, PRECISION_TABLE, RTX, RTX_TARGETS, planned_flavour, precision_verdict


@pytest.mark.parametrize("gpu", RTX_TARGETS)
def test_tensorrt_for_rtx_runs_16_bit_floats_everywhere_and_no_int8_convolution_anywhere(gpu: str) -> None:
    assert precision_verdict(gpu, "fp32") is None and precision_verdict(gpu, "fp16") is None
    refusal = precision_verdict(gpu, "int8")
    assert refusal is not None and refusal.startswith(f"TensorRT for RTX lists no INT8 convolution for {gpu}")
    assert "flavour: tensorrt" in refusal
    assert precision_verdict(gpu, "int8", FULL) is None  # full TensorRT runs INT8 activations there


@pytest.mark.parametrize(("gpu", "expected"), [
    ("sm75", {"fp32", "fp16"}),
    ("sm86", {"fp32", "fp16", "bf16", "int8-wo", "int4-wo"}),
    ("sm89", {"fp32", "fp16", "bf16", "int8-wo", "int4-wo", "fp8"}),
    ("sm120", {"fp32", "fp16", "bf16", "int8-wo", "int4-wo", "fp8", "fp4"}),
])
def test_tensorrt_for_rtx_rows_are_its_support_matrix(gpu: str, expected: set[str]) -> None:
    assert PRECISION_TABLE[RTX][gpu] == expected


@pytest.mark.parametrize("gpu", sorted(GENERATIONS))
def test_full_tensorrt_runs_int8_everywhere_fp8_from_ada_fp4_from_blackwell(gpu: str) -> None:
    runs = PRECISION_TABLE[FULL][gpu]
    assert {"fp32", "fp16", "int8"} <= runs
    assert ("fp8" in runs) == (gpu not in ("sm75", "sm80", "sm86"))
    assert ("fp4" in runs) == (gpu in ("sm100", "sm120", "sm121"))
    assert ("bf16" in runs) == (gpu != "sm75")


def test_who_builds_a_generation() -> None:
    assert planned_flavour("sm86") == RTX and planned_flavour("sm90") == FULL and planned_flavour("sm86", FULL) == FULL
    assert precision_verdict("sm90", "int8") is None  # Hopper: full TensorRT
    assert "does not target sm90" in (precision_verdict("sm90", "fp16", RTX) or "")


def test_the_backend_offers_what_the_table_says() -> None:
    from modelc_build.backends import capabilities

    table = capabilities("tensorrt").gpu_precisions
    assert table[RTX]["sm89"] == {"fp32", "fp16", "fp8", "int4-wo"} and table[RTX]["sm86"] == {"fp32", "fp16", "int4-wo"}
    assert table[FULL]["sm89"] == {"fp32", "fp16", "int8", "fp8", "int4-wo"} and table[RTX]["sm75"] == {"fp32", "fp16"}


def test_validate_refuses_int8_for_tensorrt_for_rtx_in_one_line(tmp_path: Path, run_cli, onnx_file: Path) -> None:
    import numpy as np

    np.save(tmp_path / "c.npy", np.zeros((4, 3, 16, 16), dtype=np.float32))
    recipe = yaml.safe_load((Path(__file__).parents[1] / "recipes/mobilenet_v2_gpu.yaml").read_text())
    recipe["model"] = {"source": "onnx", "path": str(onnx_file), "inputs": [{"name": "images", "shape": ["batch", 3, 16, 16]}],
                       "outputs": ["logits"]}
    recipe["data"] = {"calibration": {"path": str(tmp_path / "c.npy")}}
    recipe["task"] = {"type": "generic"}
    recipe["targets"] = [{"backend": "tensorrt", "precisions": ["fp16", "int8"], "gpus": ["ampere"]}]
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    refused = run_cli("validate", path)
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "targets[0].precisions[1]: tensorrt int8: TensorRT for RTX lists no INT8 convolution for sm86" in refused.stderr
    recipe["targets"][0]["flavour"] = "tensorrt"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert run_cli("validate", path).exit_code == 0


def test_the_shipped_gpu_recipe_asks_only_for_what_its_generations_run(run_cli) -> None:
    assert run_cli("validate", Path(__file__).parents[1] / "recipes/mobilenet_v2_gpu.yaml").exit_code == 0


def test_fp8_is_refused_where_the_generation_has_none(tmp_path: Path, run_cli) -> None:
    recipe = yaml.safe_load((Path(__file__).parents[1] / "recipes/text_encoder_gpu.yaml").read_text())
    base = Path(__file__).parents[1] / "recipes"
    recipe["model"]["factory"] = str(base / recipe["model"]["factory"])
    recipe["model"]["weights"] = str(base / recipe["model"]["weights"])
    for role in ("calibration", "evaluation"):
        recipe["data"][role]["path"] = str(base / recipe["data"][role]["path"])
    recipe["targets"] = [{"backend": "tensorrt", "precisions": ["fp8"], "gpus": ["ampere"]}]
    path = tmp_path / "fp8.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    refused = run_cli("validate", path)
    assert refused.exit_code == 2
    assert "tensorrt fp8: TensorRT for RTX does not run fp8 on sm86 (Ampere: A10, A40, RTX 30)" in refused.stderr
