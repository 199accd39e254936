"""ARM64 deploy CPUs under QEMU user mode (modelc_build/arm64.py): an ARM64 root from Debian's
packages with the aarch64 wheels of this machine's runtime versions, one view per core with that
core's cpuinfo. A release wrong only on ARM fails its gate there like on any CPU class."""
from __future__ import annotations

import json
import platform
import stat
from pathlib import Path

import pytest
import yaml

from modelc_build import arm64
from modelc_build.errors import BackendUnavailable
from modelc_build.host import EMULATED_CLASSES, kernel_class
from tests.conftest import write_images


def test_each_arm_core_shows_its_own_cpuinfo_and_class(tmp_path: Path, monkeypatch) -> None:
    """What an ARM kernel shows of a core: the Features line names the class modelc files the core
    under (dot-product INT8 kernels or plain NEON), and MIDR_EL1 the part OpenVINO reads."""
    n1, a72 = arm64.ARM_CORES["neoverse-n1"], arm64.ARM_CORES["cortex-a72"]
    assert f"{n1.midr:#x}" == "0x413fd0c1" and f"{a72.midr:#x}" == "0x410fd083"  # Arm's published MIDR values
    for cpu, core in arm64.ARM_CORES.items():
        text = arm64._cpuinfo(core, 2)
        features = next(line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("Features"))
        assert kernel_class(set(features)) == core.kernel_class == EMULATED_CLASSES[cpu]
        assert text.count("processor\t:") == 2 and f"CPU part\t: 0x{core.part:03x}" in text
    assert EMULATED_CLASSES["neoverse-n1"] == "arm64-dotprod" and EMULATED_CLASSES["cortex-a72"] == "arm64"


