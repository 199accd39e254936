"""The slim core: a deploy stage installs `modelc-build` without extras into a fresh virtual
environment and pulls and verifies a signed release, with no torch anywhere."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.test_deploy import signed_release

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_core_install_pulls_and_verifies_without_torch(tmp_path: Path, registry, signed: dict[str, Path]) -> None:
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

    # a deploy stage with its runtime: the core and onnxruntime, still no torch, proves a real release here
    real = tmp_path / "real-store"
    shutil.copytree(signed["release"], real / "tiny/0.1.0")
    no_runtime = subprocess.run([str(modelc), "verify", str(real / "tiny/0.1.0"), "--public-key", str(signed["pub"]),
                                 "--run", "--target", "onnxruntime-int8"], capture_output=True, text=True)
    assert no_runtime.returncode == 6 and "pip install 'modelc-build[onnxruntime]'" in no_runtime.stderr, no_runtime.stderr
    extra = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{REPO}[onnxruntime]"], capture_output=True, text=True)
    if extra.returncode != 0:
        pytest.skip(f"cannot install the onnxruntime extra here: {extra.stderr.strip().splitlines()[-1:]}")
    assert subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode != 0
    checked = subprocess.run([str(modelc), "pull", "tiny:0.1.0", "--store", str(real), "--target", "onnxruntime-int8",
                              "--dest", str(tmp_path / "int8"), "--public-key", str(signed["pub"]), "--check"],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "onnxruntime-int8 on " in checked.stdout and "4 golden samples" in checked.stdout and "[pass]" in checked.stdout
    every = subprocess.run([str(modelc), "verify", str(real / "tiny/0.1.0"), "--public-key", str(signed["pub"]), "--run"],
                           capture_output=True, text=True)
    assert every.returncode == 0, every.stderr  # the ones whose runtime is absent are said so, not failed
    assert "openvino-fp32: not run here" in every.stdout and "modelc-build[openvino-runtime]" in every.stdout
