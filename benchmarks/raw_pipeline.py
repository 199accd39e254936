"""Overhead of modelc against the same work written as a plain script.

    python benchmarks/raw_pipeline.py [--recipe recipes/yolo.yaml] [--repeats 3]

Runs, alternately in fresh processes, (a) a plain script doing export -> onnxsim -> OpenVINO FP32,
FP16 and NNCF INT8 -> TorchScript trace (what recipes/yolo.yaml builds), plus the same accuracy and latency work (reference and every
artifact over the evaluation set, 30 batch-1 runs each), and (b) `modelc build` of the recipe into
a temporary store with an empty step cache. Prints the median wall time of each and the ratio modelc / plain (target <= 1.10).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PLAIN = r'''
import sys, time, statistics, pathlib, warnings, io, contextlib
import numpy as np, torch, onnx, onnxsim, onnxruntime as ort, openvino as ov
from PIL import Image
sys.path.insert(0, sys.argv[2])
from models.tiny_yolo import build_model
from compiler.preprocess import Preprocess, preprocess_image
out = pathlib.Path(sys.argv[1])
model = build_model(); model.load_state_dict(torch.load(f"{sys.argv[2]}/models/tiny_yolo.pt", weights_only=True)); model.eval()
x = torch.rand(1, 3, 128, 128)
with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
    warnings.simplefilter("ignore")
    torch.onnx.export(model, (x,), str(out / "raw.onnx"), input_names=["images"], output_names=["detections"], opset_version=18,
                      dynamo=True, external_data=False, verbose=False, dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
simplified, ok = onnxsim.simplify(onnx.load(str(out / "raw.onnx"))); onnx.save(simplified, str(out / "model.onnx"))
for precision in ("fp32", "fp16"):
    ov.save_model(ov.convert_model(str(out / "model.onnx")), str(out / f"{precision}.xml"), compress_to_fp16=precision == "fp16")
import nncf
spec = Preprocess(128, 128, resize="letterbox")
calibration = [preprocess_image(Image.open(f), spec)[0][None] for f in sorted(pathlib.Path(sys.argv[3]).parent.joinpath("calibration").glob("*.png"))]
quantized = nncf.quantize(ov.convert_model(str(out / "model.onnx")), nncf.Dataset(calibration), subset_size=len(calibration))
ov.save_model(quantized, str(out / "int8.xml"), compress_to_fp16=False)
with torch.no_grad():
    torch.jit.save(torch.jit.freeze(torch.jit.trace(model, (x,), check_trace=False).eval()), str(out / "model.pt"))
spec = Preprocess(128, 128, resize="letterbox")
files = sorted(pathlib.Path(sys.argv[3]).glob("*.png"))
core = ov.Core()
runners = {"ort": ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run}
for p in ("fp32", "fp16", "int8"):
    compiled = core.compile_model(str(out / f"{p}.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runners[p] = (lambda c: (lambda names, feed: [c(feed)[0]]))(compiled)
script = torch.jit.load(str(out / "model.pt"))
def run_torch(m):
    return lambda names, feed: [m(torch.from_numpy(feed["images"])).numpy()]
runners["ts"] = run_torch(script)
reference = run_torch(model)
with torch.no_grad():
    for start in range(0, len(files), 16):
        batch = np.stack([preprocess_image(Image.open(f), spec)[0] for f in files[start:start + 16]])
        expected = reference(None, {"images": batch})[0]
        for run in runners.values():
            got = run(None, {"images": batch})[0]
            float(np.abs(got - expected).max())
    one = {"images": batch[:1]}
    for run in [reference, *runners.values()]:
        for _ in range(5): run(None, one)
        statistics.median([(time.perf_counter(), run(None, one), time.perf_counter())[2] for _ in range(30)])
'''


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/yolo.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    plain, modelc = [], []
    evaluation = REPO / "calibration/shapes-detect/evaluation"
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as scratch:
            plain.append(timed([sys.executable, "-c", PLAIN, scratch, str(REPO), str(evaluation)]))
        with tempfile.TemporaryDirectory() as scratch:
            modelc.append(timed([sys.executable, "-m", "compiler", "build", args.recipe, "--store", f"{scratch}/store",
                                 "--cache", f"{scratch}/cache"]))  # cold: an empty step cache every time
    p, m = statistics.median(plain), statistics.median(modelc)
    print(f"plain script : median {p:.2f} s  runs {[round(t, 2) for t in plain]}")
    print(f"modelc build : median {m:.2f} s  runs {[round(t, 2) for t in modelc]}")
    print(f"ratio modelc / plain: {m / p:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
