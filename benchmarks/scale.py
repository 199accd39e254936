"""Cost as the work grows: wall time and peak memory of cold builds at 1x, 4x and 16x the evaluation
samples, for three model sizes.

    python benchmarks/scale.py [--models mobilenet_v2,resnet50,encoder_100m] [--base 20] [--factors 1,4,16]

Models: the shipped ImageNet MobileNetV2 (3.5 M parameters, real weights, real photographs), a
ResNet-50 (25.6 M) and a BERT-base-shaped encoder (108.9 M) with seeded random weights
(benchmarks/scale_models.py). Every build is cold (an empty step cache and store) and makes
onnxruntime and OpenVINO fp32 + int8 with all of modelc's checks but the emulated-CPU one, whose
cost is bounded by `verify.emulation_budget_s`, not by the sample count (it would hide the growth).
Images repeat the photo sets when more are asked for than exist; token sentences are seeded random
ids of 32-128 words.

Each build is given the bound as its memory limit (`--max-memory`, 4x the weights file + 1.5 GB;
`--no-limit` leaves the machine's own memory as the limit), as a CI job on a small runner would.
Per build it prints wall seconds, the peak memory of the whole process tree (sampled every 0.2 s)
as the sum of its processes' PSS (what the build occupies: pages the step workers share with the
fork server count once) and, beside it, of their RSS (which counts shared pages once per process),
the peak of the costliest step's own process (the report's per-step figures), and the bound the
issue sets, 4x the FP32 model size + 1.5 GB, judged on the PSS sum. Then, per model, how time and memory grew from the smallest to
the largest sample count against how the samples grew (at most linear: ratio <= 1).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO / "calibration/photos"
GIB = 2**30


@dataclass(frozen=True)
class Model:
    name: str
    parameters_m: float
    model: dict
    data_kind: str  # photos | tokens
    task: dict


MODELS = {
    "mobilenet_v2": Model("mobilenet_v2", 3.5, {
        "source": "torch", "factory": str(REPO / "models/mobilenet_v2.py") + ":build_model",
        "weights": str(REPO / "models/weights/mobilenet_v2-b0353104.pth"),
        "inputs": [{"name": "images", "shape": ["batch", 3, 224, 224]}], "outputs": ["logits"]},
        "photos", {"type": "classification"}),
    "resnet50": Model("resnet50", 25.6, {
        "source": "torch", "factory": str(REPO / "benchmarks/scale_models.py") + ":resnet50",
        "inputs": [{"name": "images", "shape": ["batch", 3, 224, 224]}], "outputs": ["logits"]},
        "photos", {"type": "none"}),
    "encoder_100m": Model("encoder_100m", 108.9, {
        "source": "torch", "factory": str(REPO / "benchmarks/scale_models.py") + ":encoder_100m",
        "inputs": [{"name": "input_ids", "shape": ["batch", "seq"], "dtype": "int64"},
                   {"name": "attention_mask", "shape": ["batch", "seq"], "dtype": "int64"}],
        "outputs": ["embedding"]}, "tokens", {"type": "embedding", "output": "embedding"}),
}


def photo_folder(folder: Path, source: Path, count: int) -> dict:
    folder.mkdir(parents=True)
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    for index in range(count):  # links: the files are read and decoded like any others
        original = files[index % len(files)]
        os.symlink(original, folder / f"{index:05d}{original.suffix}")
    return {"path": str(folder)}


def token_file(path: Path, count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    lines = [" ".join(str(t) for t in [101, *rng.integers(1000, 30000, rng.integers(30, 127)), 102]) for _ in range(count)]
    path.write_text("\n".join(lines) + "\n")
    return {"path": str(path), "tokens": {"ids": "input_ids", "mask": "attention_mask"}}


def weights_file(model: Model) -> Path:
    """A random-weight model's state_dict, saved once (a torch source is a factory plus weights)."""
    import torch

    sys.path.insert(0, str(REPO / "benchmarks"))
    import scale_models

    path = Path(tempfile.gettempdir()) / f"modelc-scale-{model.name}.pt"
    if not path.is_file():
        factory = getattr(scale_models, model.model["factory"].rsplit(":", 1)[1])
        torch.save(factory().state_dict(), path)
    return path


