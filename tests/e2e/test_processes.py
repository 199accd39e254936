"""No process outlives a build: its fork server, every step's worker and any emulator end with it,
when it ends normally, fails, or is killed by SIGTERM or SIGKILL mid-step."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_images

REPO = Path(__file__).resolve().parents[2]


def marked(mark: str) -> list[int]:
    """Processes whose environment carries `mark` (a build's processes inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"MODELC_TEST_MARK={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:  # a zombie holds no resources; its parent reaps it
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def gone_within(mark: str, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = marked(mark)
        if not left:
            return []
        time.sleep(0.1)
    return marked(mark)


def slow_recipe(tiny_recipe, tmp_path: Path, **overrides: object) -> Path:
    write_images(tmp_path / "calibration", 16, size=(24, 20))
    base = yaml.safe_load(tiny_recipe().read_text())
    base["data"]["calibration"] = {"path": str(tmp_path / "calibration")}
    base.update({"targets": [{"backend": "openvino", "precisions": ["int8"]}, {"backend": "onnxruntime", "precisions": ["int8"]}],
                 "gates": None, "verify": {"cpus": ["Haswell"], "emulate_host_class": True},
                 "quantization": {"fallback": "off"}, **overrides})  # process hygiene, not quantization, is tested here
    return tiny_recipe(base, name="slow.yaml")


def start(recipe: Path, tmp_path: Path, mark: str) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen([sys.executable, "-m", "modelc_build", "build", str(recipe), "--store", str(tmp_path / "store"),
                                "--cache", str(tmp_path / "cache"), "-v"], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "MODELC_TEST_MARK": mark})
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
    return process, lines


def wait_for(lines: list[str], text: str, process: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not any(text in line for line in lines):
        assert process.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, f"no {text!r} within {seconds} s:\n" + "".join(lines)
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_killed_build_leaves_no_process_behind(tmp_path: Path, tiny_recipe, how: str) -> None:
    mark = uuid.uuid4().hex
    process, lines = start(slow_recipe(tiny_recipe, tmp_path), tmp_path, mark)
    wait_for(lines, "▶ compile:openvino-int8", process)  # a worker is mid-step (NNCF calibration)
    time.sleep(0.5)
    assert len(marked(mark)) >= 3  # the build, its fork server, the worker
    process.send_signal(getattr(signal, how))
    process.wait(timeout=30)
    assert gone_within(mark, 3.0) == [], f"still running 3 s after {how}"


@pytest.mark.slow
def test_an_emulator_mid_check_ends_with_a_killed_build(tmp_path: Path, tiny_recipe) -> None:
    from modelc_build.emulation import emulator

    if emulator() is None:
        pytest.skip("qemu-x86_64 is not installed (apt-get install qemu-user)")
    mark = uuid.uuid4().hex
    process, lines = start(slow_recipe(tiny_recipe, tmp_path), tmp_path, mark)
    wait_for(lines, "@haswell: measure", process)
    time.sleep(1.5)  # the emulator has started
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert gone_within(mark, 3.0) == []


@pytest.mark.slow
@pytest.mark.parametrize("outcome", ["passes", "fails"])
def test_a_build_that_ends_leaves_no_process_behind(tmp_path: Path, tiny_recipe, outcome: str) -> None:
    mark = uuid.uuid4().hex
    gates = {"int8": {"min_cosine": 1.0 if outcome == "fails" else 0.5}}
    process, lines = start(slow_recipe(tiny_recipe, tmp_path, gates=gates, verify={"cpus": []}), tmp_path, mark)
    assert process.wait(timeout=300) == (4 if outcome == "fails" else 0), "".join(lines)
    assert gone_within(mark, 2.0) == []
