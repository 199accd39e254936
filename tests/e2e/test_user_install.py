"""modelc as a user has it: installed into their own virtual environment, made from a Python that
knows nothing of this checkout, and run from their own folder. The emulated pre-VNNI check ran
only inside this checkout: the emulated interpreter was the base one the venv links to, which
cannot see the venv's packages (an editable install's .pth finder is not read from PYTHONPATH)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from modelc_build.emulation import emulator
from tests.conftest import REPO, write_images

SYSTEM_PYTHON = Path("/usr/bin/python3.11")  # Debian's: not the interpreter modelc is installed into here
RUNTIME = ("numpy", "pillow", "onnx", "onnxsim", "onnxruntime")  # an ONNX source builds without torch


def onnx_model(path: Path) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 3)).eval()
    torch.onnx.export(model, (torch.rand(2, 3, 16, 16),), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["installed", "editable"])
def test_a_user_venv_build_in_their_own_folder_runs_the_emulated_check(tmp_path: Path, editable: bool) -> None:
    if emulator() is None:
        pytest.skip("no qemu-x86_64 here (apt-get install qemu-user; .ci/run installs it)")
    if not SYSTEM_PYTHON.is_file():
        pytest.skip(f"{SYSTEM_PYTHON} is not here: a venv of this test's own Python would see its modelc")
    environment = tmp_path / "venv"
    subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(environment)], check=True)
    python = environment / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", *(["-e"] if editable else []), str(REPO), *RUNTIME],
                               capture_output=True, text=True, cwd=tmp_path)
    if installed.returncode != 0:
        pytest.skip(f"cannot install modelc into a fresh venv here: {installed.stderr.strip().splitlines()[-1:]}")
    project = tmp_path / "my-models"  # the user's folder: no modelc_build beside it
    project.mkdir()
    onnx_model(project / "model.onnx")
    write_images(project / "images", 6, size=(16, 16))
    write_images(project / "calibration", 8, size=(24, 20), seed=7)
    recipe = {"format_version": 1, "name": "mine", "version": "1.0.0",
              "model": {"source": "onnx", "path": "model.onnx", "inputs": [{"name": "images", "shape": ["batch", 3, 16, 16]}],
                        "outputs": ["logits"]},
              "data": {"preprocess": {"size": [16, 16]}, "calibration": {"path": "calibration"}, "evaluation": {"path": "images"}},
              "targets": [{"backend": "onnxruntime", "precisions": ["int8"]}], "gates": {"int8": {"min_cosine": 0.9}},
              "latency": {"runs": 0}, "quantization": {"allow_unquantized": True, "onnxruntime_vnni": False},
              "verify": {"cpus": ["Haswell"], "emulate_host_class": True, "emulated_samples": 2}}
    (project / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MODELC_CACHE")}
    built = subprocess.run([str(environment / "bin" / "modelc"), "build", "recipe.yaml", "--store", "store"], cwd=project,
                           capture_output=True, text=True, env=env, timeout=900)
    assert built.returncode == 0, built.stderr
    report = json.loads((project / "store/mine/1.0.0/report.json").read_text())
    [haswell] = [m for m in report["artifacts"][0]["measurements"] if m["emulate"] == "Haswell"]
    assert haswell["problem"] is None, haswell["problem"]  # it ran, and was judged
    assert haswell["emulation"]["class"] == "avx2" and haswell["samples"] == 2
    shutil.rmtree(environment)
