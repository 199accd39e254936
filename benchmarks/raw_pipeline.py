"""Overhead of modelc against the same work written as a plain script.

    python benchmarks/raw_pipeline.py [--recipe recipes/yolo.yaml] [--repeats 3]

Runs, alternately in fresh processes, (a) a plain script doing what recipes/yolo.yaml builds:
export -> onnxsim -> OpenVINO FP32, FP16 and INT8 (NNCF with accuracy control scored by mAP@0.5)
-> ModelOpt Q/DQ INT8 for onnxruntime -> TorchScript FP32 and FX INT8 (decode heads float), plus
the same accuracy and latency work (reference and every artifact over the evaluation set, 30
batch-1 runs each), and (b) `modelc build` of the recipe into
a temporary store with an empty step cache, with `-j 2` (independent steps and per-artifact
verification side by side). Prints the median wall time of each and the ratio modelc / plain
(target <= 0.8 on 2 cores).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from timing import print_ratio, timed

REPO = Path(__file__).resolve().parent.parent

PLAIN = r'''
import sys, time, statistics, pathlib, warnings, io, contextlib
import numpy as np, torch, onnx, onnxsim, onnxruntime as ort, openvino as ov
from PIL import Image
sys.path.insert(0, sys.argv[2])
from models.tiny_yolo import build_model
from modelc_build.preprocess import Preprocess, preprocess_image
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
from modelc_build.accuracy import task_metric
from modelc_build.data import DataReader
from modelc_build.recipe import load_recipe
recipe = load_recipe(pathlib.Path(sys.argv[2]) / "recipes/yolo.yaml")
evaluation = DataReader(recipe.evaluation, recipe.model.inputs, recipe.preprocess, recipe.task.classes)
def validate(compiled, batches):
    return task_metric(lambda feed: {"detections": compiled(feed)[0]}, batches, recipe.model.inputs, recipe.task, "detections") / 100
with contextlib.redirect_stdout(io.StringIO()):
    quantized = nncf.quantize_with_accuracy_control(ov.convert_model(str(out / "model.onnx")), nncf.Dataset(calibration),
        nncf.Dataset(list(evaluation.batches()), lambda b: b.inputs["images"]), validation_fn=validate, max_drop=0.01,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration))
ov.save_model(quantized, str(out / "int8.xml"), compress_to_fp16=False)
from modelopt.onnx.quantization import quantize
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    quantize(str(out / "model.onnx"), quantize_mode="int8", calibration_data={"images": np.concatenate(calibration)},
             calibration_method="entropy", calibration_eps=["cpu"], high_precision_dtype="fp32", dq_only=True,
             output_path=str(out / "qdq.onnx"), log_level="ERROR")
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
torch.backends.quantized.engine = "x86"
mapping = get_default_qconfig_mapping("x86").set_module_name("head_small", None).set_module_name("head_large", None).set_object_type(torch.cat, None)
with torch.no_grad(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.jit.save(torch.jit.freeze(torch.jit.trace(model, (x,), check_trace=False).eval()), str(out / "model.pt"))
    fresh = build_model(); fresh.load_state_dict(model.state_dict()); fresh.eval()
    prepared = prepare_fx(fresh, mapping, (x,))
    for sample in calibration: prepared(torch.from_numpy(sample))
    torch.jit.save(torch.jit.freeze(torch.jit.trace(convert_fx(prepared), (x,), check_trace=False).eval()), str(out / "int8.pt"))
spec = Preprocess(128, 128, resize="letterbox")
files = sorted(pathlib.Path(sys.argv[3]).glob("*.png"))
core = ov.Core()
runners = {name: ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"]).run
           for name, f in (("ort", "model.onnx"), ("ort-int8", "qdq.onnx"))}
for p in ("fp32", "fp16", "int8"):
    compiled = core.compile_model(str(out / f"{p}.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runners[p] = (lambda c: (lambda names, feed: [c(feed)[0]]))(compiled)
script = torch.jit.load(str(out / "model.pt"))
def run_torch(m):
    return lambda names, feed: [m(torch.from_numpy(feed["images"])).numpy()]
runners["ts"] = run_torch(script)
runners["ts-int8"] = run_torch(torch.jit.load(str(out / "int8.pt")))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="recipes/yolo.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    plain, modelc = [], []
    evaluation = REPO / "calibration/shapes-detect/evaluation"
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as scratch:
            plain.append(timed([sys.executable, "-c", PLAIN, scratch, str(REPO), str(evaluation)], REPO))
        with tempfile.TemporaryDirectory() as scratch:
            modelc.append(timed([sys.executable, "-m", "modelc_build", "build", args.recipe, "--store", f"{scratch}/store",
                                 "--cache", f"{scratch}/cache", "-j", str(args.jobs)], REPO))  # cold: an empty cache

    print_ratio(("plain script", plain), ("modelc build", modelc), "modelc / plain", "target <= 0.8 with -j 2")


if __name__ == "__main__":
    main()
