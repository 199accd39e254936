"""TensorRT engines from a CPU-only machine: TensorRT for RTX builds strongly typed engines ahead of
time for the GPU generations a recipe names; their source graphs are measured on the CPU and gated;
the engines are stamped and reported built, not run; a generation it cannot build is exit 6 or,
with --skip-unavailable, left out and listed; a pull takes the engines of one GPU."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from modelc_build.gpus import local_gpus
from tests.conftest import shipped_recipe

pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed (pip install 'modelc-build[tensorrt-rtx]')")
pytest.importorskip("modelopt.onnx.quantization", reason="the modelopt extra is not installed")

# fp32 and fp16 only: TensorRT for RTX, which builds these with no GPU, lists no INT8 convolution
ENGINES = [{"backend": "tensorrt", "precisions": ["fp32", "fp16"], "gpus": ["ampere", "ada"], "max_batch": 16}]
FAST = {"latency": {"runs": 2, "warmup": 1}, "gates": None}


def detector(tmp_path: Path, **overrides: object) -> Path:
    return shipped_recipe("yolo.yaml", tmp_path, **{"targets": ENGINES, **FAST, **overrides})


def engine_digests(release: Path, myelin_names: bool = True) -> dict[str, str]:
    """sha256 of each engine and graph; without `myelin_names`, of the bytes with the kernel names
    TensorRT's Myelin compiler numbers afresh on every build (`__mye12345`) blanked out."""
    def content(path: Path) -> bytes:
        data = path.read_bytes()
        return data if myelin_names else re.sub(rb"__mye\d+", b"__mye", data)

    return {p.relative_to(release).as_posix(): hashlib.sha256(content(p)).hexdigest()
            for p in sorted(release.glob("tensorrt-*/*")) if p.suffix in (".engine", ".onnx")}


@pytest.mark.slow
def test_engines_for_two_generations_are_built_stamped_measured_and_reproducible(tmp_path: Path, run_cli, signed) -> None:
    recipe = detector(tmp_path)
    first = run_cli("build", recipe, "--store", tmp_path / "a", "--cache", tmp_path / "cache-a")
    assert first.exit_code == 0, first.stderr
    assert "source graph on onnxruntime CPU, engines for sm86, sm89 built, not run" in first.stderr
    release = tmp_path / "a/tiny-yolo-shapes/1.0.0"
    report = json.loads((release / "report.json").read_text())
    manifest = json.loads((release / "manifest.json").read_text())
    artifacts = {a["target"]: a for a in manifest["artifacts"]}
    for judged in report["artifacts"]:
        target = judged["target"]
        assert judged["passed"] and judged["outputs"][0]["cosine"] > 0.99, judged["outputs"]  # the graph, gated
        assert judged["task_metric"]["name"] == "map50" and judged["task_metric"]["value"] > 98
        assert judged["runtime"]["measured"] == "the engines' source graph on onnxruntime (CPU)"
        assert judged["runtime"]["engines"].startswith("built, not run: no SM86/SM89 GPU on this machine")
        assert judged["latency_ms"] is None  # an engine is timed on its GPU, not here
        stamps = artifacts[target]["engines"]
        assert stamps["status"].startswith("built, not run")
        assert [e["gpu"] for e in stamps["engines"]] == ["sm86", "sm89"]
        graph = release / stamps["graph"]["file"]
        assert hashlib.sha256(graph.read_bytes()).hexdigest() == stamps["graph"]["sha256"]
        assert stamps["profile"]["images"] == {"min": [1, 3, 128, 128], "opt": [8, 3, 128, 128], "max": [16, 3, 128, 128]}
        for engine in stamps["engines"]:
            assert engine["flavour"] == "tensorrt-rtx" and engine["version"].startswith("1.") and engine["cuda_major"] in (12, 13)
            assert (release / engine["file"]).stat().st_size == engine["size"] > 100_000
    graphs = {t: artifacts[t]["engines"]["graph"]["precision_in_graph"] for t in artifacts if t.startswith("tensorrt")}
    assert graphs == {"tensorrt-fp32": "fp32 (the simplified graph)", "tensorrt-fp16": "mixed fp16 (NVIDIA ModelOpt AutoCast)"}
    markdown = (release / "report.md").read_text()
    assert "### TensorRT engines" in markdown and "| `tensorrt-fp16` | sm89 (Ada: L4, L40, RTX 40) | tensorrt-rtx" in markdown

    second = run_cli("build", recipe, "--store", tmp_path / "b", "--cache", tmp_path / "cache-b")  # cold again
    assert second.exit_code == 0, second.stderr
    again = tmp_path / "b/tiny-yolo-shapes/1.0.0"
    exact, other = engine_digests(release), engine_digests(again)
    assert len(exact) == 6 and exact == other  # two graphs and four engines, byte-identical from separate cold caches

    # a deploy stage on an Ada GPU takes that generation's engines only (and the golden set)
    from modelc_build.signing import Signer, sign_release

    sign_release(release, Signer(key=signed["key"]))
    for gpu, wanted in (("sm89", 0), ("ada", 0), ("sm90", 3)):
        dest = tmp_path / f"pulled-{gpu}"
        pulled = run_cli("pull", "tiny-yolo-shapes:1.0.0", "--store", tmp_path / "a", "--gpu", gpu, "--dest", dest,
                         "--public-key", signed["pub"])
        assert pulled.exit_code == wanted, pulled.stderr
        if wanted:
            assert pulled.stderr.strip() == (
                "error: --gpu sm90: no engine in tiny-yolo-shapes:1.0.0 was built for sm90; it holds tensorrt-fp32 for "
                "sm86, sm89; tensorrt-fp16 for sm86, sm89")
            assert not dest.exists()
            continue
        files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
        assert [f for f in files if f.endswith(".engine")] == [f"tensorrt-{p}/sm89.engine" for p in ("fp16", "fp32")]
        assert not any(f.endswith(".onnx") for f in files) and "golden/inputs.npz" in files
    checked = run_cli("verify", release, "--public-key", signed["pub"], "--run", "--target", "tensorrt-fp16")
    if not local_gpus():
        assert checked.exit_code == 6 and "no SM86/SM89 GPU on this machine" in checked.stderr, checked.stderr


