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
    assert any(a.startswith(f"::error file={gated},line={gate_line},") and "openvino-fp16: max_abs_error on output 'logits'" in a
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

    def __init__(self) -> None:
        self.comments: list[dict[str, Any]] = []
        self.calls: list[str] = []
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
                self._json(200, github.comments)

            def do_POST(self) -> None:  # noqa: N802
                github.calls.append(f"POST {self.path}")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                github.comments.append({"id": 7, "body": body["body"]})
                self._json(201, github.comments[-1])

            def do_PATCH(self) -> None:  # noqa: N802
                github.calls.append(f"PATCH {self.path}")
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                github.comments[0]["body"] = body["body"]
                self._json(200, github.comments[0])

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
        done, _ = action(tmp_path, "comment", "--store", store, "--releases", outputs["releases"], "--post", env=env)
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