def recipe_for(model: Model, samples: int, folder: Path) -> Path:
    if model.data_kind == "photos":
        data = {"preprocess": {"size": [224, 224], "resize": "stretch", "scale": 1 / 255,
                               "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                "calibration": {"path": str(PHOTOS / "calibration")},
                "evaluation": {**photo_folder(folder / "evaluation", PHOTOS / "evaluation", samples), "batch_size": 32}}
    else:
        data = {"calibration": token_file(folder / "calibration.txt", 128, 1),
                "evaluation": {**token_file(folder / "evaluation.txt", samples, 2), "batch_size": 16}}
    declared = dict(model.model)
    if "weights" not in declared:  # the shipped model has real weights; the others random ones
        declared["weights"] = str(weights_file(model))
    recipe = {"format_version": 1, "name": f"scale-{model.name.replace('_', '-')}", "version": "1.0.0",
              "model": declared, "data": data, "task": model.task,
              "targets": [{"backend": "onnxruntime", "precisions": ["fp32", "int8"]},
                          {"backend": "openvino", "precisions": ["fp32", "int8"]}],
              "verify": {"cpus": []}, "latency": {"runs": 20, "warmup": 3}}
    if model.data_kind == "tokens":
        recipe["quantization"] = {"model_type": "transformer"}
    if model.task["type"] == "none":  # random weights: gated on the tensors alone
        recipe["gates"] = {"int8": {"min_cosine": 0.9}}
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _pss(pid: int) -> int:
    """Proportional set size: a page shared by n processes counts 1/n in each (the forked step
    workers share the fork server's libraries; summing their RSS counts those pages once per
    process)."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        return next(int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:"))


def tree_memory(process: psutil.Process) -> tuple[int, int]:
    """The build's process tree now: the sum of PSS (the memory it occupies) and of RSS."""
    pss = rss = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            rss += member.memory_info().rss
            pss += _pss(member.pid)
        except (psutil.Error, OSError, StopIteration):
            pass
    return pss, rss


def build(recipe: Path, scratch: Path, max_memory: int | None) -> tuple[float, tuple[int, int], dict]:
    """Wall seconds, the peak of the tree's PSS and RSS sums, and the release's report.json of one
    cold build."""
    command = [sys.executable, "-m", "modelc_build", "build", str(recipe), "--store", str(scratch / "store"),
               "--cache", str(scratch / "cache"), "-j", "2"]
    if max_memory is not None:
        command += ["--max-memory", str(max_memory)]
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0, 0]

    def sample() -> None:
        watched = psutil.Process(child.pid)
        while child.poll() is None:
            pss, rss = tree_memory(watched)
            peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = child.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    if child.returncode != 0:
        sys.exit(f"modelc build {recipe} failed (exit {child.returncode}):\n{output[-3000:]}")
    report = json.loads(next((scratch / "store").glob("*/*/report.json")).read_text())
    return seconds, (peak[0], peak[1]), report


def fp32_size(report: dict) -> int:
    return next(a["size_bytes"] for a in report["artifacts"] if a["target"] == "onnxruntime-fp32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--base", type=int, default=20, help="evaluation samples at 1x")
    parser.add_argument("--factors", default="1,4,16")
    parser.add_argument("--no-limit", action="store_true", help="build without --max-memory (the machine's own memory)")
    args = parser.parse_args()
    factors = [int(f) for f in args.factors.split(",")]
    print(f"{'model':<14}{'samples':>8}{'wall s':>9}{'tree PSS MiB':>14}{'tree RSS MiB':>14}{'costliest step':>34}"
          f"{'bound MiB':>11}  within")
    for name in args.models.split(","):
        model = MODELS[name]
        rows = []
        for factor in factors:
            scratch = Path(tempfile.mkdtemp(prefix=f"modelc-scale-{name}-"))
            try:
                samples = args.base * factor
                recipe = recipe_for(model, samples, scratch)
                weights = Path(yaml.safe_load(recipe.read_text())["model"]["weights"])
                limit = None if args.no_limit else int(4 * weights.stat().st_size + 1.5 * GIB)
                seconds, (peak, rss), report = build(recipe, scratch, limit)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            steps = [s for s in report["steps"]["steps"] if s["peak_rss_mib"] is not None]
            worst = max(steps, key=lambda s: s["peak_rss_mib"])
            bound = 4 * fp32_size(report) + 1.5 * GIB
            rows.append((samples, seconds, peak))
            print(f"{name:<14}{samples:>8}{seconds:>9.1f}{peak / 2**20:>14.0f}{rss / 2**20:>14.0f}"
                  f"{worst['id'][:24]:>26} {worst['peak_rss_mib']:>6.0f}{bound / 2**20:>11.0f}  "
                  f"{'yes' if peak <= bound else 'NO'}")
        (s0, t0, m0), (s1, t1, m1) = rows[0], rows[-1]
        growth = s1 / s0
        print(f"{name}: samples x{growth:.0f} -> time x{t1 / t0:.2f} (ratio to linear {t1 / t0 / growth:.2f}), "
              f"peak memory x{m1 / m0:.2f} (ratio to linear {m1 / m0 / growth:.2f}); FP32 model "
              f"{model.parameters_m:.1f} M parameters")


if __name__ == "__main__":
    main()
