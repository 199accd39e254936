"""AOTInductor targets (`backend: aoti`): a .pt2 package compiled for a declared x86 ISA baseline,
verified natively and on an emulated Haswell, where a package built for a wider ISA dies with an
illegal instruction: a failed check, never a release."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelc_build.emulation import emulator
from modelc_build.host import cpu_info

needs_qemu = pytest.mark.skipif(emulator() is None, reason="qemu-x86_64 is not installed (apt-get install qemu-user)")
ON_HASWELL = {"openvino_inference_precision": "f32", "cpus": ["Haswell"], "emulate_host_class": True, "emulated_samples": 3,
              "emulation_budget_s": 60}


def aoti_recipe(tiny_recipe, isa: str | None = None, version: str = "0.1.0") -> Path:
    target = {"backend": "aoti", "precisions": ["fp32"], **({"isa": isa} if isa else {})}
    return tiny_recipe({"targets": [target], "gates": {"fp32": {"min_cosine": 0.9999, "max_metric_drop": 0}},
                        "verify": ON_HASWELL, "version": version}, name=f"aoti-{isa or 'default'}.yaml")


@pytest.mark.slow
@needs_qemu
def test_an_aoti_package_built_for_x86_64_v3_runs_on_an_emulated_haswell(tmp_path: Path, tiny_recipe, run_cli) -> None:
    result = run_cli("build", aoti_recipe(tiny_recipe), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    release = tmp_path / "store/tiny/0.1.0"
    assert (release / "aoti-fp32/model.pt2").is_file()
    assert json.loads((release / "aoti-fp32/aoti.json").read_text())["isa"] == "x86-64-v3"
    report = json.loads((release / "report.json").read_text())
    artifact = report["artifacts"][0]
    assert artifact["passed"] and artifact["outputs"][0]["cosine"] > 0.9999 and artifact["runtime"]["isa"] == "x86-64-v3"
    haswell = next(m for m in artifact["measurements"] if m["emulate"] == "Haswell")
    assert haswell["passed"] and haswell["emulation"]["class"] == "avx2" and haswell["samples"] >= 2, haswell
    assert all(v["cosine"] > 0.9999 for v in haswell["emulation"]["versus_native"])
    proved = run_cli("verify", release, "--unsigned", "--run")  # the golden set, on this machine, as a deploy stage does
    assert proved.exit_code == 0, proved.stderr


@pytest.mark.slow
@needs_qemu
def test_an_aoti_package_built_for_this_avx512_machine_fails_on_haswell_naming_the_illegal_instruction(
        tmp_path: Path, tiny_recipe, run_cli) -> None:
    if not cpu_info()["avx512"]:
        pytest.skip("this machine has no AVX-512: a native package is an AVX2 package here, and runs on a Haswell")
    result = run_cli("build", aoti_recipe(tiny_recipe, "native"), "--store", tmp_path / "store",
                     "--reports-dir", tmp_path / "failed")
    assert result.exit_code == 4, result.stderr
    assert "the artifact cannot run on Haswell: it executed an instruction this CPU does not have (SIGILL" in result.stderr
    assert not (tmp_path / "store/tiny/0.1.0").exists()
    report = json.loads((tmp_path / "failed/tiny/0.1.0/report.json").read_text())
    artifact = report["artifacts"][0]
    assert all(g["passed"] for g in artifact["gates"])  # right on this machine
    haswell = next(m for m in artifact["measurements"] if m["emulate"] == "Haswell")
    assert not haswell["passed"] and "SIGILL" in haswell["problem"]
    notes = json.loads((tmp_path / "failed/tiny/0.1.0/report.json").read_text())
    assert notes["machine"]["avx512"]


def test_aoti_refuses_what_it_cannot_build_and_takes_isa_only_for_itself(tmp_path: Path, tiny_recipe, run_cli) -> None:
    refused = run_cli("validate", tiny_recipe({"targets": [{"backend": "aoti", "precisions": ["int8"]},
                                                           {"backend": "onnxruntime", "precisions": ["fp32"], "isa": "native"}],
                                               "gates": None}, name="bad.yaml"))
    assert refused.exit_code == 2
    assert "aoti int8 is not offered" in refused.stderr and "'isa' applies to aoti targets only" in refused.stderr
