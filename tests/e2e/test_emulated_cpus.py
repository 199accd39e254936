"""INT8 verified on an emulated deploy CPU: QEMU user mode plays a Haswell (AVX2, no VNNI), whose
8-bit kernels differ from a VNNI machine's, on any build machine; a broken emulator is reported as
such, never as a broken artifact."""
from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from modelc_build.emulation import emulator
from tests.conftest import shipped_recipe

needs_qemu = pytest.mark.skipif(emulator() is None, reason="qemu-x86_64 is not installed (apt-get install qemu-user)")
INT8_ONLY = [{"backend": "onnxruntime", "precisions": ["int8"]}, {"backend": "openvino", "precisions": ["int8"]}]
EMULATE_ANYWHERE = {"cpus": ["Haswell"], "emulate_host_class": True, "emulated_samples": 6, "emulation_budget_s": 120}


@pytest.mark.slow
@needs_qemu
def test_the_shipped_detector_int8_is_verified_on_an_emulated_haswell(tmp_path: Path, run_cli) -> None:
    recipe = shipped_recipe("yolo.yaml", tmp_path, targets=INT8_ONLY, verify=EMULATE_ANYWHERE, latency={"runs": 2, "warmup": 1},
                            gates={"int8": {"min_cosine": 0.99, "max_metric_drop": 1.0}})
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    assert "emulated Haswell (QEMU), 6 samples: cosine" in result.stderr
    release = tmp_path / "store/tiny-yolo-shapes/1.0.0"
    report = json.loads((release / "report.json").read_text())
    for artifact in report["artifacts"]:
        haswell = next(m for m in artifact["measurements"] if m["emulate"] == "Haswell")
        emulation = haswell["emulation"]
        assert haswell["gated"] and haswell["passed"] and haswell["problem"] is None, haswell
        assert haswell["samples"] == emulation["samples"] == 6 and emulation["cpu"] == "Haswell"
        assert emulation["class"] == "avx2" and "AVX2" in emulation["features"] and "AVX512F" not in emulation["features"]
        assert {g["gate"] for g in haswell["gates"]} >= {"min_cosine"}  # tensor gates; task gates need the whole set
        assert not {g["gate"] for g in haswell["gates"]} & {"max_metric_drop", "min_reference_map50"}
        assert all(v["cosine"] > 0.99 for v in emulation["versus_native"])  # the emulated kernels compute the same here
        assert emulation["process"] == "service"  # the build's warm emulated process for this backend ran it
        if artifact["backend"] == "openvino":  # OpenVINO's own counters name the AVX2 integer kernels
            assert any("avx2" in k and "I8" in k for k in emulation["kernels"]), emulation["kernels"]
        else:  # onnxruntime's profiler: the convolutions ran as integer QLinearConv, in the portable layout
            assert "QLinearConv" in emulation["kernels"], emulation["kernels"]
            assert emulation["runtime"]["variant"].startswith("model.onnx (portable")
            native = "model-vnni.onnx" if report["machine"]["vnni"] else "model.onnx"
            assert artifact["runtime"]["variant"].startswith(native)  # each layout on the CPU class it is for
    markdown = (release / "report.md").read_text()
    assert "on emulated Haswell: 6 of 6 samples" in markdown and "kernels Convolution (jit_avx2" in markdown
    manifest = json.loads((release / "manifest.json").read_text())
    for artifact in manifest["artifacts"][1:]:
        assert [v["how"] for v in artifact["verified_on"]] == ["native", "emulated (QEMU user mode)"]
        assert artifact["verified_on"][1]["cpu"] == "Haswell" and artifact["verified_on"][1]["passed"]


