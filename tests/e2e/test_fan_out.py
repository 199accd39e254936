"""CI fan-out: a matrix of recipe x target jobs sharing step outputs through the store."""
from __future__ import annotations

import json
import re
from pathlib import Path

from tests.conftest import host_dependent_steps

REPO = Path(__file__).resolve().parents[2]


def test_matrix_lists_recipe_by_target_jobs(run_cli) -> None:
    result = run_cli("plan", REPO / "recipes", "--matrix")
    assert result.exit_code == 0, result.stderr
    jobs = json.loads(result.stdout)["include"]
    assert {(Path(j["recipe"]).name, j["target"]) for j in jobs} >= {("yolo.yaml", "openvino-fp16"),
                                                                      ("classifier.yaml", "torchscript-fp32")}
    from modelc_build.recipe import load_recipe

    expected = sum(len(load_recipe(p).targets) for p in (REPO / "recipes").glob("*.yaml"))
    assert len(jobs) == expected and all(j["runner"] == "cpu" for j in jobs)


def test_matrix_sends_to_gpu_runners_only_the_tensorrt_jobs_that_need_one(tiny_recipe, run_cli) -> None:
    """TensorRT for RTX builds sm86/sm89 engines on a CPU runner; sm90 needs full TensorRT on its GPU."""
    from modelc_build.plan import needs_gpu_runner
    from modelc_build.recipe_types import Target

    recipe = tiny_recipe({"targets": [{"backend": "tensorrt", "precisions": ["fp16"], "gpus": ["ada"]},
                                      {"backend": "tensorrt", "precisions": ["fp32"], "gpus": ["ada", "hopper"]},
                                      {"backend": "openvino", "precisions": ["fp32"]}], "gates": None})
    listed = run_cli("plan", recipe, "--matrix")
    assert listed.exit_code == 0, listed.stderr
    jobs = json.loads(listed.stdout)["include"]
    assert [(j["target"], j["runner"]) for j in jobs] == [("tensorrt-fp16", "cpu"), ("tensorrt-fp32", "gpu"),
                                                          ("openvino-fp32", "cpu")]
    assert needs_gpu_runner(Target("tensorrt", "fp32", gpus=("sm89",), verify_on_gpu=True))  # engines run where built


def fan_out(run_cli, recipe: Path, store: str, tmp_path: Path, monkeypatch, *release_options: str) -> None:
    """Two target jobs on separate (empty) caches, then the releasing build: each runs only what
    the store's step cache does not hold yet."""
    monkeypatch.setenv("MODELC_CACHE", str(tmp_path / "job-a"))
    job_a = run_cli("build", recipe, "--store", store, "--target", "openvino-fp32", "--share-steps")
    assert job_a.exit_code == 0, job_a.stderr
    assert re.findall(r"^▶ (\S+):", job_a.stderr, re.M) == ["export", "simplify", "compile:openvino-fp32"]
    assert job_a.stdout == ""

    monkeypatch.setenv("MODELC_CACHE", str(tmp_path / "job-b"))  # another runner: empty local cache
    job_b = run_cli("build", recipe, "--store", store, "--target", "torchscript-fp32", "--share-steps")
    assert job_b.exit_code == 0, job_b.stderr
    assert "✓ export (from the store's step cache" in job_b.stderr
    assert re.findall(r"^▶ (\S+):", job_b.stderr, re.M) == ["compile:torchscript-fp32"]

    monkeypatch.setenv("MODELC_CACHE", str(tmp_path / "final"))
    final = run_cli("build", recipe, "--store", store, "--share-steps", *release_options)
    assert final.exit_code == 0, final.stderr
    targets = ["onnxruntime-fp32", "openvino-fp16", "openvino-fp32", "torchscript-fp32"]
    measured = ["decode:evaluation", "reference", "golden", "latency:reference"] + [f"{kind}:{t}" for kind in ("verify", "latency") for t in targets]
    assert sorted(re.findall(r"^▶ (\S+):", final.stderr, re.M)) == sorted(
        ["compile:onnxruntime-fp32", "compile:openvino-fp16"] + measured + host_dependent_steps(recipe))


def test_jobs_share_steps_through_the_store(tmp_path: Path, tiny_recipe, run_cli, monkeypatch) -> None:
    store = tmp_path / "store"
    fan_out(run_cli, tiny_recipe(), str(store), tmp_path, monkeypatch)
    assert (store / "tiny/0.1.0/manifest.json").exists()


def test_unknown_target_is_refused(tiny_recipe, run_cli, tmp_path: Path) -> None:
    result = run_cli("build", tiny_recipe(), "--store", tmp_path / "s", "--target", "openvino-int8")
    assert result.exit_code == 3
    assert "--target openvino-int8: the recipe builds onnxruntime-fp32, openvino-fp32, openvino-fp16, torchscript-fp32" in result.stderr
