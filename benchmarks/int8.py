"""INT8 on a real trained model, measured in one run: modelc's artifacts beside hand-made ones.

    python models/fetch_mobilenet_v2.py && python benchmarks/int8.py [--recipe recipes/mobilenet_v2.yaml]

1. `modelc build` of the recipe, cold (empty cache, temporary store), `-j 2`: per artifact the
   output cosine against the reference, top-1 agreement, reference top-1 within the artifact's
   top-5, agreement where the reference is confident, the same on an emulated Haswell (QEMU user
   mode: AVX2 without VNNI, pre-VNNI INT8 kernels; on the first `--emulated-samples` evaluation
   samples, emulated whatever this machine is), calibration samples, the compile step's wall time (quantization for int8) and
   the INT8/FP32 latency ratio of the same backend (p50, batch 1);
2. hand-made quantizations of the same simplified graph on the same calibration and evaluation
   data, with each library's defaults: `nncf.quantize` (OpenVINO) and onnxruntime `quantize_static`
   (QDQ, per-channel, MinMax), measured the same way, so each modelc artifact can be held against
   the baseline (target: no worse by more than 0.005 cosine).
Latencies are batch-1 medians over 50 runs after 10 warm-up runs, threads as the runtime chooses.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from modelc_build.data import DataReader  # noqa: E402
from modelc_build.plan import data_source  # noqa: E402
from modelc_build.recipe import load_recipe  # noqa: E402


def emulating_everywhere(recipe: Path, scratch: Path, samples: int) -> Path:
    """The recipe with every INT8 artifact also checked on an emulated Haswell, on any machine."""
    import yaml

    data = yaml.safe_load(recipe.read_text())
    data["verify"] = {**(data.get("verify") or {}), "cpus": ["Haswell"], "emulate_host_class": True,
                      "emulated_samples": samples, "emulation_budget_s": 1800}
    copy = recipe.parent / f".benchmark-{recipe.name}"  # beside it: its relative paths still hold
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    return copy


def build(recipe: Path, scratch: Path) -> tuple[dict[str, Any], dict[str, float], Path]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "modelc_build", "build", str(recipe), "--store", f"{scratch}/store",
                             "--cache", f"{scratch}/cache", "--reports-dir", f"{scratch}/failed", "-j", "2"],
                            cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    steps = {m.group(1): float(m.group(2)) for m in re.finditer(r"^✓ (\S+) \(([\d.]+) s,", result.stderr, re.M)}
    steps["build"] = wall
    reports = list(Path(scratch).glob("*/*/*/report.json"))
    if not reports:
        sys.exit(f"the build failed:\n{result.stderr[-2000:]}")
    return json.loads(reports[0].read_text()), steps, reports[0].parent


def agreement(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    a, b = reference.ravel().astype(np.float64), got.ravel().astype(np.float64)
    expected = reference.argmax(axis=1)
    top5 = np.argsort(-got, axis=1)[:, :5]
    sure = softmax(reference).max(axis=1) >= 0.5
    return {"cosine": float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)),
            "top1": 100.0 * float((got.argmax(axis=1) == expected).mean()),
            "top5": 100.0 * float((top5 == expected[:, None]).any(axis=1).mean()),
            "confident": 100.0 * float((got.argmax(axis=1)[sure] == expected[sure]).mean())}


def latency(run: Callable[[np.ndarray], Any], sample: np.ndarray) -> float:
    for _ in range(10):
        run(sample)
    times = []
    for _ in range(50):
        started = time.perf_counter()
        run(sample)
        times.append(time.perf_counter() - started)
    return 1000.0 * float(np.median(times))


def hand_made(graph: Path, calibration: np.ndarray, evaluation: np.ndarray, scratch: Path) -> dict[str, dict[str, Any]]:
    """The libraries' own defaults, on the same graph and data."""
    import nncf
    import onnxruntime as ort
    import openvino as ov
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    core = ov.Core()
    pinned = {"INFERENCE_PRECISION_HINT": "f32"}
    results: dict[str, dict[str, Any]] = {}

    def ov_outputs(model: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
        compiled = core.compile_model(model, "CPU", pinned)
        return np.concatenate([compiled(evaluation[i:i + 32])[0] for i in range(0, len(evaluation), 32)]), compiled

    reference, fp32 = ov_outputs(core.read_model(str(graph)))
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        quantized = nncf.quantize(core.read_model(str(graph)), nncf.Dataset([c[None] for c in calibration]),
                                  subset_size=len(calibration))
    seconds = time.perf_counter() - started
    outputs, compiled = ov_outputs(quantized)
    results["openvino"] = {**agreement(reference, outputs), "seconds": seconds,
                           "ratio": latency(compiled, evaluation[:1]) / latency(fp32, evaluation[:1])}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"images": calibration[i:i + 16]} for i in range(0, len(calibration), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    prepared, out = scratch / "prepared.onnx", scratch / "ort-int8.onnx"
    started = time.perf_counter()
    quant_pre_process(str(graph), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    seconds = time.perf_counter() - started
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    float_session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    outputs = np.concatenate([session.run(None, {"images": evaluation[i:i + 32]})[0] for i in range(0, len(evaluation), 32)])
    ort_reference = np.concatenate([float_session.run(None, {"images": evaluation[i:i + 32]})[0]
                                    for i in range(0, len(evaluation), 32)])
    results["onnxruntime"] = {**agreement(ort_reference, outputs), "seconds": seconds,
                              "ratio": latency(lambda x: session.run(None, {"images": x}), evaluation[:1])
                              / latency(lambda x: float_session.run(None, {"images": x}), evaluation[:1])}
    return results


def read_all(recipe_path: Path, role: str) -> np.ndarray:
    recipe = load_recipe(recipe_path)
    source = data_source(recipe, role)
    assert source.dataset is not None
    reader = DataReader(source.dataset, source.inputs, source.preprocess, source.classes)
    return np.concatenate([batch.inputs["images"] for batch in reader.batches()])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes/mobilenet_v2.yaml")
    parser.add_argument("--emulated-samples", type=int, default=64, help="evaluation samples run on the emulated Haswell")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        recipe = emulating_everywhere(args.recipe.resolve(), scratch, args.emulated_samples)
        try:
            report, steps, release = build(recipe, scratch)
        finally:
            recipe.unlink()
        baselines = hand_made(release / "onnx/model.onnx", read_all(args.recipe, "calibration"),
                              read_all(args.recipe, "evaluation"), scratch)
    print(f"machine: {report['machine']['cpu']}, ISA {', '.join(report['machine']['isa'])} "
          f"(class {report['machine']['kernel_class']}); evaluation {report['samples']} samples; cold build -j 2: "
          f"{steps['build']:.1f} s, of which emulated checks {sum(v for k, v in steps.items() if k.endswith('@haswell')):.1f} s "
          "of step time")
    print("| artifact | cosine | top-1 agr. % | top-5 cont. % | confident agr. % | Haswell cosine | Haswell top-5 % "
          "| Haswell samples | Haswell vs native cosine | calib. samples | compile s | p50 ms | INT8/FP32 | hand-made cosine | Δ cosine "
          "| hand-made top-5 % | hand-made INT8/FP32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for a in report["artifacts"]:
        free = (a["task_metric"] or {}).get("label_free", {})
        haswell = next((m for m in a["measurements"] if m["emulate"] == "Haswell" and not m["problem"]), None)
        emulated = "— | — | — | — |"
        if haswell:
            top5 = ((haswell["task_metric"] or {}).get("label_free") or {}).get("top5_containment")
            versus = haswell["emulation"]["versus_native"][0]["cosine"]  # the same samples run natively
            emulated = (f"{haswell['outputs'][0]['cosine']:.4f} | {'—' if top5 is None else f'{top5:.1f}'} "
                        f"| {haswell['samples']} | {versus:.4f} |")
        q = a["quantization"] or {}
        base = baselines.get(a["backend"]) if a["precision"] == "int8" else None
        cosine = a["outputs"][0]["cosine"]
        print(f"| {a['target']} | {cosine:.4f} | {free.get('top1_agreement', 0):.1f} | {free.get('top5_containment', 0):.1f} "
              f"| {free.get('confident_agreement', 0):.1f} | {emulated}", end="")
        ratio = a.get("int8_latency_ratio")
        print(f" {q.get('calibration_samples', '—')} | {steps.get('compile:' + a['target'], float('nan')):.1f} "
              f"| {a['latency_ms']:.2f} | {'—' if ratio is None else f'{ratio:.2f}'} |", end="")
        if base:
            print(f" {base['cosine']:.4f} | {cosine - base['cosine']:+.4f} | {base['top5']:.1f} | {base['ratio']:.2f} |")
        else:
            print(" — | — | — | — |")
    for flag in report["flags"]:
        print(f"flag: {flag}")


if __name__ == "__main__":
    main()
