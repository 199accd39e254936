"""Overhead of modelc against the same work written as a plain script.

    python benchmarks/raw_pipeline.py [--repeats 3] [--jobs 2]

Runs, alternately in fresh processes, (a) a plain script that makes and checks what
recipes/yolo.yaml releases, the simplest way a person would write it, and (b) `modelc build` of the
recipe into a temporary store with an empty step cache, with `-j 2`. Prints the median wall time of
each and the ratio modelc / plain (target <= 0.8 on 2 cores).

The plain script's deliverables are the recipe's, one for one:
- export (dynamo, opset 18, dynamic batch) -> onnxsim;
- onnxruntime FP32, and INT8 in two layouts (u8u8 for every x86 CPU, u8s8 for VNNI CPUs: static
  QDQ, per-channel, MinMax on the calibration images);
- OpenVINO FP32, FP16 and INT8 (NNCF with accuracy control scored by mAP@0.5, overflow fix on);
- TorchScript FP32 (trace, frozen);
- the reference and every artifact over the evaluation set at batch 16, with output agreement and
  mAP@0.5 each; OpenVINO's artifacts again with the CPU's own default precision;
- both INT8 artifacts on an emulated Haswell (QEMU user mode, one process for both, the first 16
  evaluation samples) compared with the reference, as modelc's verify.cpus default does;
- batch-1 latency of the reference and each artifact (5 warm-up, 30 timed runs);
- a golden set (8 samples and the reference's outputs) and a sha256 list of the files.
It does not sign, write reports or keep a step cache; modelc does all three within its time.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from timing import print_ratio, timed, timed_with_output

REPO = Path(__file__).resolve().parent.parent
RECIPE = "recipes/yolo.yaml"  # what the plain script is written for

PLAIN = r'''
import sys, time, statistics, pathlib, warnings, io, contextlib, hashlib, json, os, subprocess
import numpy as np, torch, onnx, onnxsim, onnxruntime as ort, openvino as ov
from PIL import Image
out, repo = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
sys.path.insert(0, str(repo))
from models.tiny_yolo import build_model
from modelc_build.accuracy import task_metric
from modelc_build.data import DataReader
from modelc_build.preprocess import preprocess_image
from modelc_build.recipe_types import Preprocess
from modelc_build.recipe import load_recipe
recipe = load_recipe(repo / "recipes/yolo.yaml")
model = build_model(); model.load_state_dict(torch.load(repo / "models/tiny_yolo.pt", weights_only=True)); model.eval()
x = torch.rand(1, 3, 128, 128)
# 1. export, simplify
with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
    warnings.simplefilter("ignore")
    torch.onnx.export(model, (x,), str(out / "raw.onnx"), input_names=["images"], output_names=["detections"], opset_version=18,
                      dynamo=True, external_data=False, verbose=False, dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
simplified, ok = onnxsim.simplify(onnx.load(str(out / "raw.onnx"))); onnx.save(simplified, str(out / "model.onnx"))
# 2. data: calibration images, evaluation batches of 16 with labels
spec = Preprocess(128, 128, resize="letterbox")
calibration = [preprocess_image(Image.open(f), spec)[0][None] for f in sorted((repo / "calibration/shapes-detect/calibration").glob("*.png"))]
evaluation = list(DataReader(recipe.evaluation, recipe.model.inputs, recipe.preprocess, recipe.task.classes).batches())
# 3. onnxruntime INT8: u8u8 for every x86 CPU, u8s8 for VNNI CPUs
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
class Feeds(CalibrationDataReader):
    def __init__(self): self.left = iter(np.concatenate(calibration)[i:i + 16] for i in range(0, len(calibration), 16))
    def get_next(self):
        batch = next(self.left, None)
        return None if batch is None else {"images": batch}
quant_pre_process(str(out / "model.onnx"), str(out / "prepared.onnx"), skip_symbolic_shape=True)
for name, weights in (("u8u8.onnx", QuantType.QUInt8), ("u8s8.onnx", QuantType.QInt8)):
    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(str(out / "prepared.onnx"), str(out / name), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=weights, calibrate_method=CalibrationMethod.MinMax)
# 4. OpenVINO FP32, FP16, INT8 (NNCF, accuracy control on mAP@0.5, overflow fix on every layer)
for precision in ("fp32", "fp16"):
    ov.save_model(ov.convert_model(str(out / "model.onnx")), str(out / f"{precision}.xml"), compress_to_fp16=precision == "fp16")
import nncf
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
def validate(compiled, batches):
    return task_metric(lambda feed: {"detections": compiled(feed)[0]}, batches, recipe.model.inputs, recipe.task, "detections") / 100
with contextlib.redirect_stdout(io.StringIO()):
    quantized = nncf.quantize_with_accuracy_control(ov.convert_model(str(out / "model.onnx")), nncf.Dataset(calibration),
        nncf.Dataset(evaluation, lambda b: b.inputs["images"]), validation_fn=validate, max_drop=0.01,
        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
        advanced_quantization_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))
ov.save_model(quantized, str(out / "int8.xml"), compress_to_fp16=False)
# 5. TorchScript FP32
with torch.no_grad(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.jit.save(torch.jit.freeze(torch.jit.trace(model, (x,), check_trace=False).eval()), str(out / "model.pt"))
# 6. accuracy: reference and every artifact over the evaluation set, agreement and mAP@0.5
vnni = "avx512_vnni" in pathlib.Path("/proc/cpuinfo").read_text()
core = ov.Core()
def ov_runner(f, config):
    compiled = core.compile_model(str(out / f), "CPU", config)
    return lambda feed: {"detections": compiled(feed)[0]}
def ort_runner(f):
    session = ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
    return lambda feed: {"detections": session.run(None, feed)[0]}
def torch_runner(m):
    return lambda feed: {"detections": m(torch.from_numpy(feed["images"])).numpy()}
runners = {"ort-fp32": ort_runner("model.onnx"), "ort-int8": ort_runner("u8s8.onnx" if vnni else "u8u8.onnx"),
           "ts-fp32": torch_runner(torch.jit.load(str(out / "model.pt")))}
for p in ("fp32", "fp16", "int8"):
    runners[f"ov-{p}"] = ov_runner(f"{p}.xml", {"INFERENCE_PRECISION_HINT": "f32"})
    runners[f"ov-{p}-default"] = ov_runner(f"{p}.xml", {})
reference = torch_runner(model)
def cosine(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
with torch.no_grad():
    expected = [reference(b.inputs)["detections"] for b in evaluation]
    results = {}
    for name, run in runners.items():
        got = [run(b.inputs)["detections"] for b in evaluation]
        results[name] = {"cosine": min(cosine(g, e) for g, e in zip(got, expected)),
                         "map50": task_metric(run, evaluation, recipe.model.inputs, recipe.task, "detections")}
# 7. both INT8 artifacts on an emulated Haswell, 16 samples one at a time
samples = np.concatenate([b.inputs["images"] for b in evaluation])[:16]
np.save(out / "samples.npy", samples)
(out / "emulated.py").write_text("""
import sys, pathlib, numpy as np, onnxruntime as ort, openvino as ov
out = pathlib.Path(sys.argv[1]); samples = np.load(out / "samples.npy")
options = ort.SessionOptions(); options.intra_op_num_threads = 1
session = ort.InferenceSession(str(out / "u8u8.onnx"), options, providers=["CPUExecutionProvider"])
np.save(out / "emulated-ort.npy", np.concatenate([session.run(None, {"images": s[None]})[0] for s in samples]))
compiled = ov.Core().compile_model(str(out / "int8.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": "1"})
np.save(out / "emulated-ov.npy", np.concatenate([compiled(s[None])[0] for s in samples]))
""")
subprocess.run(["qemu-x86_64", "-cpu", "Haswell", os.path.realpath(sys.executable), str(out / "emulated.py"), str(out)],
               check=True, capture_output=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
with torch.no_grad():
    reference16 = reference({"images": samples})["detections"]
for name in ("ort", "ov"):
    results[f"{name}-int8@haswell"] = {"cosine": cosine(np.load(out / f"emulated-{name}.npy"), reference16)}
# 8. batch-1 latency
one = {"images": samples[:1]}
with torch.no_grad():
    for name, run in [("reference", reference), *((n, r) for n, r in runners.items() if not n.endswith("-default"))]:
        for _ in range(5): run(one)
        times = []
        for _ in range(30):
            started = time.perf_counter(); run(one); times.append(time.perf_counter() - started)
        results.setdefault(name, {})["latency_ms"] = statistics.median(times) * 1000
# 9. golden set, file list
np.savez(out / "golden.npz", inputs=samples[:8], outputs=reference16[:8])
files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(out.iterdir()) if f.is_file()}
(out / "results.json").write_text(json.dumps({"results": results, "files": files}, indent=2))
print(json.dumps(results))
'''


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    plain, modelc = [], []
    checked: dict[str, dict[str, float]] = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as scratch:
            seconds, output = timed_with_output([sys.executable, "-c", PLAIN, scratch, str(REPO)], REPO)
            plain.append(seconds)
            checked = json.loads(output.strip().splitlines()[-1])
        with tempfile.TemporaryDirectory() as scratch:
            modelc.append(timed([sys.executable, "-m", "modelc_build", "build", RECIPE, "--store", f"{scratch}/store",
                                 "--cache", f"{scratch}/cache", "-j", str(args.jobs)], REPO))  # cold: an empty cache

    print("the plain script's own checks (last run):")
    for name, figures in checked.items():
        print(f"  {name}: " + ", ".join(f"{key} {value:.4f}" for key, value in figures.items()))
    print_ratio(("plain script", plain), ("modelc build", modelc), "modelc / plain", "target <= 0.8 with -j 2")


if __name__ == "__main__":
    main()
