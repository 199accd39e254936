"""onnxruntime INT8 layouts side by side, in one run: speed on this CPU, accuracy on this CPU and on
an emulated Haswell (AVX2, no VNNI), so the layout each CPU class gets is chosen by numbers.

    python models/fetch_mobilenet_v2.py && python benchmarks/onnxruntime_int8.py [--recipe recipes/mobilenet_v2.yaml]

1. the recipe's simplified ONNX graph, from a `modelc build` of its onnxruntime fp32 target;
2. modelc's onnxruntime quantization (QDQ, per channel, MinMax with a moving average, the stem
   and any float head kept float) calibrated once and written in each layout: u8u8, u8s8,
   u8s8-7bit (reduce_range), s8s8;
3. per layout, against the FP32 graph on the evaluation set: output cosine and the task's
   agreement (top-5 containment, or mAP@0.5 against the reference's detections); batch-1 p50
   latency over 50 runs after 10 warm-up, INT8/FP32 ratio, runtime's default threads; the same
   accuracy on the first `--emulated-samples` samples under `qemu-x86_64 -cpu Haswell`
   (emulation's speed says nothing, so it is not timed).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from modelc_build.accuracy import score  # noqa: E402
from modelc_build.backends import CompileRequest  # noqa: E402
from modelc_build.backends.onnxruntime import INT8_FORMATS, OnnxRuntimeRunner, quantize_for_cpu  # noqa: E402
from modelc_build.data import DataReader  # noqa: E402
from modelc_build.emulation import emulator, run_emulated  # noqa: E402
from modelc_build.feeds import ModelCaller  # noqa: E402
from modelc_build.host import cpu_info  # noqa: E402
from modelc_build.plan import data_source  # noqa: E402
from modelc_build.recipe import load_recipe  # noqa: E402
from modelc_build.recipe_types import Target  # noqa: E402
from modelc_build.steps.verify import one_sample_at_a_time  # noqa: E402


def float_graph(recipe: Path, scratch: Path) -> Path:
    data = yaml.safe_load(recipe.read_text())
    data.update(targets=[{"backend": "onnxruntime", "precisions": ["fp32"]}], latency={"runs": 0, "warmup": 0},
                verify={"cpus": [], "golden_samples": 0})
    data.pop("gates", None)
    data.pop("quantization", None)  # read by this script, not by the float build
    copy = recipe.parent / f".benchmark-{recipe.name}"
    copy.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        done = subprocess.run([sys.executable, "-m", "modelc_build", "build", str(copy), "--store", str(scratch / "store"),
                               "--cache", str(scratch / "cache"), "-j", "2"], cwd=REPO, capture_output=True, text=True)
    finally:
        copy.unlink()
    graphs = list((scratch / "store").glob("*/*/onnx/model.onnx"))
    if done.returncode != 0 or not graphs:
        sys.exit(f"the float build failed:\n{done.stderr[-2000:]}")
    return graphs[0]


def latency_ms(runner: OnnxRuntimeRunner, feed: dict[str, np.ndarray]) -> float:
    for _ in range(10):
        runner.infer(feed)
    times = []
    for _ in range(50):
        started = time.perf_counter()
        runner.infer(feed)
        times.append(time.perf_counter() - started)
    return 1000.0 * float(np.median(times))


def headline(evaluation: Any) -> str:
    free = evaluation.task.label_free if evaluation.task else {}
    if "top5_containment" in free:
        return f"{free['top5_containment']:.1f}"
    return f"{free['reference_map50']:.2f}" if "reference_map50" in free else "—"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes/mobilenet_v2.yaml")
    parser.add_argument("--emulated-samples", type=int, default=32)
    args = parser.parse_args()
    recipe = load_recipe(args.recipe.resolve())
    inputs, outputs, task = recipe.model.inputs, recipe.model.outputs, recipe.task
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        graph = float_graph(args.recipe.resolve(), scratch)
        calibration = data_source(recipe, "calibration")
        assert calibration.dataset is not None
        reader = DataReader(calibration.dataset, calibration.inputs, calibration.preprocess, calibration.classes)
        files = {name: scratch / f"{name}.onnx" for name in INT8_FORMATS}
        started = time.perf_counter()
        request = CompileRequest(Target("onnxruntime", "int8"), graph, inputs, outputs, scratch, None,
                                 lambda: (b.inputs for b in reader.batches()), recipe.quantization)
        quantize_for_cpu(request, files)
        print(f"calibrated once and wrote {len(files)} layouts in {time.perf_counter() - started:.1f} s")
        evaluation = data_source(recipe, "evaluation")
        assert evaluation.dataset is not None
        batches = list(DataReader(evaluation.dataset, evaluation.inputs, evaluation.preprocess, evaluation.classes).batches())
        with OnnxRuntimeRunner(graph, inputs, outputs) as fp32:
            call = ModelCaller(inputs, fp32.infer)
            expected = [call(b.inputs) for b in batches]
            feed = ModelCaller(inputs, fp32.infer).first_feed(batches[0].inputs)
            fp32_ms = latency_ms(fp32, feed)
        samples = list(one_sample_at_a_time(iter(zip(batches, expected))))[:args.emulated_samples]
        qemu = emulator()
        host = cpu_info()
        print(f"machine: {host['cpu']} ({host['kernel_class']}); FP32 p50 {fp32_ms:.2f} ms; evaluation "
              f"{sum(len(b) for b in batches)} samples; emulated Haswell on {len(samples)}")
        print("| layout | cosine | task | p50 ms | INT8/FP32 | Haswell cosine | Haswell task | Haswell vs native cosine |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, file in files.items():
            with OnnxRuntimeRunner(file, inputs, outputs) as runner:
                call = ModelCaller(inputs, runner.infer)
                got = [call(b.inputs) for b in batches]
                ms = latency_ms(runner, feed)
                native_subset = [call(b.inputs) for b, _ in samples]
            native = score(((b, e, {"x": g}) for b, e, g in zip(batches, expected, got)), ("x",), outputs, task)["x"]
            row = f"| {name} | {native.outputs[0].cosine:.4f} | {headline(native)} | {ms:.2f} | {ms / fp32_ms:.2f} |"
            if qemu is None:
                print(row + " — | — | — |")
                continue
            run = run_emulated(qemu, "Haswell", "onnxruntime", [file], {}, inputs, outputs,
                               [b.inputs for b, _ in samples], 3600.0, scratch / f"emulated-{name}")
            emulated = score(((b, e, {"x": g}) for (b, e), g in zip(samples, run.outputs)), ("x",), outputs, task,
                             whole_set=False)["x"]
            a = np.concatenate([o[outputs[0]].ravel() for o in run.outputs]).astype(np.float64)
            b = np.concatenate([o[outputs[0]].ravel() for o in native_subset[:len(run.outputs)]]).astype(np.float64)
            versus = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
            print(row + f" {emulated.outputs[0].cosine:.4f} | {headline(emulated)} | {versus:.4f} |"
                  + (f" (emulation broken: {run.broken})" if run.broken else ""))


if __name__ == "__main__":
    main()