def test_int8_engines_need_full_tensorrt_on_their_gpu(tmp_path: Path, run_cli) -> None:
    """TensorRT for RTX lists no INT8 convolution: an int8 target it would build is refused at
    validate in one line; asked of full TensorRT (flavour: tensorrt), it builds only on a machine
    with that GPU (exit 6 here, naming where)."""
    refused = run_cli("validate", detector(tmp_path, targets=[{"backend": "tensorrt", "precisions": ["int8"], "gpus": ["ada"]}]))
    assert refused.exit_code == 2
    assert refused.stderr.strip().endswith("targets[0].precisions[0]: tensorrt int8: TensorRT for RTX lists no INT8 convolution "
                                           "for sm89 (its 1.0-1.5 support matrices list INT8 only as weight-only GEMM): use "
                                           "fp16, or full TensorRT on a GPU runner for INT8 engines (flavour: tensorrt)")
    if "sm89" in local_gpus():
        return
    full = detector(tmp_path, targets=[{"backend": "tensorrt", "precisions": ["int8"], "gpus": ["ada"], "flavour": "tensorrt"}])
    assert run_cli("validate", full).exit_code == 0
    built = run_cli("build", full, "--store", tmp_path / "store")
    assert built.exit_code == 6
    assert "tensorrt-int8: sm89 (Ada: L4, L40, RTX 40) with flavour: tensorrt needs full TensorRT on a machine with that GPU" \
        in built.stderr


def test_a_generation_tensorrt_for_rtx_cannot_build_is_named_or_left_out(tmp_path: Path, run_cli) -> None:
    if "sm90" in local_gpus():
        pytest.skip("this machine has an SM90 GPU: full TensorRT may build for it here")
    targets = [{"backend": "tensorrt", "precisions": ["fp32"], "gpus": ["ada", "hopper"]}]
    recipe = detector(tmp_path, targets=targets)
    refused = run_cli("build", recipe, "--store", tmp_path / "store")
    assert refused.exit_code == 6, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("error: tensorrt-fp32: sm90 (Hopper: H100, H200) needs full TensorRT on a machine with that GPU")
    assert "build it on the GPU runner" in line and "--skip-unavailable" in line
    assert not (tmp_path / "store").exists()
    skipped = run_cli("build", recipe, "--store", tmp_path / "store", "--skip-unavailable")
    assert skipped.exit_code == 0, skipped.stderr
    release = tmp_path / "store/tiny-yolo-shapes/1.0.0"
    report = json.loads((release / "report.json").read_text())
    assert len(report["skipped"]) == 1 and report["skipped"][0].startswith("tensorrt-fp32: sm90 (Hopper")
    assert "Left out (--skip-unavailable): tensorrt-fp32: sm90" in (release / "report.md").read_text()
    manifest = json.loads((release / "manifest.json").read_text())
    assert [e["gpu"] for e in manifest["artifacts"][1]["engines"]["engines"]] == ["sm89"]


