"""End-to-end: the CLI on tiny recipes (fast) — success, bad input, gates, immutability."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from modelc_build.manifest import sha256_file
from tests.conftest import FIXTURES, fixture_weights, host_dependent_steps, write_images


def test_tiny_build_stores_every_artifact_and_rebuild_is_a_no_op(tmp_path: Path, tiny_recipe, run_cli_process) -> None:
    recipe = tiny_recipe()
    store = tmp_path / "store"
    result = run_cli_process("build", recipe, "--store", store)
    assert result.returncode == 0, result.stderr
    release = store / "tiny" / "0.1.0"
    assert result.stdout == f"stored tiny 0.1.0 at {release}\n"
    manifest = json.loads((release / "manifest.json").read_text())
    for entry in manifest["files"]:
        assert sha256_file(release / entry["path"]) == entry["sha256"]
    assert {a["target"] for a in manifest["artifacts"]} == {"onnx", "onnxruntime-fp32", "openvino-fp32", "openvino-fp16",
                                                           "torchscript-fp32"}
    assert manifest["export"]["exporter"] == "torchscript"
    assert manifest["toolchain"]["torch"].startswith("2.")
    report = json.loads((release / "report.json").read_text())
    assert report["passed"] and report["samples"] == 6
    assert "TorchScript is deprecated upstream" in (release / "report.md").read_text()  # pointing to aoti and executorch
    again = run_cli_process("build", recipe, "--store", store)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"tiny 0.1.0 is up to date at {release}: every step cached, nothing to do\n"
    assert f"0 step(s) run, {18 + len(host_dependent_steps(recipe))} cached" in again.stderr  # 18 with decode:evaluation


def test_changed_content_under_same_version_is_refused(tmp_path: Path, tiny_recipe, run_cli) -> None:
    store = tmp_path / "store"
    assert run_cli("build", tiny_recipe(), "--store", store).exit_code == 0
    before = sha256_file(store / "tiny/0.1.0/onnx/model.onnx")
    changed = tiny_recipe({"model": {**yaml.safe_load(tiny_recipe().read_text())["model"], "factory_args": {"classes": 3}},
                           "export": {"exporter": "torchscript", "opset": 16}})
    result = run_cli("build", changed, "--store", store)
    assert result.exit_code == 5
    assert "a version is immutable: bump `version` in the recipe" in result.stderr
    assert sha256_file(store / "tiny/0.1.0/onnx/model.onnx") == before


def test_missed_gate_exits_4_keeps_report_and_stores_nothing(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = tiny_recipe({"gates": {"fp16": {"max_abs_error": 0.0}}})
    store = tmp_path / "store"
    result = run_cli("build", recipe, "--store", store, "--reports-dir", tmp_path / "failed")
    assert result.exit_code == 4
    assert "accuracy gate(s) missed, nothing was stored: openvino-fp16: max_abs_error on output 'logits'" in result.stderr
    assert not store.exists()
    kept = json.loads((tmp_path / "failed/tiny/0.1.0/report.json").read_text())
    assert not kept["passed"]
    failing = [g for a in kept["artifacts"] for g in a["gates"] if not g["passed"]]
    assert failing[0]["gate"] == "max_abs_error" and failing[0]["observed"] > 0


@pytest.mark.parametrize("case,expected", [
    ("missing_weights", "the weights file does not exist: fix model.weights"),
    ("bad_image", "cannot decode this image"),
    ("empty_folder", "holds no samples"),
    ("wrong_shape", "the model does not accept the declared inputs"),
    ("not_state_dict", "not a state_dict"),
])
def test_bad_input_is_one_line_exit_3_and_store_untouched(tmp_path: Path, tiny_recipe, run_cli, case: str, expected: str) -> None:
    recipe_data = yaml.safe_load(tiny_recipe().read_text())
    images = Path(recipe_data["data"]["evaluation"]["path"])
    if case == "missing_weights":
        recipe_data["model"]["weights"] = str(tmp_path / "nope.pt")
    elif case == "bad_image":
        (images / "a" / "zz.png").write_bytes(b"\x89PNG broken")
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        recipe_data["data"]["evaluation"]["path"] = str(tmp_path / "empty")
    elif case == "wrong_shape":
        recipe_data["model"]["inputs"][0]["shape"] = ["batch", 1, 16, 16]
    elif case == "not_state_dict":
        torch.save({"epoch": 3, "note": "x"}, tmp_path / "ckpt.pt")
        recipe_data["model"]["weights"] = str(tmp_path / "ckpt.pt")
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(recipe_data))
    store = tmp_path / "store"
    result = run_cli("build", recipe, "--store", store)
    assert result.exit_code == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0]
    assert "Traceback" not in result.stderr
    assert not store.exists()


def test_typo_in_recipe_exits_2_before_any_work(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = tiny_recipe()
    recipe.write_text(recipe.read_text().replace("opset:", "opsett:"))
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 2
    assert "export.opsett: unknown key 'opsett': did you mean 'opset'?" in result.stderr


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path: Path, tiny_recipe, run_cli_process) -> None:
    recipe = tiny_recipe({"model": {**yaml.safe_load(tiny_recipe().read_text())["model"], "weights": str(tmp_path / "x.pt")}})
    result = run_cli_process("build", recipe, "--store", tmp_path / "store", "--debug")
    assert result.returncode == 3, result.stderr
    assert "Traceback (most recent call last)" in result.stderr and "InputError" in result.stderr
    assert "the weights file does not exist: fix model.weights" in result.stderr.splitlines()[-1]


@pytest.mark.parametrize("body,message", [
    ("import sys\ndef build_model():\n    sys.exit(0)\n", "factory.py:build_model' called sys.exit(0) instead of returning a model"),
    ("import os\ndef build_model():\n    os._exit(9)\n",
     "process ended with exit code 9 while running the model from model.factory"),
])
def test_a_factory_that_ends_the_process_is_an_input_error_naming_it(tmp_path: Path, tiny_recipe, run_cli_process,
                                                                     body: str, message: str) -> None:
    (tmp_path / "factory.py").write_text(body)
    recipe = tiny_recipe({"model": {**yaml.safe_load(tiny_recipe().read_text())["model"],
                                    "factory": str(tmp_path / "factory.py") + ":build_model"}}, name="exits.yaml")
    result = run_cli_process("build", recipe, "--store", tmp_path / "store")
    assert result.returncode == 3, result.stderr
    assert message in result.stderr and "factory.py:build_model" in result.stderr
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_weights_of_another_size_are_an_input_error(tmp_path: Path, tiny_recipe, run_cli) -> None:
    import torch

    model = yaml.safe_load(tiny_recipe().read_text())["model"]
    state = torch.load(model["weights"], weights_only=True)
    name = next(iter(state))
    state[name] = torch.zeros(*(d + 1 for d in state[name].shape))
    torch.save(state, tmp_path / "other.pt")
    recipe = tiny_recipe({"model": {**model, "weights": str(tmp_path / "other.pt")}}, name="other.yaml")
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 3, result.stderr
    assert "other.pt: the weights do not fit the model" in result.stderr and "size mismatch" in result.stderr


def test_onnx_and_torchscript_sources(tmp_path: Path, tiny_recipe, run_cli) -> None:
    from tests.fixtures.tiny_net import build_model

    model = build_model().eval()
    onnx_path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 16, 16),), str(onnx_path), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    script_path = tmp_path / "tiny_script.pt"
    torch.jit.save(torch.jit.script(model), str(script_path))
    base = yaml.safe_load(tiny_recipe().read_text())
    inputs = base["model"]["inputs"]
    onnx_recipe = tiny_recipe({"name": "tiny-onnx", "model": {"source": "onnx", "path": str(onnx_path), "inputs": inputs,
                                                              "outputs": ["logits"]},
                               "targets": [{"backend": "openvino", "precisions": ["fp32"]}],
                               "gates": {"fp32": {"min_cosine": 0.9999}}}, name="onnx.yaml")
    result = run_cli("build", onnx_recipe, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "store/tiny-onnx/0.1.0/report.json").read_text())
    assert report["reference"] == "onnxruntime FP32 on tiny.onnx"
    script_recipe = tiny_recipe({"name": "tiny-ts", "model": {"source": "torchscript", "path": str(script_path), "inputs": inputs,
                                                              "outputs": ["logits"]}}, name="ts.yaml")
    result = run_cli("build", script_recipe, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    assert run_cli("ls", "--store", tmp_path / "store").stdout == "tiny-onnx 0.1.0\ntiny-ts 0.1.0\n"


def test_plan_lists_steps_in_order_with_cache_state(tmp_path: Path, tiny_recipe, run_cli) -> None:
    result = run_cli("plan", tiny_recipe(), "--json")
    steps = json.loads(result.stdout)["steps"]
    assert {s["status"] for s in steps[:-1]} == {"will run"}
    targets = ["onnxruntime-fp32", "openvino-fp32", "openvino-fp16", "torchscript-fp32"]
    extra = host_dependent_steps(tiny_recipe())  # OpenVINO under this CPU's own bf16 default, where it has one
    verify = [step for t in targets for step in [f"verify:{t}"] + [e for e in extra if e.startswith(f"verify:{t}@")]]
    assert [s["id"] for s in steps] == (["export", "simplify"] + [f"compile:{t}" for t in targets]
                                        + ["decode:evaluation", "reference", "golden"]
                                        + verify + ["latency:reference"]
                                        + [f"latency:{t}" for t in targets] + ["release"])
    by_id = {s["id"]: s for s in steps}
    assert by_id["compile:openvino-fp16"]["depends_on"] == ["simplify"]
    assert by_id["compile:torchscript-fp32"]["depends_on"] == ["export"]
    assert by_id["verify:openvino-fp16"]["depends_on"] == ["compile:openvino-fp16", "reference", "golden",
                                                          "decode:evaluation"]
    assert run_cli("build", tiny_recipe(), "--store", tmp_path / "store").exit_code == 0
    after = json.loads(run_cli("plan", tiny_recipe(), "--json").stdout)["steps"]
    assert all(s["status"].startswith("cached ") for s in after[:-1]), after


def branchy_recipe(tmp_path: Path, tiny_recipe, export: dict) -> Path:
    """A model torch.export cannot capture (a data-dependent `if`), for the onnxruntime target only."""
    weights = fixture_weights("branchy_net", tmp_path / "branchy.pt")
    return tiny_recipe({"model": {"source": "torch", "factory": str(FIXTURES / "branchy_net.py") + ":build_model",
                                  "weights": str(weights), "inputs": [{"name": "images", "shape": ["batch", 3, 16, 16]}],
                                  "outputs": ["logits"]},
                        "export": export, "targets": [{"backend": "onnxruntime", "precisions": ["fp32"]}], "gates": None},
                       name="branchy.yaml")


def test_exporter_auto_falls_back_to_the_torchscript_exporter_and_says_why(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = branchy_recipe(tmp_path, tiny_recipe, {"opset": 18})
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    assert "note: torch.export could not capture the model (" in result.stderr
    assert "exported with the TorchScript-based exporter instead (export.exporter: auto)" in result.stderr
    release = tmp_path / "store/tiny/0.1.0"
    report = json.loads((release / "report.json").read_text())
    assert report["export"]["requested"] == "auto" and report["export"]["used"] == "torchscript"
    assert "torch.onnx.export (dynamo exporter) failed" in report["export"]["fallback_reason"]
    assert json.loads((release / "manifest.json").read_text())["export"]["exporter"] == "torchscript"
    assert "with the torchscript exporter (export.exporter: auto) because torch.export" in (release / "report.md").read_text()


def test_exporter_dynamo_forced_fails_with_the_cause(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = branchy_recipe(tmp_path, tiny_recipe, {"exporter": "dynamo", "opset": 18})
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 7, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: torch.onnx.export (dynamo exporter) failed") and "try export.exporter: torchscript (or auto)" in line
    kept = line.rsplit("(full log: ", 1)[1].rstrip(")")  # the exporter's own long output, kept in a file
    assert kept.endswith(".modelc/failed/tiny/0.1.0/export.log") and len(Path(kept).read_text().splitlines()) > 20
    assert len(result.stderr.splitlines()) < 40  # the terminal gets the step lines and one error line


METRIC = '''
import numpy as np

def agreement(outputs, reference, labels):
    """percent of samples whose top class is the reference's, and the mean absolute logit error"""
    got, want = outputs["logits"], reference["logits"]
    return {"agreement": 100.0 * float((got.argmax(1) == want.argmax(1)).mean()),
            "abs_error": float(np.abs(got - want).mean()), "labelled": float(len(labels))}

