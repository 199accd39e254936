"""The GPU lane (`pytest -m gpu`): engines built for this machine's GPU run there, on the release's
golden set, through `modelc verify --run`. Skipped, saying why, on a machine without a GPU, or
whose GPU no installed TensorRT can build for (an H200 is sm90: TensorRT for RTX does not target
it, and full TensorRT comes from NVIDIA's index only)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelc_build.gpus import FULL, RTX, RTX_TARGETS, installed, local_gpus
from tests.conftest import shipped_recipe

pytestmark = pytest.mark.gpu


def buildable_local_gpu() -> str:
    gpus = local_gpus()
    if not gpus:
        pytest.skip("no NVIDIA GPU on this machine (nvidia-smi finds none)")
    for gpu in gpus:
        if installed(FULL) or (gpu in RTX_TARGETS and installed(RTX)):
            return gpu
    pytest.skip(f"this machine's GPU ({', '.join(gpus)}) has no TensorRT here to build for it: TensorRT for RTX "
                f"{'is not installed' if not installed(RTX) else 'targets ' + ', '.join(RTX_TARGETS) + ' only'}, and full "
                "TensorRT (NVIDIA's index) is not installed")


def test_engines_run_on_this_gpu_against_the_golden_set(tmp_path: Path, run_cli, request) -> None:
    gpu = buildable_local_gpu()
    pytest.importorskip("modelopt.onnx.quantization", reason="the modelopt extra is not installed")
    signed = request.getfixturevalue("signed")  # a key pair (built only once the lane can run)
    # INT8 engines where full TensorRT builds them (TensorRT for RTX lists no INT8 convolution)
    precisions = ["fp32", "fp16", "int8"] if installed(FULL) else ["fp32", "fp16"]
    targets = [{"backend": "tensorrt", "precisions": precisions, "gpus": [gpu], "verify_on_gpu": True,
                **({"flavour": "tensorrt"} if installed(FULL) else {})}]
    recipe = shipped_recipe("yolo.yaml", tmp_path, targets=targets, gates=None, latency={"runs": 5, "warmup": 2})
    built = run_cli("build", recipe, "--store", tmp_path / "store", "--signing-key", signed["key"])
    assert built.exit_code == 0, built.stderr
    release = tmp_path / "store/tiny-yolo-shapes/1.0.0"
    report = json.loads((release / "report.json").read_text())
    for artifact in report["artifacts"]:
        assert artifact["runtime"]["measured"] == f"the {gpu} engine on this GPU", artifact["runtime"]
        assert artifact["latency_ms"] is not None and artifact["passed"]
    checked = run_cli("verify", release, "--public-key", signed["pub"], "--run")
    assert checked.exit_code == 0, checked.stderr
    assert all(f"tensorrt-{p} on " in checked.stdout for p in precisions)


def test_a_pull_for_this_gpu_finds_its_engines_or_says_none_match(tmp_path: Path, run_cli, request) -> None:
    if not local_gpus():
        pytest.skip("no NVIDIA GPU on this machine (nvidia-smi finds none)")
    pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed: no engines to pull")
    pytest.importorskip("modelopt.onnx.quantization", reason="the modelopt extra is not installed")
    signed = request.getfixturevalue("signed")
    targets = [{"backend": "tensorrt", "precisions": ["fp32"], "gpus": ["ampere", "ada"]}]
    recipe = shipped_recipe("yolo.yaml", tmp_path, targets=targets, gates=None, latency={"runs": 2, "warmup": 1})
    assert run_cli("build", recipe, "--store", tmp_path / "store", "--signing-key", signed["key"]).exit_code == 0
    pulled = run_cli("pull", "tiny-yolo-shapes:1.0.0", "--store", tmp_path / "store", "--gpu", "auto", "--dest",
                     tmp_path / "deploy", "--public-key", signed["pub"])
    here = local_gpus()[0]
    if here in ("sm86", "sm89"):
        assert pulled.exit_code == 0, pulled.stderr
    else:
        assert pulled.exit_code == 3 and f"--gpu {here}: no engine in tiny-yolo-shapes:1.0.0 was built for {here}" in pulled.stderr
