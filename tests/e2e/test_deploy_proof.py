"""Deploy-time proof: a release carries a signed golden set; `modelc verify --run` and
`modelc_build.runtime.load` run each artifact on it on the machine that runs it, with the
settings the manifest records, and refuse an artifact that does not compute what was judged."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from modelc_build.host import cpu_info
from modelc_build.manifest import sha256_file
from modelc_build.signing import Signer, sign_release

REPO = Path(__file__).resolve().parents[2]


def modelc(*args: object, python: str = sys.executable, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, python, "-m", "modelc_build", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "NO_COLOR": "1"}, timeout=600)


def copy_release(signed: dict[str, Path], destination: Path) -> Path:
    shutil.copytree(signed["release"], destination)
    return destination


def resign(release: Path, key: Path, manifest_change=None) -> None:
    """What someone with the signing key could publish: changed files, a manifest that lists them."""
    manifest = json.loads((release / "manifest.json").read_text())
    if manifest_change is not None:
        manifest_change(manifest)
    for entry in manifest["files"]:
        entry["sha256"], entry["size"] = sha256_file(release / entry["path"]), (release / entry["path"]).stat().st_size
    (release / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (release / "signature.sigstore.json").unlink()
    sign_release(release, Signer(key=key))


def collapse(model_file: Path) -> None:
    """The graph's output multiplied by zero: a valid model of the same interface that computes nothing."""
    model = onnx.load(str(model_file))
    graph = model.graph
    final = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{final}_before_collapse" if name == final else name for name in node.output]
    graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((), np.float32), "collapse_zero"))
    graph.node.append(onnx.helper.make_node("Mul", [f"{final}_before_collapse", "collapse_zero"], [final]))
    onnx.save(model, str(model_file))


def collapse_int8(release: Path) -> None:
    """Every onnxruntime int8 variant (model.onnx everywhere, model-vnni.onnx where the build machine
    had VNNI): whichever this CPU's loader picks computes nothing."""
    for model_file in sorted((release / "onnxruntime-int8").glob("*.onnx")):
        collapse(model_file)