def error(outputs, reference, labels):
    return float(np.abs(outputs["logits"] - reference["logits"]).max())

def broken(outputs, reference, labels):
    raise ValueError("no such output")
'''


def test_a_custom_metric_is_reported_and_gated(tmp_path: Path, tiny_recipe, run_cli) -> None:
    (tmp_path / "metrics.py").write_text(METRIC)
    recipe = tiny_recipe({"task": {"type": "custom", "metric": str(tmp_path / "metrics.py") + ":agreement"},
                          "gates": {"fp32": {"max_metric_drop": 0.0}, "fp16": {"min_metric": 99.0}},
                          "data": {"preprocess": {"size": [16, 16]},
                                   "evaluation": {"path": str(tmp_path / "images"), "labels": "folders", "batch_size": 4}}},
                         name="custom.yaml")
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "store/tiny/0.1.0/report.json").read_text())
    artifact = next(a for a in report["artifacts"] if a["target"] == "openvino-fp16")
    assert artifact["task_metric"]["name"] == "agreement" and artifact["task_metric"]["value"] == 100.0
    # labels reached the metric; values are sample-weighted means over batches of 4 and 2
    assert artifact["task_metric"]["label_free"]["labelled"] == pytest.approx((4 * 4 + 2 * 2) / 6)
    assert 0.0 < artifact["task_metric"]["label_free"]["abs_error"] < 0.01
    assert {g["gate"] for g in artifact["gates"]} >= {"min_metric"}


def test_a_lower_is_better_custom_metric_fails_its_gate(tmp_path: Path, tiny_recipe, run_cli) -> None:
    (tmp_path / "metrics.py").write_text(METRIC)
    recipe = tiny_recipe({"task": {"type": "custom", "metric": str(tmp_path / "metrics.py") + ":error",
                                   "higher_is_better": False},
                          "gates": {"fp16": {"min_metric": 1e-9}}}, name="lower.yaml")
    result = run_cli("build", recipe, "--store", tmp_path / "store", "--reports-dir", tmp_path / "failed")
    assert result.exit_code == 4, result.stderr
    assert "openvino-fp16: min_metric:" in result.stderr


def test_a_failing_custom_metric_names_itself(tmp_path: Path, tiny_recipe, run_cli) -> None:
    (tmp_path / "metrics.py").write_text(METRIC)
    recipe = tiny_recipe({"task": {"type": "custom", "metric": str(tmp_path / "metrics.py") + ":broken"}, "gates": None},
                         name="broken.yaml")
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 3, result.stderr
    assert "metrics.py:broken: the metric function failed: ValueError: no such output" in result.stderr


def test_json_output_of_build_ls_validate(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = tiny_recipe()
    built = run_cli("build", recipe, "--store", tmp_path / "store", "--json", "-q")
    assert built.exit_code == 0, built.stderr
    document = json.loads(built.stdout)
    assert document["created"] and document["passed"] and document["version"] == "0.1.0"
    assert {a["target"] for a in document["artifacts"]} == {"onnxruntime-fp32", "openvino-fp32", "openvino-fp16",
                                                            "torchscript-fp32"}
    assert "▶" not in built.stderr  # quiet: no step lines
    listed = json.loads(run_cli("ls", "--store", tmp_path / "store", "--json").stdout)
    assert listed == [{"name": "tiny", "version": "0.1.0"}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text().replace("format_version: 1", "format_version: 9"))
    checked = run_cli("validate", recipe, bad, "--json")
    assert checked.exit_code == 2
    report = json.loads(checked.stdout)
    assert [r["ok"] for r in report["recipes"]] == [True, False]
    assert report["problems"][0]["key"] == "format_version"


def test_no_color_is_respected(tmp_path: Path, run_cli_process, monkeypatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    coloured = run_cli_process("validate", tmp_path / "missing.yaml")
    assert "\x1b[" in coloured.stderr
    monkeypatch.setenv("NO_COLOR", "1")
    plain = run_cli_process("validate", tmp_path / "missing.yaml")
    assert plain.returncode == coloured.returncode == 3 and "\x1b[" not in plain.stderr and "error:" in plain.stderr


def test_classification_labels_from_a_csv_file(tmp_path: Path, tiny_recipe, run_cli) -> None:
    folders = run_cli("build", tiny_recipe(), "--store", tmp_path / "folders")
    assert folders.exit_code == 0, folders.stderr
    images = tmp_path / "images"
    rows = ["file,label"] + [f"{p.relative_to(images).as_posix()},{p.parent.name}" for p in sorted(images.rglob("*.png"))]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    recipe = tiny_recipe({"data": {"preprocess": {"size": [16, 16]},
                                   "evaluation": {"path": str(images), "labels": "csv", "labels_path": str(tmp_path / "labels.csv"),
                                                  "batch_size": 4}}}, name="csv.yaml")
    result = run_cli("build", recipe, "--store", tmp_path / "csv")
    assert result.exit_code == 0, result.stderr
    by_folders = json.loads((tmp_path / "folders/tiny/0.1.0/report.json").read_text())["artifacts"][0]["task_metric"]
    by_csv = json.loads((tmp_path / "csv/tiny/0.1.0/report.json").read_text())["artifacts"][0]["task_metric"]
    assert by_csv["name"] == "top1_accuracy" and by_csv["reference"] == by_folders["reference"]
    (tmp_path / "labels.csv").write_text("file,label\na/000.png,zebra\n")
    bad = run_cli("build", recipe, "--store", tmp_path / "bad")
    assert bad.exit_code == 3 and "labels.csv:2: label 'zebra' is neither a class in task.classes" in bad.stderr


def hf_style_weights(tmp_path: Path) -> Path:
    """safetensors weights with a stale buffer the model no longer has (embeddings.position_ids)."""
    import sys

    import torch
    from safetensors.torch import save_file

    sys.path.insert(0, str(FIXTURES))
    try:
        from hf_style_net import build_model
    finally:
        sys.path.remove(str(FIXTURES))
    state = dict(build_model().state_dict())
    state["embeddings.position_ids"] = torch.arange(8).reshape(1, 8)
    save_file(state, str(tmp_path / "model.safetensors"))
    return tmp_path / "model.safetensors"


def hf_style_recipe(tmp_path: Path, tiny_recipe, model_extra: dict) -> Path:
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "eval.npy", np.random.default_rng(0).random((12, 8), dtype=np.float32))
    return tiny_recipe({"model": {"source": "torch", "factory": str(FIXTURES / "hf_style_net.py") + ":build_model",
                                  "weights": str(hf_style_weights(tmp_path)), "inputs": [{"name": "x", "shape": ["batch", 8]}],
                                  "outputs": ["pooler_output"], **model_extra},
                        "data": {"evaluation": {"path": str(tmp_path / "eval.npy")}}, "task": {"type": "generic"},
                        "targets": [{"backend": "onnxruntime", "precisions": ["fp32"]},
                                    {"backend": "openvino", "precisions": ["fp32"]}], "gates": None},
                       name="hf.yaml")


def test_a_hugging_face_style_model_with_safetensors_and_a_stale_buffer(tmp_path: Path, tiny_recipe, run_cli) -> None:
    strict = run_cli("build", hf_style_recipe(tmp_path, tiny_recipe, {}), "--store", tmp_path / "s1")
    assert strict.exit_code == 3
    assert "unexpected embeddings.position_ids" in strict.stderr and "set model.strict: false" in strict.stderr
    for extra in ({"strict": False}, {"ignore_weights": ["embeddings\\.position_ids"]}):
        result = run_cli("build", hf_style_recipe(tmp_path, tiny_recipe, extra), "--store", tmp_path / f"s-{len(extra)}-{list(extra)[0]}")
        assert result.exit_code == 0, result.stderr
        release = next((tmp_path / f"s-{len(extra)}-{list(extra)[0]}").glob("*/*"))
        report = json.loads((release / "report.json").read_text())
        # the dict output was read by name: one output, the pooled one, measured against the reference
        assert [o["output"] for o in report["artifacts"][0]["outputs"]] == ["pooler_output"]
        assert report["artifacts"][0]["outputs"][0]["cosine"] > 0.9999


def test_an_output_name_the_model_does_not_return_is_named(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = hf_style_recipe(tmp_path, tiny_recipe, {"strict": False, "outputs": ["pooled"]})
    result = run_cli("build", recipe, "--store", tmp_path / "s")
    assert result.exit_code == 3, result.stderr
    assert "model.outputs names ['pooled'], but the model returns ['last_hidden_state', 'pooler_output']" in result.stderr


def test_an_embedding_task_reports_per_sample_cosine_and_is_gated(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = hf_style_recipe(tmp_path, tiny_recipe, {"strict": False})
    data = yaml.safe_load(recipe.read_text())
    data["task"] = {"type": "embedding"}
    data["targets"] = [{"backend": "openvino", "precisions": ["fp32", "fp16"]}]
    data["gates"] = {"fp16": {"max_metric_drop": 0.0}}  # any per-sample disagreement at all
    recipe.write_text(yaml.safe_dump(data))
    result = run_cli("build", recipe, "--store", tmp_path / "store", "--reports-dir", tmp_path / "failed")
    assert result.exit_code == 4, result.stderr
    report = json.loads(next((tmp_path / "failed").glob("*/*/report.json")).read_text())
    fp32, fp16 = report["artifacts"]
    assert fp32["task_metric"]["name"] == "mean_sample_cosine" and fp32["task_metric"]["value"] > 99.99
    free = fp16["task_metric"]["label_free"]
    assert 0.99 < free["min_sample_cosine"] <= free["mean_sample_cosine"] < 1.0
    assert "openvino-fp16: max_metric_drop:" in result.stderr


def test_task_none_says_it_judges_by_tensor_metrics_only(tmp_path: Path, tiny_recipe, run_cli) -> None:
    recipe = tiny_recipe({"task": {"type": "none"}, "gates": None,
                          "data": {"preprocess": {"size": [16, 16]}, "evaluation": {"path": str(tmp_path / "images")}}},
                         name="none.yaml")
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    assert "No task metric (task type none): artifacts are judged by tensor metrics only." in \
        (tmp_path / "store/tiny/0.1.0/report.md").read_text()


def test_a_declared_fixed_shape_is_applied_to_a_dynamic_onnx_source(tmp_path: Path, tiny_recipe, run_cli) -> None:
    import onnx

    from tests.fixtures.tiny_net import build_model

    onnx_path = tmp_path / "dynamic.onnx"
    torch.onnx.export(build_model().eval(), (torch.zeros(1, 3, 16, 16),), str(onnx_path), input_names=["images"],
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}})
    inputs = yaml.safe_load(tiny_recipe().read_text())["model"]["inputs"]  # [batch, 3, 16, 16]
    recipe = tiny_recipe({"name": "fixed", "model": {"source": "onnx", "path": str(onnx_path), "inputs": inputs,
                                                     "outputs": ["logits"]},
                          "targets": [{"backend": "openvino", "precisions": ["fp32"]}], "gates": None}, name="fixed.yaml")
    result = run_cli("build", recipe, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    release = tmp_path / "store/fixed/0.1.0"
    dims = onnx.load(str(release / "onnx/model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, 16, 16]  # H x W fixed, batch still dynamic
    assert 'shape="?,3,16,16"' in (release / "openvino-fp32/model.xml").read_text()


def test_a_fixed_batch_onnx_declared_dynamic_is_named_and_builds_once_declared(tmp_path: Path, tiny_recipe,
                                                                              run_cli) -> None:
    """Ultralytics exports a fixed batch of 1 by default: a recipe declaring `batch` is told so up front
    (it used to fail inside int8 calibration), and the same model declared [1, ...] builds, int8 included,
    calibrated one sample per call."""
    from tests.fixtures.tiny_net import build_model

    onnx_path = tmp_path / "fixed.onnx"
    torch.onnx.export(build_model().eval(), (torch.zeros(1, 3, 16, 16),), str(onnx_path), input_names=["images"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    inputs = yaml.safe_load(tiny_recipe().read_text())["model"]["inputs"]  # [batch, 3, 16, 16]
    overrides = {"name": "fixed", "model": {"source": "onnx", "path": str(onnx_path), "inputs": inputs,
                                            "outputs": ["logits"]},
                 "targets": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]},
                             {"backend": "openvino", "precisions": ["int8"]}], "gates": None}
    data = yaml.safe_load(tiny_recipe().read_text())["data"]
    write_images(tmp_path / "calibration", 4, classes=("a", "b", "c"), seed=7)
    overrides["data"] = {**data, "calibration": {"path": str(tmp_path / "calibration")}}
    result = run_cli("build", tiny_recipe(overrides, name="dynamic.yaml"), "--store", tmp_path / "store")
    assert result.exit_code == 3, result.stderr
    assert "input 'images' axis 0 is fixed at 1 in the graph, model.inputs declares it dynamic ('batch'): declare 1" \
        in result.stderr
    inputs[0]["shape"][0] = 1
    result = run_cli("build", tiny_recipe(overrides, name="fixed.yaml"), "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "store/fixed/0.1.0/report.json").read_text())
    assert {a["target"] for a in report["artifacts"]} == {"onnxruntime-fp32", "onnxruntime-int8", "openvino-int8"}


@pytest.mark.slow
def test_inputs_of_every_declared_dtype_build_end_to_end(tmp_path: Path, run_cli) -> None:
    """float16, bool, int32 and int64 inputs side by side, calibrated from one .npz file and measured on a
    folder of .npz files (one sample each), through onnxruntime and OpenVINO (fp32 and int8)."""
    from tests.fixtures.mixed_inputs import build_model

    torch.save(build_model().state_dict(), tmp_path / "mixed.pt")
    rng = np.random.default_rng(0)
    arrays = {}
    for role, count in (("calibration", 64), ("evaluation", 40)):
        arrays[role] = dict(features=rng.normal(size=(count, 8)).astype(np.float16), mask=rng.random((count, 8)) > 0.3,
                            offset=rng.integers(0, 5, (count, 1)).astype(np.int32),
                            ids=rng.integers(0, 16, (count, 8)).astype(np.int64))
    np.savez(tmp_path / "calibration.npz", **arrays["calibration"])
    (tmp_path / "evaluation").mkdir()
    for index in range(40):
        np.savez(tmp_path / f"evaluation/{index:03d}.npz", **{k: v[index] for k, v in arrays["evaluation"].items()})
    recipe = {"format_version": 1, "name": "mixed", "version": "1.0.0",
              "model": {"source": "torch", "factory": str(FIXTURES / "mixed_inputs.py") + ":build_model",
                        "weights": str(tmp_path / "mixed.pt"),
                        "inputs": [{"name": "features", "shape": ["batch", 8], "dtype": "float16"},
                                   {"name": "mask", "shape": ["batch", 8], "dtype": "bool"},
                                   {"name": "offset", "shape": ["batch", 1], "dtype": "int32"},
                                   {"name": "ids", "shape": ["batch", 8], "dtype": "int64"}],
                        "outputs": ["y"]},
              "data": {"calibration": {"path": str(tmp_path / "calibration.npz")},
                       "evaluation": {"path": str(tmp_path / "evaluation"), "format": "npz"}},
              "targets": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]},
                          {"backend": "openvino", "precisions": ["fp32", "int8"]}],
              "quantization": {"fallback": "off"},  # full INT8 judged as it is (a toy's mixed graph is no faster)
              "latency": {"runs": 2, "warmup": 1}}
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = run_cli("build", path, "--store", tmp_path / "store")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "store/mixed/1.0.0/report.json").read_text())
    assert report["samples"] == 40
    cosines = {a["target"]: a["outputs"][0]["cosine"] for a in report["artifacts"]}
    assert set(cosines) == {"onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"}
    assert min(cosines["onnxruntime-fp32"], cosines["openvino-fp32"]) > 0.9999
    assert min(cosines["onnxruntime-int8"], cosines["openvino-int8"]) > 0.95


def test_a_failed_target_leaves_the_others_verdicts_printed_and_a_report_kept(tmp_path: Path, run_cli, tiny_recipe) -> None:
    """One target's compile fails (an unknown layer name to keep in float): the build exits with
    that failure's code, yet the other target's verdict is printed and a report of what was
    measured is kept, listing the failed step; nothing is released."""
    import json

    images = tmp_path / "calibration"
    write_images(images, 8, seed=7)
    recipe = tiny_recipe({"targets": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]}],
                          "data": {"preprocess": {"size": [16, 16]}, "calibration": {"path": str(images)},
                                   "evaluation": {"path": str(tmp_path / "images"), "labels": "folders", "batch_size": 4}},
                          "quantization": {"ignore": {"names": ["no_such_layer"]}}, "gates": None})
    result = run_cli("build", recipe, "--store", tmp_path / "store", "--cache", tmp_path / "cache",
                     "--reports-dir", tmp_path / "failed")
    assert result.exit_code == 3, result.output
    assert "onnxruntime-fp32: cosine 1.000000" in result.output  # the other target's verdict
    assert "no_such_layer" in result.stderr and "the other targets' report" in result.stderr
    report = json.loads((tmp_path / "failed/tiny/0.1.0/report.json").read_text())
    assert [a["target"] for a in report["artifacts"]] == ["onnxruntime-fp32"] and not report["passed"]
    assert report["failed_steps"][0].startswith("compile:onnxruntime-int8: ")
    assert "a step failed" in (tmp_path / "failed/tiny/0.1.0/report.md").read_text()
    assert not (tmp_path / "store/tiny").exists()