def test_the_root_is_keyed_by_the_runtime_versions_it_holds(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(arm64.ROOT_VARIABLE, str(tmp_path))
    from importlib.metadata import version

    assert f"onnxruntime{version('onnxruntime')}" in arm64.root_key() and arm64.root().parent == tmp_path
    assert not arm64.ready()


def test_without_mmdebstrap_the_root_cannot_be_made_and_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(arm64.ROOT_VARIABLE, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BackendUnavailable) as refused:
        arm64.prepare()
    assert "mmdebstrap is not installed: apt-get install mmdebstrap, then run `modelc prepare-cpus`" in refused.value.message
    assert not any(tmp_path.iterdir()) or not arm64.ready()  # nothing half made is taken for a root


def arm_root_or_skip() -> None:
    """The ARM64 root, prepared once per machine (~30 s, needs Debian's and PyPI's servers once)."""
    if arm64.emulator() is None:
        pytest.skip("qemu-aarch64 is not installed (apt-get install qemu-user)")
    if platform.machine() != "x86_64":
        pytest.skip("the emulated ARM64 CPUs are for x86-64 build machines (an ARM64 one checks them natively)")
    try:
        arm64.prepare()
    except BackendUnavailable as error:
        pytest.skip(f"the ARM64 root could not be prepared here: {error.message}")


PLANTED = '''
import os
import onnxruntime

_run = onnxruntime.InferenceSession.run


def _wrong_on_this_cpu(self, output_names, feed, run_options=None):
    """This 'ARM build' of onnxruntime computes the artifact (model.onnx) wrongly, and the float
    canary right: what an ARM-only kernel defect looks like to modelc."""
    outputs = _run(self, output_names, feed, run_options)
    if os.path.basename(str(getattr(self, "_model_path", ""))) == "model.onnx":
        outputs = [-value for value in outputs]
    return outputs


onnxruntime.InferenceSession.run = _wrong_on_this_cpu
'''


def planted_arm_emulator(folder: Path) -> Path:
    """The real qemu-aarch64, whose emulated Python starts with a sitecustomize that makes the
    artifact's outputs wrong there (and only there)."""
    plant = folder / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(PLANTED)
    script = folder / "qemu-aarch64-planted"
    script.write_text(f'#!/bin/sh\nPYTHONPATH="{plant}:$PYTHONPATH" exec "{arm64.emulator()}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def int8_recipe(tmp_path: Path, tiny_recipe, cpus: list[str]) -> Path:
    write_images(tmp_path / "calibration", 8, size=(24, 20))
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": str(tmp_path / "calibration")}
    base.update(targets=[{"backend": "onnxruntime", "precisions": ["int8"]}], gates=None,
                verify={"cpus": cpus, "emulated_samples": 4, "emulation_budget_s": 60}, latency={"runs": 2, "warmup": 1})
    return tiny_recipe(base, name="arm.yaml")


@pytest.mark.slow
def test_a_release_wrong_only_on_arm_is_refused_there(tmp_path: Path, tiny_recipe, run_cli, monkeypatch) -> None:
    """The same artifact, right natively and on an emulated Neoverse-N1: stored; then with an ARM
    runtime that computes it wrongly: the Neoverse-N1 check fails its gate (exit 4), the native one
    passes, and the report says which CPU it failed on."""
    arm_root_or_skip()
    recipe = int8_recipe(tmp_path, tiny_recipe, ["neoverse-n1"])
    right = run_cli("build", recipe, "--store", tmp_path / "store")
    assert right.exit_code == 0, right.stderr
    report = json.loads((tmp_path / "store/tiny/0.1.0/report.json").read_text())
    arm = next(m for m in report["artifacts"][0]["measurements"] if m["emulate"] == "neoverse-n1")
    assert arm["passed"] and arm["gated"] and arm["emulation"]["class"] == "arm64-dotprod", arm
    assert "ASIMDDP" in arm["emulation"]["features"] and "AVX2" not in arm["emulation"]["features"]
    assert arm["emulation"]["runtime"]["variant"].startswith("model.onnx (portable")  # the layout ARM runs
    assert all(v["cosine"] > 0.999 for v in arm["emulation"]["versus_native"])  # the same numbers as x86 here

    monkeypatch.setenv(arm64.EMULATOR_VARIABLE, str(planted_arm_emulator(tmp_path)))
    recipe.write_text(yaml.safe_dump(yaml.safe_load(recipe.read_text()) | {"version": "0.2.0"}))
    wrong = run_cli("build", recipe, "--store", tmp_path / "store", "--reports-dir", tmp_path / "failed")
    assert wrong.exit_code == 4, wrong.stderr
    assert "emulated neoverse-n1 (QEMU)" in wrong.stderr and "min_cosine" in wrong.stderr, wrong.stderr
    failed = json.loads((tmp_path / "failed/tiny/0.2.0/report.json").read_text())
    artifact = failed["artifacts"][0]
    arm = next(m for m in artifact["measurements"] if m["emulate"] == "neoverse-n1")
    assert not arm["passed"] and arm["problem"] is None and arm["outputs"][0]["cosine"] < 0  # judged, and wrong
    assert all(g["passed"] for g in artifact["gates"])  # right natively
    assert not (tmp_path / "store/tiny/0.2.0").exists()


def test_an_arm_root_that_cannot_be_prepared_is_said_not_run(tmp_path: Path, tiny_recipe, run_cli, monkeypatch) -> None:
    """A root that cannot be made (here: its folder cannot be created) is an ARM check reported not
    run with what to do, an error with --require-cpus, never a pass."""
    if arm64.emulator() is None:
        pytest.skip("qemu-aarch64 is not installed (apt-get install qemu-user)")
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv(arm64.ROOT_VARIABLE, str(tmp_path / "a-file" / "roots"))
    result = run_cli("build", int8_recipe(tmp_path, tiny_recipe, ["cortex-a72"]), "--store", tmp_path / "store",
                     "--require-cpus", "--reports-dir", tmp_path / "failed")
    assert result.exit_code == 4, result.stderr
    assert "the cortex-a72 check did not run: the ARM64 root could not be prepared: cannot create" in result.stderr
    assert f"set {arm64.ROOT_VARIABLE} to a writable folder" in result.stderr
