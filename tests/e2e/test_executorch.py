"""ExecuTorch targets (`backend: executorch`): XNNPACK programs, FP32 and PT2E INT8 calibrated on
the recipe's data, run by executorch.runtime; INT8 checked on an emulated Haswell; the ARM64 check
said not run, with why, where no ARM64 runtime can be had."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelc_build.emulation import emulator
from tests.conftest import write_images

pytest.importorskip("executorch.runtime", reason="executorch is not installed (pip install 'modelc-build[executorch]')")


@pytest.mark.slow
def test_executorch_fp32_and_int8_programs_pass_their_gates_and_int8_runs_on_haswell(tmp_path: Path, tiny_recipe,
                                                                                    run_cli) -> None:
    write_images(tmp_path / "calibration", 16, size=(24, 20))
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": str(tmp_path / "calibration")}
    cpus = ["Haswell", "neoverse-n1"] if emulator() is not None else []
    base.update(targets=[{"backend": "executorch", "precisions": ["fp32", "int8"]}],
                gates={"fp32": {"min_cosine": 0.9999}, "int8": {"min_cosine": 0.98}},
                verify={"cpus": cpus, "emulate_host_class": True, "emulated_samples": 3, "emulation_budget_s": 60})
    result = run_cli("build", tiny_recipe(base, name="et.yaml"), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    release = tmp_path / "store/tiny/0.1.0"
    report = json.loads((release / "report.json").read_text())
    by_target = {a["target"]: a for a in report["artifacts"]}
    assert by_target["executorch-fp32"]["outputs"][0]["cosine"] > 0.9999
    int8 = by_target["executorch-int8"]
    assert int8["passed"], int8
    coverage = int8["quantization"]["coverage"]["model.pte"]
    assert coverage["quantized"] == coverage["layers"] - 1 > 0, coverage  # every layer but the output layer in INT8
    kept = int8["quantization"]["kept_in_float"]["layers"]
    assert len(kept) == 1 and kept[0].endswith("head"), kept  # its logits stay float: 256 levels tie classes
    assert int8["quantization"]["calibration_samples"] == 16
    if cpus:
        haswell = next(m for m in int8["measurements"] if m["emulate"] == "Haswell")
        assert haswell["passed"] and haswell["emulation"]["class"] == "avx2", haswell
        arm = next(m for m in int8["measurements"] if m["emulate"] == "neoverse-n1")
        assert not arm["passed"] and "ExecuTorch's Python runtime imports torch" in arm["problem"]
        assert "warning: executorch-int8 (emulated neoverse-n1 (QEMU)): the neoverse-n1 check did not run" in result.stderr
    proved = run_cli("verify", release, "--unsigned", "--run")
    assert proved.exit_code == 0, proved.stderr


@pytest.mark.heavy
def test_the_shipped_edge_recipe_builds_aoti_for_haswell_and_executorch_int8_within_the_default_gates(
        tmp_path: Path, run_cli, mobilenet_v2: Path) -> None:
    """recipes/mobilenet_v2_edge.yaml: ImageNet MobileNetV2 as an AOTInductor package for every AVX2
    CPU (run on an emulated Haswell) and as ExecuTorch programs, INT8 under modelc's default gates."""
    result = run_cli("build", mobilenet_v2.parent / "mobilenet_v2_edge.yaml", "--store", tmp_path / "store", "-j", "2")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "store/mobilenet-v2-edge/1.0.0/report.json").read_text())
    by_target = {a["target"]: a for a in report["artifacts"]}
    int8 = by_target["executorch-int8"]
    assert int8["passed"] and {g["source"] for g in int8["gates"]} == {"default"}
    assert int8["outputs"][0]["cosine"] >= 0.97 and int8["task_metric"]["label_free"]["top5_containment"] >= 95.0
    aoti = by_target["aoti-fp32"]
    assert aoti["outputs"][0]["cosine"] > 0.9999 and aoti["runtime"]["isa"] == "x86-64-v3"
    if emulator() is not None:
        haswell = next(m for m in aoti["measurements"] if m["emulate"] == "Haswell")
        assert haswell["passed"] and haswell["samples"] >= 2, haswell