def test_a_release_carries_a_signed_golden_set_and_proves_itself_here(signed: dict[str, Path]) -> None:
    release = signed["release"]
    manifest = json.loads((release / "manifest.json").read_text())
    assert manifest["golden"]["samples"] == 4 and manifest["golden"]["bytes"] < 64 * 1024
    assert set(manifest["golden"]["files"]) <= {f["path"] for f in manifest["files"]}  # signed like every file
    tolerances = json.loads((release / "golden/tolerances.json").read_text())["artifacts"]
    assert tolerances["openvino-fp32"]["tolerances"] == {"logits": {"min_cosine": 0.9999, "max_abs_error": 1e-4}}
    int8 = tolerances["onnxruntime-int8"]  # the gate, or 1.5x the error the build saw on these few samples
    built = int8["build"]["outputs"][0]["cosine"]
    assert int8["tolerances"]["logits"]["min_cosine"] == pytest.approx(min(0.95, 1 - 1.5 * (1 - built)))
    assert tolerances["openvino-fp32"]["runtime_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert manifest["model"]["inputs"][0]["name"] == "images"
    result = modelc("verify", release, "--public-key", signed["pub"], "--run")
    assert result.returncode == 0, result.stderr
    here = f"on {cpu_info()['cpu']} ({cpu_info()['kernel_class']}"
    for target in ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32"):
        assert f"{target} {here}" in result.stdout and "4 golden samples" in result.stdout
    assert "INFERENCE_PRECISION_HINT f32" in result.stdout  # the recorded setting, read back from the runtime
    as_json = json.loads(modelc("verify", release, "--public-key", signed["pub"], "--run", "--json").stdout)
    assert all(check["passed"] for check in as_json["checks"]["results"])


def test_a_collapsed_artifact_signed_in_place_of_the_judged_one_fails_verify_run(signed: dict[str, Path], tmp_path: Path) -> None:
    release = copy_release(signed, tmp_path / "release")
    collapse_int8(release)
    resign(release, signed["key"])
    assert modelc("verify", release, "--public-key", signed["pub"]).returncode == 0  # the signature alone cannot tell
    result = modelc("verify", release, "--public-key", signed["pub"], "--run")
    assert result.returncode == 4, result.stderr
    line = result.stderr.strip()
    assert line.startswith("error: onnxruntime-int8 misses its golden set on ") and cpu_info()["kernel_class"] in line
    assert "min_cosine on output 'logits'" in line and len(result.stderr.strip().splitlines()) == 1
    assert "onnxruntime-fp32" not in line  # the healthy ones pass
    only = modelc("verify", release, "--public-key", signed["pub"], "--run", "--target", "onnxruntime-fp32")
    assert only.returncode == 0, only.stderr


def test_an_artifact_run_at_another_precision_than_it_was_judged_at_is_caught_where_it_matters(
        signed: dict[str, Path], tmp_path: Path) -> None:
    """A manifest that deploys the fp32 IR at bf16: on a CPU with bf16 the golden set catches it (its
    fp32 tolerance is tighter than bf16 arithmetic); elsewhere the runtime computes in f32 anyway."""
    release = copy_release(signed, tmp_path / "release")

    def to_bf16(manifest: dict) -> None:
        for artifact in manifest["artifacts"]:
            if artifact["target"] == "openvino-fp32":
                artifact["runtime_config"] = {"INFERENCE_PRECISION_HINT": "bf16"}

    resign(release, signed["key"], to_bf16)
    result = modelc("verify", release, "--public-key", signed["pub"], "--run", "--target", "openvino-fp32")
    if cpu_info()["low_precision_float"]:
        assert result.returncode == 4, result.stdout + result.stderr
        assert "openvino-fp32 misses its golden set on" in result.stderr and "max_abs_error" in result.stderr
        assert "INFERENCE_PRECISION_HINT bf16" in result.stdout
    else:
        assert result.returncode == 0, result.stderr
        assert "INFERENCE_PRECISION_HINT f32" in result.stdout  # no bf16 here: the plugin computes in f32


def test_deploy_code_loads_an_artifact_with_its_recorded_settings(signed: dict[str, Path], tmp_path: Path) -> None:
    from modelc_build import runtime
    from modelc_build.errors import GateFailed, VerificationError
    from modelc_build.signing import Trust

    with runtime.load(signed["release"], "openvino-fp32", check=True, trust=Trust(public_key=signed["pub"])) as model:
        outputs = model.infer({"images": np.zeros((2, 3, 16, 16), np.float32)})
        assert outputs["logits"].shape == (2, 3)
        assert model.runner.effective_settings() == {"INFERENCE_PRECISION_HINT": "f32"}
    release = copy_release(signed, tmp_path / "release")
    collapse_int8(release)
    with pytest.raises(VerificationError, match="differs from the sha256 the manifest lists"):
        runtime.load(release, "onnxruntime-int8")
    resign(release, signed["key"])
    with pytest.raises(GateFailed, match=r"onnxruntime-int8 on .* 4 golden samples, lowest cosine 0.000000 \[FAIL"):
        runtime.load(release, "onnxruntime-int8", check=True)


@pytest.mark.slow
def test_the_golden_set_proves_int8_on_an_emulated_pre_vnni_cpu(signed: dict[str, Path]) -> None:
    """`modelc verify --run` itself under QEMU's Haswell: the deploy check on the other CPU branch,
    whichever this machine is."""
    from modelc_build.emulation import emulator

    qemu = emulator()
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user)")
    result = modelc("verify", signed["release"], "--public-key", signed["pub"], "--run", "--target", "onnxruntime-int8",
                    python=os.path.realpath(sys.executable), prefix=(qemu, "-cpu", "Haswell"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "onnxruntime-int8 on " in result.stdout and "(emulated CPU" in result.stdout and "(avx2" in result.stdout