def stand_in_emulator(folder: Path, canary: str) -> Path:
    """An 'emulator' with qemu-x86_64's arguments that runs the command natively (so the process
    sees this machine's CPU, not a Haswell), then overwrites the canary's outputs with garbage. It
    cannot keep a warm service (it exits at once when asked to), so each check runs alone."""
    script = folder / "fake-qemu"
    script.write_text(f"""#!/bin/sh
shift 2  # -cpu MODEL
case "$*" in *--serve*) exit 3;; esac
"$@"
status=$?
work="$(eval echo \\${{$#}})"
{canary}
exit $status
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


GARBAGE = (f'"{sys.executable}" -c "import numpy as np, sys; np.savez(sys.argv[1], y=np.full((1, 5), 1e6, np.float32))" '
           '"$work/canary-output.npz"')


def test_a_broken_emulator_is_reported_as_such_not_as_a_broken_artifact(tmp_path: Path, tiny_recipe, run_cli,
                                                                       monkeypatch) -> None:
    import yaml

    from tests.conftest import write_images

    monkeypatch.setenv("MODELC_EMULATOR", str(stand_in_emulator(tmp_path, GARBAGE)))
    write_images(tmp_path / "calibration", 8, size=(24, 20))
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": str(tmp_path / "calibration")}
    base.update(targets=INT8_ONLY, gates=None, verify={**EMULATE_ANYWHERE, "emulated_samples": 3})
    result = run_cli("build", tiny_recipe(base, name="broken-emulator.yaml"), "--store", tmp_path / "store",
                     "--reports-dir", tmp_path / "failed")
    assert result.exit_code == 4, result.stderr  # a setup defect is not a pass: judged on no sample of a CPU it ships for
    assert "emulated Haswell (QEMU): not judged" in result.stderr, result.stderr
    assert "warning: onnxruntime-int8 (emulated Haswell (QEMU)): the emulation is broken, so the artifact was not " \
           "judged on this CPU: the canary model (a tiny float CNN) differs from its native outputs" in result.stderr
    assert "min_emulated_samples: 0 vs threshold 2 (MISSED by 2, default gate)" in result.stderr
    assert not (tmp_path / "store/tiny/0.1.0").exists()
    report = json.loads((tmp_path / "failed/tiny/0.1.0/report.json").read_text())
    for artifact in report["artifacts"]:
        haswell = next(m for m in artifact["measurements"] if m["emulate"] == "Haswell")
        assert not artifact["passed"] and not haswell["passed"] and [g["gate"] for g in haswell["gates"]] == ["min_emulated_samples"]
        assert haswell["problem"].startswith("the emulation is broken")
        assert haswell["emulation"]["process"] == "own"  # its service was gone: the check ran in a process of its own
    assert any("the emulation is broken" in flag for flag in report["flags"])


def test_without_an_emulator_the_check_is_said_not_run_with_the_install_command(tmp_path: Path, tiny_recipe, run_cli,
                                                                              monkeypatch) -> None:
    import yaml

    from tests.conftest import write_images

    monkeypatch.setenv("MODELC_EMULATOR", str(tmp_path / "no-such-emulator"))
    write_images(tmp_path / "calibration", 8, size=(24, 20))
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": str(tmp_path / "calibration")}
    base.update(targets=[{"backend": "onnxruntime", "precisions": ["int8"]}], gates=None, verify=EMULATE_ANYWHERE)
    result = run_cli("build", tiny_recipe(base, name="no-emulator.yaml"), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    assert ("warning: onnxruntime-int8 (emulated Haswell (QEMU)): the Haswell check did not run: no emulator "
            "(qemu-x86_64) on this machine; install it (apt-get install qemu-user) and build again") in result.stderr
    markdown = (tmp_path / "store/tiny/0.1.0/report.md").read_text()
    assert "⚠️ the Haswell check did not run" in markdown
    required = run_cli("build", tiny_recipe({**base, "version": "0.2.0"}, name="no-emulator.yaml"), "--store",
                       tmp_path / "store", "--require-cpus", "--reports-dir", tmp_path / "failed")
    assert required.exit_code == 4 and "min_emulated_samples: 0 vs threshold 2 (MISSED by 2)" in required.stderr
