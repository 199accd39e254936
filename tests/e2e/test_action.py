"""The GitHub Action's script part, run as a runner runs it: GITHUB_OUTPUT and GITHUB_STEP_SUMMARY
pointed at temporary files, against the local registry the tests start. Outputs, annotations (file
and line) and the folders to upload are what the workflow reads."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import shipped_recipe

REPO = Path(__file__).resolve().parents[2]


def outputs_of(path: Path) -> dict[str, str]:
    """Parse `name<<DELIMITER\\nvalue\\nDELIMITER` blocks as the runner does."""
    values, lines = {}, path.read_text().splitlines()
    index = 0
    while index < len(lines):
        name, _, delimiter = lines[index].partition("<<")
        end = lines.index(delimiter, index + 1)
        values[name] = "\n".join(lines[index + 1:end])
        index = end + 1
    return values


def action(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    output, summary = tmp_path / "github_output", tmp_path / "step_summary"
    output.write_text("")
    summary.write_text("")
    done = subprocess.run([sys.executable, "-m", "modelc_build.actions", *args], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
                               "GITHUB_ACTIONS": "true", "NO_COLOR": "1", **(env or {})}, timeout=900)
    return done, outputs_of(output)


def test_the_action_builds_pushes_and_reports_its_outputs(tmp_path: Path, tiny_recipe, registry, signed) -> None:
    store = registry.url("action")
    recipe = tiny_recipe()
    done, outputs = action(tmp_path, "build", "--recipes", str(recipe), "--store", store, "--push", "--sign", "key",
                           "--signing-key", str(signed["key"]))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"::group::modelc build {recipe}" in done.stdout and "::endgroup::" in done.stdout
    releases = json.loads(outputs["releases"])
    assert releases == [{"recipe": str(recipe), "name": "tiny", "version": "0.1.0", "store": f"{store}/tiny:0.1.0"
                         if releases[0]["store"].startswith("oci://") else releases[0]["store"], "passed": True,
                         "manifest_digest": releases[0]["manifest_digest"]}]
    assert outputs["passed"] == "true"
    uploaded = outputs["upload"].splitlines()
    assert uploaded == [outputs["report"]] and {"report.json", "report.md", "report.html"} <= {p.name for p in Path(uploaded[0]).iterdir()}
    assert "## modelc: tiny 0.1.0" in (tmp_path / "step_summary").read_text()  # the report as the job summary


def test_recipe_errors_and_missed_gates_are_annotated_on_their_lines(tmp_path: Path, tiny_recipe) -> None:
    broken = tiny_recipe({"version": "banana"}, name="broken.yaml")
    done, outputs = action(tmp_path, "build", "--recipes", str(broken), "--store", str(tmp_path / "store"))
    assert done.returncode == 2 and outputs["passed"] == "false"
    line = next(i for i, text in enumerate(broken.read_text().splitlines(), start=1) if text.startswith("version:"))
    assert f"::error file={broken},line={line},col=10::version: 'banana' is not a release version" in done.stdout

    strict = yaml.safe_load(tiny_recipe().read_text())
    strict["gates"]["fp16"]["max_abs_error"] = 0.0  # no fp16 artifact is exact
    gated = tiny_recipe(strict, name="gated.yaml")
    done, outputs = action(tmp_path, "build", "--recipes", str(gated), "--store", str(tmp_path / "store"))
    assert done.returncode == 4 and outputs["passed"] == "false"
    gate_line = next(i for i, text in enumerate(gated.read_text().splitlines(), start=1) if "max_abs_error: 0.0" in text)
    import re

    assert any(a.startswith(f"::error file={gated},line={gate_line},") and re.search(
        r"openvino-fp16: max_abs_error [0-9.e+-]+ > 0 on output 'logits' \(recipe gate\)$", a)
        for a in done.stdout.splitlines()), done.stdout
    assert outputs["upload"] == str(tmp_path / ".modelc/reports/tiny/0.1.0")  # the failed report goes up too
    assert (tmp_path / ".modelc/reports/tiny/0.1.0/report.html").is_file()


def test_an_existing_version_with_other_content_is_an_error_only_when_the_recipe_changed(tmp_path: Path, tiny_recipe) -> None:
    store = str(tmp_path / "store")
    assert action(tmp_path, "build", "--recipes", str(tiny_recipe()), "--store", store)[0].returncode == 0
    changed = yaml.safe_load(tiny_recipe().read_text())
    changed["export"]["opset"] = 16  # other bytes, same version
    recipe = tiny_recipe(changed)
    done, _ = action(tmp_path, "build", "--recipes", str(recipe), "--store", store, "--changed", str(recipe))
    assert done.returncode == 5 and f"::error file={recipe},line=" in done.stdout and "bump version" in done.stdout
    done, _ = action(tmp_path, "build", "--recipes", str(recipe), "--store", store, "--changed", "")
    assert done.returncode == 0 and f"::warning file={recipe}::tiny 0.1.0 is already released" in done.stdout


class FakeGitHub:
    """The two REST calls the comment makes, recorded."""

    def __init__(self, comments: list[dict[str, Any]] | None = None, refuse: bool = False) -> None:
        self.comments: list[dict[str, Any]] = comments or []
        self.calls: list[str] = []
        self.refuse = refuse
        github = self

        class Handler(BaseHTTPRequestHandler):
            def _json(self, status: int, document: Any) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                github.calls.append(f"GET {self.path.split('?')[0]}")
                if github.refuse:
                    self._json(403, {"message": "Resource not accessible by integration"})
                    return
                page = int(dict(p.split("=") for p in self.path.split("?")[1].split("&")).get("page", 1))
                self._json(200, github.comments[(page - 1) * 100:page * 100])

            def do_POST(self) -> None:  # noqa: N802
                github.calls.append(f"POST {self.path}")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                github.comments.append({"id": 7, "body": body["body"], "user": {"login": "github-actions[bot]"}})
                self._json(201, github.comments[-1])

            def do_PATCH(self) -> None:  # noqa: N802
                github.calls.append(f"PATCH {self.path}")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                mine = next(c for c in github.comments if str(c["id"]) == self.path.rsplit("/", 1)[1])
                mine["body"] = body["body"]
                self._json(200, mine)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.mark.slow
def test_the_pull_request_comment_shows_deltas_against_the_last_release(tmp_path: Path, registry, signed) -> None:
    """The shipped classifier released as 1.0.0, then changed (its onnxruntime int8 in 7-bit
    weights) and built as 1.1.0: the comment compares the two, artifact by artifact."""
    store = registry.url("pull-request")
    first = shipped_recipe("classifier.yaml", tmp_path, verify={"cpus": []}, latency={"runs": 10, "warmup": 2},
                           targets=[{"backend": "onnxruntime", "precisions": ["fp32", "int8"]},
                                    {"backend": "openvino", "precisions": ["fp32"]}],
                           gates={"fp32": {"max_abs_error": 0.001}, "int8": {"min_cosine": 0.99, "max_metric_drop": 0.5}},
                           quantization={"sensitivity_layers": 0})
    done, outputs = action(tmp_path, "build", "--recipes", str(first), "--store", store, "--push", "--sign", "key",
                           "--signing-key", str(signed["key"]))
    assert done.returncode == 0, done.stdout + done.stderr
    data = yaml.safe_load(first.read_text())
    data["version"] = "1.1.0"
    data["quantization"] = {**(data.get("quantization") or {}), "onnxruntime_weights": "int8", "onnxruntime_vnni": False}
    first.write_text(yaml.safe_dump(data, sort_keys=False))
    done, outputs = action(tmp_path, "build", "--recipes", str(first), "--store", store, "--push", "--sign", "key",
                           "--signing-key", str(signed["key"]))
    assert done.returncode == 0, done.stdout + done.stderr
    github = FakeGitHub()
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 12}}))
    env = {"GITHUB_API_URL": github.url, "GITHUB_REPOSITORY": "org/models", "GITHUB_EVENT_PATH": str(event),
           "GITHUB_TOKEN": "test-token"}
    for _ in range(2):  # a second run updates the one comment
        done, _ = action(tmp_path, "comment", "--store", store, "--results", outputs["results"], "--post", env=env)
        assert done.returncode == 0, done.stderr
    assert github.calls == ["GET /repos/org/models/issues/12/comments", "POST /repos/org/models/issues/12/comments",
                            "GET /repos/org/models/issues/12/comments", "PATCH /repos/org/models/issues/comments/7"]
    body = github.comments[0]["body"]
    assert body.startswith("<!-- modelc-report -->") and "tiny-classifier-shapes 1.1.0 against tiny-classifier-shapes 1.0.0" in body
    row = next(line for line in body.splitlines() if line.startswith("| `onnxruntime-int8` |"))
    assert "▲" in row or "▼" in row  # the int8 artifact changed: its size and cosine moved
    assert "| `openvino-fp32` |" in body and "(=)" in body  # an unchanged artifact
    listed = subprocess.run([sys.executable, "-m", "modelc_build", "diff", "tiny-classifier-shapes:1.0.0",
                             "tiny-classifier-shapes:1.1.0", "--store", store, "--json"], capture_output=True, text=True)
    changes = json.loads(listed.stdout)["changes"]
    size = next(c for c in changes if c["target"] == "onnxruntime-int8" and c["figure"] == "size_bytes")
    assert size["before"] != size["after"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def recipe_repository(tmp_path: Path, tiny_recipe) -> tuple[Path, str]:
    """A git repository with two recipes (tiny and a copy named other) and a base commit."""
    repo = tmp_path / "repo"
    (repo / "recipes").mkdir(parents=True)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@t")
    git(repo, "config", "user.name", "t")
    data = yaml.safe_load(tiny_recipe().read_text())
    (repo / "recipes" / "tiny.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (repo / "recipes" / "other.yaml").write_text(yaml.safe_dump({**data, "name": "other"}, sort_keys=False))
    (repo / "README").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo, git(repo, "rev-parse", "HEAD")


def plan(repo: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    done, outputs = action(repo, "plan", "--recipes", "recipes/*.yaml", *args)
    return done, outputs


def test_plan_builds_what_a_pull_request_changes_and_survives_a_deleted_recipe(tmp_path: Path, tiny_recipe) -> None:
    repo, base = recipe_repository(tmp_path, tiny_recipe)
    (repo / "recipes" / "other.yaml").unlink()  # a deletion is not an error
    data = yaml.safe_load((repo / "recipes" / "tiny.yaml").read_text())
    (repo / "recipes" / "tiny.yaml").write_text(yaml.safe_dump({**data, "version": "0.2.0"}, sort_keys=False))
    git(repo, "commit", "-qam", "tiny 0.2.0, other gone")
    done, outputs = plan(repo, "--event", "pull_request", "--base", base)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [r["name"] for r in json.loads(outputs["recipes"])] == ["tiny"] and outputs["any"] == "true"
    assert {job["target"] for job in json.loads(outputs["targets"])["include"]} == {"onnxruntime-fp32", "openvino-fp32",
                                                                                   "openvino-fp16", "torchscript-fp32"}
    (repo / "README").write_text("y\n")
    git(repo, "commit", "-qam", "docs only")
    done, outputs = plan(repo, "--event", "pull_request", "--base", git(repo, "rev-parse", "HEAD~1"))
    assert done.returncode == 0 and outputs["any"] == "false" and json.loads(outputs["recipes"]) == []


def test_plan_releases_what_the_store_lacks_and_annotates_invalid_recipes(tmp_path: Path, tiny_recipe) -> None:
    repo, base = recipe_repository(tmp_path, tiny_recipe)
    store = tmp_path / "store"
    (store / "other" / "0.1.0").mkdir(parents=True)
    (store / "other" / "0.1.0" / "manifest.json").write_text("{}")  # other 0.1.0 is released; tiny is not
    done, outputs = plan(repo, "--event", "push", "--base", base, "--store", str(store))  # nothing changed since base
    assert done.returncode == 0, done.stdout
    assert [r["name"] for r in json.loads(outputs["recipes"])] == ["tiny"]  # a cancelled run's work is not lost
    data = yaml.safe_load((repo / "recipes" / "other.yaml").read_text())
    (repo / "recipes" / "other.yaml").write_text(yaml.safe_dump({**data, "version": "banana"}, sort_keys=False))
    done, outputs = plan(repo, "--event", "workflow_dispatch", "--store", str(store))
    line = next(i for i, text in enumerate((repo / "recipes/other.yaml").read_text().splitlines(), 1) if text.startswith("version"))
    assert done.returncode == 2 and f"::error file=recipes/other.yaml,line={line}," in done.stdout
    assert [r["name"] for r in json.loads(outputs["recipes"])] == ["tiny"]
    done, _ = plan(repo, "--event", "push", "--base", base, "--store", "oci://127.0.0.1:9/nowhere")
    assert done.returncode == 9 and "::error::the store oci://127.0.0.1:9/nowhere could not be read" in done.stdout


def test_a_failed_build_is_first_in_the_comment_with_its_gates_and_a_refused_token_is_a_warning(tmp_path: Path,
                                                                                                tiny_recipe) -> None:
    strict = yaml.safe_load(tiny_recipe().read_text())
    strict["gates"]["fp16"]["max_abs_error"] = 0.0
    gated = tiny_recipe(strict, name="gated.yaml")
    passing = tiny_recipe({"name": "fine"}, name="fine.yaml")
    store = str(tmp_path / "store")
    done, outputs = action(tmp_path, "build", "--recipes", f"{gated} {passing}", "--store", store)
    assert done.returncode == 4
    results = json.loads(outputs["results"])
    assert [(r["name"], r["passed"]) for r in results] == [("fine", True), ("tiny", False)]
    summary = (tmp_path / "step_summary").read_text()
    assert summary.index("## modelc: fine") < summary.index("<details>")  # verdict first, the report folded
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 3}}))
    others = [{"id": n, "body": "lgtm", "user": {"login": "someone"}} for n in range(1, 131)]  # the bot's is on page 2
    others.append({"id": 500, "body": "<!-- modelc-report -->\nold", "user": {"login": "github-actions[bot]"}})
    github = FakeGitHub(others)
    env = {"GITHUB_API_URL": github.url, "GITHUB_REPOSITORY": "org/models", "GITHUB_EVENT_PATH": str(event), "GITHUB_TOKEN": "t"}
    done, _ = action(tmp_path, "comment", "--store", store, "--results", outputs["results"], "--post", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert github.calls[-1] == "PATCH /repos/org/models/issues/comments/500" and len(github.comments) == 131
    body = github.comments[-1]["body"]
    assert body.index("❌ tiny 0.1.0") < body.index("✅ fine 0.1.0")
    assert "max_abs_error (`logits`)" in body and "| `openvino-fp16` |" in body
    assert "No earlier release of fine" in body
    refused = FakeGitHub(refuse=True)
    done, _ = action(tmp_path, "comment", "--store", store, "--results", outputs["results"], "--post",
                     env={**env, "GITHUB_API_URL": refused.url})
    assert done.returncode == 0 and "::warning::GitHub refused" in done.stdout
    assert "❌ tiny 0.1.0" in (tmp_path / "step_summary").read_text()


def test_a_release_that_passed_its_gates_but_could_not_be_stored_keeps_and_uploads_its_report(tmp_path: Path,
                                                                                              tiny_recipe, signed) -> None:
    recipe = tiny_recipe()
    done, outputs = action(tmp_path, "build", "--recipes", str(recipe), "--store", "oci://127.0.0.1:9/gone", "--push",
                           "--sign", "key", "--signing-key", str(signed["key"]), env={"MODELC_REGISTRY_TIMEOUT": "3"})
    assert done.returncode == 9, done.stdout + done.stderr  # the registry is unreachable
    [result] = json.loads(outputs["results"])
    assert result["error"].startswith("oci://127.0.0.1:9/gone") and result["missed_gates"] == []
    assert outputs["upload"] == str(tmp_path / ".modelc/reports/tiny/0.1.0")
    assert json.loads((tmp_path / ".modelc/reports/tiny/0.1.0/report.json").read_text())["passed"]


def test_plan_routes_each_job_to_its_class_runner_with_the_extras_it_needs(tmp_path: Path, tiny_recipe) -> None:
    repo, _ = recipe_repository(tmp_path, tiny_recipe)
    done, outputs = plan(repo, "--event", "workflow_dispatch", "--cpu-class", "avx512-vnni",
                         "--runners", '{"avx512-vnni": "vnni-runners", "avx2": "ubuntu-latest"}')
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = {job["target"]: job for job in json.loads(outputs["targets"])["include"] if job["name"] == "tiny"}
    assert {(job["label"], job["class"]) for job in jobs.values()} == {("vnni-runners", "avx512-vnni")}
    assert jobs["openvino-fp32"]["extras"] == "graph,openvino" and jobs["onnxruntime-fp32"]["extras"] == "graph"
    assert jobs["torchscript-fp32"]["extras"] == "graph,build"  # TorchScript is made from the torch model
    recipe = next(r for r in json.loads(outputs["recipes"]) if r["name"] == "tiny")
    assert recipe["prepare_extras"] == "build" and recipe["release_extras"] == "release" and recipe["label"] == "vnni-runners"
    unrouted, outputs = plan(repo, "--event", "workflow_dispatch")
    assert {(job["label"], job["class"]) for job in json.loads(outputs["targets"])["include"]} == {("ubuntu-latest", "")}


def test_a_gpu_job_goes_to_its_generations_runner(tmp_path: Path, tiny_recipe) -> None:
    repo, _ = recipe_repository(tmp_path, tiny_recipe)
    data = yaml.safe_load((repo / "recipes" / "tiny.yaml").read_text())
    data["targets"] = [{"backend": "tensorrt", "precisions": ["fp32"], "gpus": ["hopper"]},
                       {"backend": "onnxruntime", "precisions": ["fp32"]}]
    data.pop("gates", None)
    (repo / "recipes" / "tiny.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    git(repo, "commit", "-qam", "tiny on Hopper")
    done, outputs = plan(repo, "--event", "workflow_dispatch", "--runners", '{"gpu-sm90": "h100-runners"}',
                         "--gpu-runner", "any-gpu")
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = {job["target"]: job["label"] for job in json.loads(outputs["targets"])["include"] if job["name"] == "tiny"}
    assert jobs == {"tensorrt-fp32": "h100-runners", "onnxruntime-fp32": "ubuntu-latest"}



def test_pipeline_jobs_print_their_expected_costs_beside_the_measured_ones(tmp_path: Path, tiny_recipe) -> None:
    recipe, store = tiny_recipe(), tmp_path / "store"
    done, _ = action(tmp_path, "build", "--recipes", str(recipe), "--store", str(store), "--share-steps", "--stage", "prepare",
                     "--job-records", str(tmp_path / "jobs"))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = (tmp_path / "step_summary").read_text()
    row = next(line for line in summary.splitlines() if line.startswith("| prepare |"))
    expected, measured = (float(cell) for cell in row.split("|")[2:4])
    assert expected > 0 and measured > 0  # the plan's hints beside what the job's steps took
    assert (tmp_path / "jobs/prepare.json").is_file()
