"""The slim core: a deploy stage installs `modelc-build` without extras into a fresh virtual
environment and pulls and verifies a signed release, with no torch anywhere."""
from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.test_deploy import signed_release

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_core_install_pulls_and_verifies_without_torch(tmp_path: Path, registry) -> None:
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO)], capture_output=True, text=True)
    if installed.returncode != 0:
        pytest.skip(f"cannot install the core from the package index here: {installed.stderr.strip().splitlines()[-1:]}")
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0
    assert subprocess.run([str(python), "-c", "import numpy"], capture_output=True).returncode != 0
    size_mb = sum(p.stat().st_size for p in environment.rglob("*") if p.is_file()) / 1e6
    print(f"core venv: {size_mb:.0f} MB")

    signed_release(tmp_path, {"onnx/model.onnx": b"graph" * 1000, "report.json": b"{}", "report.md": b"# r"})
    from modelc_build.stores import open_store

    stored = tmp_path / "store/m/1.0"
    registry_url = registry.url("core")
    open_store(registry_url).push(stored, "m", "1.0", json.loads((stored / "manifest.json").read_text())["content_digest"])
    modelc = environment / "bin" / "modelc"
    from_registry = subprocess.run([str(modelc), "pull", "m:1.0", "--store", registry_url, "--target", "onnx", "--dest",
                                    str(tmp_path / "from-registry"), "--public-key", str(tmp_path / "key.pub")],
                                   capture_output=True, text=True)
    assert from_registry.returncode == 0, from_registry.stderr
    assert (tmp_path / "from-registry/onnx/model.onnx").read_bytes() == b"graph" * 1000
    pulled = subprocess.run([str(modelc), "pull", "m:1.0", "--store", str(tmp_path / "store"), "--dest",
                             str(tmp_path / "deploy"), "--public-key", str(tmp_path / "key.pub"), "--json"],
                            capture_output=True, text=True)
    assert pulled.returncode == 0, pulled.stderr
    assert "onnx/model.onnx" in json.loads(pulled.stdout)["files"]
    verified = subprocess.run([str(modelc), "verify", str(tmp_path / "deploy"), "--public-key", str(tmp_path / "key.pub")],
                              capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    listed = subprocess.run([str(modelc), "ls", "--store", str(tmp_path / "store")], capture_output=True, text=True)
    assert listed.stdout == "m 1.0\n"
    building = subprocess.run([str(modelc), "build", str(REPO / "recipes/classifier.yaml"), "--store", str(tmp_path / "s")],
                              capture_output=True, text=True, cwd=tmp_path)
    assert building.returncode == 6, building.stderr
    assert "modelc-build[build]" in building.stderr and "Traceback" not in building.stderr
    assert sys.executable != str(python)
