"""The build system: what re-runs after a change, corrupted cache, kill -9, concurrent builds."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelc_build.cache import Cache
from tests.conftest import host_dependent_steps

REPO = Path(__file__).resolve().parents[2]


def steps_run(stderr: str) -> list[str]:
    """The ids of the steps a build ran (not the cached ones), from its log."""
    return re.findall(r"^▶ (\S+):", stderr, flags=re.MULTILINE)


def test_gate_change_reruns_nothing_data_change_reruns_verify_only(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = tiny_recipe()
    store = tmp_path / "store"
    first = run_cli("build", recipe, "--store", store)
    assert first.exit_code == 0, first.stderr
    # export, simplify, decode:evaluation, reference, golden, 4 x (compile, verify, latency),
    # latency:reference; with bf16 the OpenVINO IR is also measured under the CPU's own default
    extra = host_dependent_steps(recipe)
    assert len(steps_run(first.stderr)) == 18 + len(extra)

    data = yaml.safe_load(recipe.read_text())
    data["gates"]["fp16"]["min_cosine"] = 0.99
    recipe.write_text(yaml.safe_dump(data))
    gate_changed = run_cli("build", recipe, "--store", tmp_path / "other-store")
    assert gate_changed.exit_code == 0 and steps_run(gate_changed.stderr) == []
    # the same version judged by other gates is another release: the store keeps the first
    refused = run_cli("build", recipe, "--store", store)
    assert refused.exit_code == 5 and "judged differently" in refused.stderr and "bump version" in refused.stderr

    images = Path(data["data"]["evaluation"]["path"])
    (images / "a" / "000.png").write_bytes((images / "b" / "001.png").read_bytes())
    data_changed = run_cli("build", recipe, "--store", tmp_path / "third-store")
    assert data_changed.exit_code == 0
    # the reference and each artifact's measurements, nothing that builds an artifact
    assert {step.split(":")[0] for step in steps_run(data_changed.stderr)} == {"decode", "reference", "golden", "verify",
                                                                            "latency"}

    data["export"]["opset"] = 16
    data["version"] = "0.2.0"
    recipe.write_text(yaml.safe_dump(data))
    export_changed = run_cli("build", recipe, "--store", store)
    assert export_changed.exit_code == 0
    assert steps_run(export_changed.stderr)[:2] == ["export", "simplify"]

    forced = run_cli("build", recipe, "--store", tmp_path / "forced", "--force")
    assert forced.exit_code == 0 and len(steps_run(forced.stderr)) == 18 + len(extra)


def test_corrupted_cache_entry_is_rebuilt(tmp_path: Path, tiny_recipe, run_cli, private_cache: Path) -> None:
    recipe = tiny_recipe()
    assert run_cli("build", recipe, "--store", tmp_path / "s1").exit_code == 0
    entry = next(e for e in Cache(private_cache).entries() if e.step == "compile:openvino-fp32")
    entry.file("model.bin").write_bytes(b"garbage")
    again = run_cli("build", recipe, "--store", tmp_path / "s2")
    assert again.exit_code == 0, again.stderr
    assert "cache entry was corrupted (model.bin changed); dropped" in again.stderr
    # rebuilt in a fresh process, the artifact has the same bytes, so verification stays cached
    assert steps_run(again.stderr) == ["compile:openvino-fp32"]


@pytest.mark.slow  # processes and whole cold builds: the slow tier
def test_kill_9_mid_step_leaves_no_partial_entry(tmp_path: Path, tiny_recipe, private_cache: Path) -> None:
    recipe = tiny_recipe()
    store = tmp_path / "store"
    command = [sys.executable, "-m", "modelc_build", "build", str(recipe), "--store", str(store)]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:  # kill it hard while its first step (the export, seconds long) is under way
        if line.startswith("▶ export"):
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not store.exists()
    for entry in Cache(private_cache).entries():  # every entry that exists is whole
        assert Cache(private_cache).get(entry.key)[0] is not None
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "▶ export" in rerun.stderr  # the killed step left no entry behind: it runs again
    assert (store / "tiny/0.1.0/manifest.json").exists()


@pytest.mark.slow  # processes and whole cold builds: the slow tier
def test_two_builds_at_once_both_succeed_and_work_is_done_once(tmp_path: Path, tiny_recipe) -> None:
    recipe = tiny_recipe()
    store = tmp_path / "store"
    command = [sys.executable, "-m", "modelc_build", "build", str(recipe), "--store", str(store)]
    processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    ran = [step for _, stderr in results for step in steps_run(stderr)]
    # each step ran in exactly one of the two builds
    assert sorted(ran) == sorted(set(ran)) and len(ran) == 18 + len(host_dependent_steps(recipe))


@pytest.mark.slow  # processes and whole cold builds: the slow tier
def test_two_cold_builds_are_byte_identical(tmp_path: Path, tiny_recipe, run_cli_process) -> None:
    recipe = tiny_recipe()
    digests = []
    for run in ("a", "b"):
        result = run_cli_process("build", recipe, "--store", tmp_path / run, "--cache", tmp_path / f"cache-{run}")
        assert result.returncode == 0, result.stderr
        release = tmp_path / run / "tiny/0.1.0"
        digests.append({p.relative_to(release).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                        for p in sorted(release.rglob("*")) if p.is_file() and p.parent != release})
    assert digests[0] == digests[1]
    assert {"onnx/model.onnx", "openvino-fp32/model.xml", "openvino-fp32/model.bin", "torchscript-fp32/model.pt"} <= set(digests[0])


def test_cache_ls_and_gc_commands(tmp_path: Path, tiny_recipe, run_cli, private_cache: Path) -> None:
    assert run_cli("build", tiny_recipe(), "--store", tmp_path / "store").exit_code == 0
    entries = 18 + len(host_dependent_steps(tiny_recipe()))
    listing = run_cli("cache", "ls")
    assert listing.exit_code == 0 and "compile:openvino-fp16" in listing.stdout
    assert listing.stdout.strip().splitlines()[-1].startswith(f"{entries} entries, ")
    assert run_cli("cache", "gc", "--keep-days", "1").stdout == "removed 0 entries, freed 0 B\n"
    assert run_cli("cache", "gc", "--keep-days", "0").stdout.startswith(f"removed {entries} entries, freed ")


def test_a_step_gives_the_same_bytes_whatever_ran_before_it(tmp_path: Path, tiny_recipe, run_cli, monkeypatch) -> None:
    """OpenVINO and torch number generated names per process; compile steps run in fresh processes,
    so one target built alone equals the same target built after all the others."""
    recipe = tiny_recipe()
    monkeypatch.setenv("MODELC_CACHE", str(tmp_path / "full"))
    assert run_cli("build", recipe, "--store", tmp_path / "full-store", "-j", "1").exit_code == 0
    monkeypatch.setenv("MODELC_CACHE", str(tmp_path / "alone"))
    for target in ("openvino-fp16", "torchscript-fp32"):
        assert run_cli("build", recipe, "--store", tmp_path / "alone-store", "--target", target).exit_code == 0
    full = {e.step: e for e in Cache(tmp_path / "full").entries()}
    alone = {e.step: e for e in Cache(tmp_path / "alone").entries()}
    for step in ("compile:openvino-fp16", "compile:torchscript-fp32"):
        assert full[step].files == alone[step].files, step


def int8_overrides(tmp_path: Path, tiny_recipe, data: Any) -> Path:
    import numpy as np

    np.save(tmp_path / "calibration.npy", data)
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": str(tmp_path / "calibration.npy"), "batch_size": 4}
    base["targets"] = [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]},
                       {"backend": "openvino", "precisions": ["int8"]}]
    base["gates"] = {"default": {"min_cosine": 0.9}}
    return tiny_recipe(base)


def test_calibration_is_cached_by_data_digest(tmp_path: Path, tiny_recipe, run_cli) -> None:
    import numpy as np

    pytest.importorskip("modelopt.onnx.quantization", reason="the modelopt extra is not installed")
    data = np.random.default_rng(0).random((12, 3, 16, 16), dtype=np.float32)
    recipe = int8_overrides(tmp_path, tiny_recipe, data)
    first = run_cli("build", recipe, "--store", tmp_path / "s1")
    assert first.exit_code == 0, first.stderr
    assert {"compile:onnxruntime-int8", "compile:openvino-int8"} <= set(steps_run(first.stderr))
    same = run_cli("build", recipe, "--store", tmp_path / "s2")
    assert same.exit_code == 0 and steps_run(same.stderr) == []  # same data: nothing recalibrates
    np.save(tmp_path / "calibration.npy", data * 3.0)  # other ranges (a mere reorder gives the same graph)
    changed = run_cli("build", recipe, "--store", tmp_path / "s3")
    assert changed.exit_code == 0, changed.stderr
    # on a CPU of another class than Haswell's, each INT8 artifact is also checked on an emulated Haswell
    emulated = {step for step in host_dependent_steps(recipe) if step.endswith("int8@haswell")}
    bf16 = {step for step in host_dependent_steps(recipe) if step == "verify:openvino-int8@runtime-default"}
    worth = {step for step in steps_run(first.stderr) if step.startswith("worth:")}  # mixed precision's speed, where searched
    assert set(steps_run(changed.stderr)) == {"compile:onnxruntime-int8", "compile:openvino-int8",
                                              "verify:onnxruntime-int8", "verify:openvino-int8",
                                              "latency:onnxruntime-int8", "latency:openvino-int8"} | emulated | bf16 | worth
    # export, simplify, the reference and the fp32 target are reused


@pytest.mark.parametrize("case,message", [
    ("nan", "calibration.npy: samples for input 'images' contain NaN or Inf"),
    ("shape", r"calibration.npy: samples for input 'images' have shape \[3, 8, 8\] but the model expects \[3, 16, 16\]"),
    ("empty", "calibration.npy: holds no samples"),
])
def test_bad_calibration_data_names_the_file_and_stores_nothing(tmp_path: Path, tiny_recipe, run_cli, case: str,
                                                                message: str) -> None:
    import numpy as np

    pytest.importorskip("modelopt.onnx.quantization", reason="the modelopt extra is not installed")
    data = {"nan": np.full((4, 3, 16, 16), np.nan, np.float32), "shape": np.zeros((4, 3, 8, 8), np.float32),
            "empty": np.zeros((0, 3, 16, 16), np.float32)}[case]
    result = run_cli("build", int8_overrides(tmp_path, tiny_recipe, data), "--store", tmp_path / "store")
    assert result.exit_code == 3, result.stderr
    assert re.search(message, result.stderr), result.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_a_data_function_runs_once_per_build_and_every_step_reads_its_output(tmp_path: Path, tiny_recipe, run_cli) -> None:
    pytest.importorskip("nncf", reason="the openvino extra is not installed")
    calls = tmp_path / "calls.txt"
    (tmp_path / "make.py").write_text(
        "import numpy as np\n"
        f"CALLS = {str(calls)!r}\n"
        "def batches():\n"
        "    with open(CALLS, 'a') as handle:\n"
        "        handle.write('called\\n')\n"
        "    rng = np.random.default_rng(0)\n"
        "    for _ in range(3):\n"
        "        yield rng.random((4, 3, 16, 16), dtype=np.float32)\n")
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": str(tmp_path / "make.py:batches")}
    base["targets"] = [{"backend": "openvino", "precisions": ["fp32", "int8"]},
                       {"backend": "onnxruntime", "precisions": ["int8"]}]
    base["gates"] = {"default": {"min_cosine": 0.9}}
    recipe = tiny_recipe(base, name="function.yaml")
    first = run_cli("build", recipe, "--store", tmp_path / "s1")
    assert first.exit_code == 0, first.stderr
    # two steps calibrate on it (openvino-int8, onnxruntime-int8), each in its own process
    assert calls.read_text().count("called") == 1
    report = json.loads((tmp_path / "s1/tiny/0.1.0/report.json").read_text())
    assert report["calibration"]["samples_available"] == 12
    again = run_cli("build", recipe, "--store", tmp_path / "s1")
    assert again.exit_code == 0 and steps_run(again.stderr) == []
    assert calls.read_text().count("called") == 2  # a no-op rebuild runs it once more, for its digest


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_the_same_model_in_two_checkouts_exports_the_same_bytes_under_the_same_keys(tmp_path: Path, tiny_recipe,
                                                                                     exporter: str) -> None:
    """Two CI jobs check the repository out in different folders and share steps through the
    store: their export must give the same bytes, so that every later key agrees (the exporters
    record the model file's absolute path in stack traces and doc strings)."""
    import shutil

    from tests.conftest import FIXTURES

    data = yaml.safe_load(tiny_recipe().read_text())
    keys, graphs = [], []
    for checkout in ("job-a/checkout", "job-b/work/repo"):
        folder = tmp_path / checkout
        folder.mkdir(parents=True)
        shutil.copyfile(FIXTURES / "tiny_net.py", folder / "tiny_net.py")
        shutil.copyfile(data["model"]["weights"], folder / "tiny.pt")
        recipe = {**data, "model": {**data["model"], "factory": "tiny_net.py:build_model", "weights": "tiny.pt"},
                  "export": {"exporter": exporter, "opset": 18}, "targets": [{"backend": "onnxruntime", "precisions": ["fp32"]}],
                  "gates": {"fp32": data["gates"]["fp32"]}}
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
        cache = folder / "cache"
        done = subprocess.run([sys.executable, "-m", "modelc_build", "build", "recipe.yaml", "--target", "onnxruntime-fp32",
                               "--cache", str(cache), "--store", str(folder / "store"), "-v"],
                              cwd=folder, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        keys.append(re.findall(r"▶ (export|simplify): .* key ([0-9a-f]{12})\]", done.stderr))
        entry = next(e for e in Cache(cache).entries() if e.step == "export")
        graphs.append((Cache(cache).root / entry.key[:2] / entry.key / "model.onnx").read_bytes())
        assert str(folder) not in graphs[-1].decode("latin-1")
    assert keys[0] == keys[1] and len(keys[0]) == 2
    assert graphs[0] == graphs[1]
