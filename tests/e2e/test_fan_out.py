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


def test_prepare_target_release_jobs_run_each_step_once_and_release_from_the_cache(tmp_path: Path, run_cli_process) -> None:
    """Jobs of three kinds, each with its own local cache (a runner of its own), sharing steps
    through the store: prepare runs the shared steps, each target job its target's compile,
    verification (native and emulated) and latency, release none; no step key runs in two jobs."""
    recipe, store = REPO / "recipes/classifier.yaml", tmp_path / "store"
    targets = ("onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-fp16", "openvino-int8", "torchscript-fp32")

    def job(name: str, *args: str) -> tuple[int, list[str], str]:
        done = run_cli_process("build", recipe, "--store", store, "--share-steps", "--cache", tmp_path / f"cache-{name}",
                               "-v", *args)
        ran = re.findall(r"^▶ (\S+): ", done.stderr, flags=re.M)
        return done.returncode, ran, done.stderr

    early, _, said = job("early", "--stage", "target", "--target", "openvino-fp32")
    assert early == 3 and "export is not in the step cache" in said and "the prepare job makes it" in said
    code, prepared, said = job("prepare", "--stage", "prepare")
    assert code == 0, said
    assert {"export", "simplify", "reference", "golden"} <= set(prepared) and not any(s.startswith("compile:") for s in prepared)
    ran = list(prepared)
    for target in targets[:-1]:
        code, made, said = job(target, "--stage", "target", "--target", target)
        assert code == 0, said
        assert all(target in step for step in made), made  # its own steps only
        ran += made
    code, _, said = job("release-early", "--stage", "release")  # torchscript's job has not run
    assert code == 3 and "compile:torchscript-fp32 is not in the step cache" in said and "the target torchscript-fp32 job" in said
    code, made, said = job(targets[-1], "--stage", "target", "--target", targets[-1])
    ran += made
    code, released, said = job("release", "--stage", "release")
    assert code == 0 and released == [] and "0 step(s) run" in said, said
    assert len(ran) == len(set(ran))  # no step ran in two jobs
    assert (store / "tiny-classifier-shapes/1.0.0/manifest.json").is_file()


def test_a_job_on_the_wrong_cpu_class_fails_in_one_line(tmp_path: Path, run_cli) -> None:
    from modelc_build.host import host_class

    other = "avx2" if host_class() != "avx2" else "amx"
    result = run_cli("build", REPO / "recipes/classifier.yaml", "--store", tmp_path / "store", "--stage", "prepare",
                     "--expect-class", other)
    assert result.exit_code == 6
    assert result.stderr.strip().startswith(f"error: this job was routed to CPU class {other} but runs on {host_class()} (")
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_plan_gives_each_job_its_steps_costs_and_extras(run_cli) -> None:
    result = run_cli("plan", REPO / "recipes/classifier.yaml", "--matrix", "--json")
    assert result.exit_code == 0, result.stderr
    pipeline = json.loads(result.stdout)["pipelines"][0]
    jobs = {job["job"]: job for job in pipeline["jobs"]}
    assert jobs["prepare"]["extras"] == ["build"] and jobs["release"]["extras"] == ["release"] and jobs["release"]["steps"] == []
    assert jobs["target openvino-int8"]["extras"] == ["graph", "openvino"] and "torch" not in json.dumps(jobs["target openvino-int8"])
    assert {"compile:openvino-int8", "verify:openvino-int8", "latency:openvino-int8"} <= set(jobs["target openvino-int8"]["steps"])
    every = [step for job in pipeline["jobs"] for step in job["steps"]]
    assert len(every) == len(set(every))
    longest_target = max(job["expected_step_seconds"] for job in pipeline["jobs"] if job["kind"] == "target")
    assert pipeline["critical_path_seconds"] == round(jobs["prepare"]["expected_step_seconds"] + longest_target, 1)
    assert pipeline["speedup_with_a_runner_per_job"] > 1.0