def test_engines_that_must_be_verified_on_their_gpu_fail_a_build_without_one(tmp_path: Path, run_cli) -> None:
    if local_gpus():
        pytest.skip("this machine has a GPU")
    targets = [{"backend": "tensorrt", "precisions": ["fp32"], "gpus": ["ada"], "verify_on_gpu": True}]
    result = run_cli("build", detector(tmp_path, targets=targets), "--store", tmp_path / "store")
    assert result.exit_code == 6, result.stderr
    assert ("tensorrt-fp32: the recipe requires its engines verified on their GPU (verify_on_gpu), and no SM89 GPU on "
            "this machine (no NVIDIA GPU at all): build it on the GPU runner") in result.stderr


def test_gpu_names_and_options_are_checked_in_the_recipe(tmp_path: Path, tiny_recipe) -> None:
    from modelc_build.errors import RecipeError
    from modelc_build.plan import ci_matrix
    from modelc_build.recipe import load_recipe

    base = yaml.safe_load(tiny_recipe().read_text())
    base["targets"] = [{"backend": "tensorrt", "precisions": ["fp16"], "gpus": ["ada", "sm86", "sm89"]},  # sm89 twice
                       {"backend": "tensorrt", "precisions": ["fp32"], "gpus": ["hopper"]}]
    recipe = load_recipe(tiny_recipe(base, name="gpus.yaml"))
    assert [t.gpus for t in recipe.targets] == [("sm89", "sm86"), ("sm90",)]
    assert [job["runner"] for job in ci_matrix([("r.yaml", recipe)])["include"]] == ["cpu", "gpu"]
    base["targets"] = [{"backend": "openvino", "precisions": ["fp32"], "gpus": ["ada"]},
                       {"backend": "tensorrt", "precisions": ["fp32"], "opt_batch": 64, "max_batch": 8}]
    with pytest.raises(RecipeError) as error:
        load_recipe(tiny_recipe(base, name="bad.yaml"))
    messages = [p.message for p in error.value.problems]
    assert "'gpus' applies to tensorrt targets only; remove it" in messages
    assert any("opt_batch 64 is above max_batch 8" in m for m in messages)


@pytest.mark.slow
def test_fp8_and_weight_only_int4_engines_rebuild_to_the_same_bytes_under_load(tmp_path: Path, run_cli) -> None:
    """The shipped transformer's engines in the precisions each generation runs: fp16, FP8 Q/DQ
    (sm89, sm120) and weight-only INT4 (sm86, sm89), each graph measured on the CPU and gated. Two
    cold builds with separate caches, the second with -j 2 beside a busy process, give the same
    bytes: TensorRT for RTX orders some choices by memory address, so each engine is built in a
    process with address randomization off (two or three different engines otherwise)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    recipe = REPO / "recipes/text_encoder_gpu.yaml"
    first = run_cli("build", recipe, "--store", tmp_path / "a", "--cache", tmp_path / "cache-a")
    assert first.exit_code == 0, first.stderr
    busy = subprocess.Popen([sys.executable, "-c", "while True: sum(i * i for i in range(10000))"])
    try:
        second = run_cli("build", recipe, "--store", tmp_path / "b", "--cache", tmp_path / "cache-b", "-j", "2")
    finally:
        busy.kill()
    assert second.exit_code == 0, second.stderr
    release = tmp_path / "a/tiny-encoder-text-gpu/1.0.0"
    exact, other = engine_digests(release), engine_digests(tmp_path / "b/tiny-encoder-text-gpu/1.0.0")
    assert len(exact) == 9 and exact == other
    manifest = json.loads((release / "manifest.json").read_text())
    stamps = {a["target"]: a["engines"] for a in manifest["artifacts"] if a["target"].startswith("tensorrt")}
    assert [e["gpu"] for e in stamps["tensorrt-fp8"]["engines"]] == ["sm89", "sm120"]
    assert stamps["tensorrt-fp8"]["graph"]["precision_in_graph"] == "fp8 Q/DQ (NVIDIA ModelOpt)"
    assert stamps["tensorrt-int4-wo"]["graph"]["precision_in_graph"].startswith("int4 weight-only MatMul")
    assert all(e["reproducible_layout"] for s in stamps.values() for e in s["engines"])
    report = json.loads((release / "report.json").read_text())
    for artifact in report["artifacts"]:
        assert artifact["passed"] and artifact["outputs"][0]["cosine"] > 0.99, artifact["target"]
    lane = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_lane.py"), str(release), "--runs", "20"],
                          capture_output=True, text=True)
    if not local_gpus():  # the lane says it did not run, in one line, and writes nothing beside the release
        assert lane.returncode == 6 and lane.stderr.strip() == "error: no NVIDIA GPU on this machine (nvidia-smi finds none)"
        assert not list(release.parent.glob("*.gpu-lane-*"))
    else:
        assert lane.returncode in (0, 6), lane.stderr
