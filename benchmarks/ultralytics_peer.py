"""modelc against Ultralytics for the same deliverables of the same trained YOLOv8n, side by side.

    python -m venv --system-site-packages /tmp/ulvenv
    /tmp/ulvenv/bin/pip install --no-deps ultralytics torchvision \\
        && /tmp/ulvenv/bin/pip install matplotlib opencv-python-headless polars ultralytics-thop
    python benchmarks/ultralytics_peer.py --ultralytics-python /tmp/ulvenv/bin/python

Ultralytics (AGPL-3.0) is a peer we measure, never a dependency: it runs in its own virtual
environment, from its own process, and nothing of it is imported here.

The model: Ultralytics' YOLOv8n (3.0 M parameters) trained by Ultralytics itself, from scratch, on
1,500 generated images of the shapes the shipped detector knows (`models/shapes.py`, seed 1, YOLO
labels), at 192x192 (the images' long side). No weights can be downloaded here, so the first run
trains it (30 epochs, about half an hour on 2 cores) and keeps it in `--weights`; later runs reuse it.

Both sides then deliver five artifacts of it at 192x192: onnxruntime FP32 and INT8, OpenVINO FP32,
FP16 and INT8, INT8 calibrated on the same 64 local images (calibration/shapes-detect/calibration),
each artifact checked on the same 96 labelled held-out images (calibration/shapes-detect/evaluation):
- Ultralytics, one fresh process: `export` five times (`quantize=8` with a local dataset YAML for the
  INT8 ones: onnxruntime `quantize_static` and NNCF), then `val` of each export (mAP@0.5);
- modelc: a cold build (empty step cache, `-j 2`) of a recipe that starts from the ONNX file
  Ultralytics exported (that export's seconds are added to modelc's side), with every check modelc
  makes by default (each artifact against the reference and the labels, latency, INT8 on an
  emulated CPU of the other class); then the same recipe with one change (a gate and the version);
  then, cold again, with only the checks Ultralytics makes too (`verify.cpus: []`: no emulated CPU),
  which is the like-for-like figure, printed beside the full one.

This script then measures each side's INT8 artifacts in one harness on the same preprocessed
evaluation images: cosine of the class-score rows against the FP32 ONNX (all samples and the worst
one) and batch-1 latency against the FP32 artifact of the same runtime, with the runtime's default
settings (OpenVINO runs an FP32 IR in bf16 on a CPU with AVX-512 BF16 or AMX), all eight artifacts
taking turns over 5 rounds of 100 runs (the median of the round medians; single runs of a 2-3 ms
model on a shared 2-core machine differ by 20 %); beside them each side's own mAP@0.5. Prints both wall times,
their ratio (goal: modelc cold <= 1.0x Ultralytics) and the INT8 table (goal: modelc's OpenVINO INT8
latency <= 0.9x Ultralytics').

torchvision's wheels do not load against the CPU build of torch used here; Ultralytics imports it
only for `torchvision.ops.nms`, and its own NMS (`TorchNMS`, which it uses whenever torchvision is
absent) stands in for it.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from timing import timed

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from modelc_build.backends.onnxruntime import variant_file  # noqa: E402
from modelc_build.data import DataReader  # noqa: E402
from modelc_build.host import cpu_info  # noqa: E402
from modelc_build.plan import data_source  # noqa: E402
from modelc_build.recipe import load_recipe  # noqa: E402

IMAGE_SIZE = 192
CLASSES = ("circle", "square", "triangle")
SHAPES = REPO / "calibration/shapes-detect"

# Both scripts run in Ultralytics' own environment. The torchvision stand-in: see the docstring.
PEER_PRELUDE = r"""
import importlib.machinery, json, os, sys, time, types
from pathlib import Path
os.environ["YOLO_OFFLINE"] = "1"
stub = types.ModuleType("torchvision")
stub.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
stub.ops = types.SimpleNamespace(nms=lambda *args: TorchNMS.nms(*args))
sys.modules["torchvision"] = stub
import torch
torch.manual_seed(0)
from ultralytics import YOLO
from ultralytics.utils.nms import TorchNMS
"""

TRAINING = PEER_PRELUDE + r"""
data, imgsz, epochs, project = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
YOLO("yolov8n.yaml").train(data=data, imgsz=imgsz, epochs=epochs, batch=32, workers=2, device="cpu", plots=False,
                           amp=False, val=False, project=project, name="train", exist_ok=True, seed=0)
"""

DELIVERABLES = PEER_PRELUDE + r"""
weights, data, imgsz, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
seconds, files, map50 = {}, {}, {}
calibrated = {"data": data, "split": "train", "fraction": 1.0}
for name, fmt, options in (("onnx-fp32", "onnx", {}), ("onnx-int8", "onnx", {"quantize": 8, **calibrated}),
                           ("openvino-fp32", "openvino", {}), ("openvino-fp16", "openvino", {"quantize": 16}),
                           ("openvino-int8", "openvino", {"quantize": 8, **calibrated})):
    (root / name).mkdir(parents=True)
    os.chdir(root / name)
    started = time.perf_counter()
    local = root / name / "yolov8n.pt"  # exports land beside the weights: one folder each
    local.write_bytes(Path(weights).read_bytes())
    files[name] = str(Path(YOLO(str(local)).export(format=fmt, imgsz=imgsz, batch=1, **options)).resolve())
    seconds["export " + name] = time.perf_counter() - started
for name, path in files.items():
    started = time.perf_counter()
    metrics = YOLO(path, task="detect").val(data=data, imgsz=imgsz, batch=1, split="val", plots=False, verbose=False)
    seconds["val " + name] = time.perf_counter() - started
    map50[name] = 100.0 * float(metrics.box.map50)
(root / "ultralytics.json").write_text(json.dumps({"seconds": seconds, "files": files, "map50": map50}, indent=1))
"""

RECIPE = """format_version: 1
name: yolov8n-peer
version: {version}
model:
  source: onnx
  path: {onnx}
  inputs: [{{name: images, shape: [1, 3, {size}, {size}]}}]
  outputs: [output0]
data:
  preprocess: {{size: [{size}, {size}], resize: letterbox, scale: 1/255}}
  calibration: {{path: {shapes}/calibration}}
  evaluation: {{path: {shapes}/evaluation, labels: yolo}}
task: {{type: detection, layout: yolov8, classes: [{classes}]}}
targets:
  - {{backend: onnxruntime, precisions: [fp32, int8]}}
  - {{backend: openvino, precisions: [fp32, fp16, int8]}}
gates:
  int8: {{max_metric_drop: {drop}}}
"""


def yolo_dataset(root: Path, splits: dict[str, Path]) -> Path:
    """Ultralytics' view of image folders with YOLO label files beside the images: images/SPLIT and
    labels/SPLIT, linked and copied; returns the dataset YAML."""
    for split, folder in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for image in sorted(folder.glob("*.png")):
            (root / "images" / split / image.name).symlink_to(image)
            label = image.with_suffix(".txt")
            (root / "labels" / split / label.name).write_text(label.read_text() if label.exists() else "")
    described = root / "dataset.yaml"
    names = ", ".join(f"{i}: {name}" for i, name in enumerate(CLASSES))
    described.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {{{names}}}\n")
    return described


def trained_weights(python: str, weights: Path, epochs: int) -> Path:
    """Ultralytics' YOLOv8n trained on 1,500 generated shape images (once; kept in `weights`)."""
    if weights.exists():
        return weights
    from models.shapes import write_detection_split

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        write_detection_split(work / "generated", 1, 1500)
        data = yolo_dataset(work / "dataset", {"train": work / "generated", "val": work / "generated"})
        print(f"training YOLOv8n for {epochs} epochs (once; kept in {weights}) ...", flush=True)
        seconds = timed([python, "-c", TRAINING, str(data), str(IMAGE_SIZE), str(epochs), str(work / "runs")], work)
        print(f"trained in {seconds:.0f} s", flush=True)
        weights.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / "runs/train/weights/last.pt", weights)
    return weights


def modelc_build(recipe: Path, work: Path, cache: Path) -> tuple[float, str, Path]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "modelc_build", "build", str(recipe), "--store", str(work / "store"),
                             "--cache", str(cache), "--reports-dir", str(work / "failed"), "-j", "2"],
                            cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"modelc build failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    version = re.search(r"^version: (\S+)", recipe.read_text(), re.M)
    assert version is not None
    return seconds, result.stderr, work / "store/yolov8n-peer" / version.group(1)


def artifact_file(release: Path, target: str, suffix: str) -> Path:
    """The file of `target` this machine would run: for onnxruntime the variant modelc's runtime
    picks here (an INT8 artifact's VNNI variant on a CPU with VNNI)."""
    manifest = json.loads((release / "manifest.json").read_text())
    artifact = next(a for a in manifest["artifacts"] if a["target"] == target)
    files = [release / f for f in artifact["files"] if f.endswith(suffix)]
    return variant_file(files)[0] if suffix == ".onnx" else files[0]


def evaluation_inputs(recipe: Path) -> np.ndarray:
    """The evaluation images exactly as modelc feeds them (letterbox, 1/255): both sides' artifacts
    are measured on these."""
    source = data_source(load_recipe(recipe), "evaluation")
    assert source.dataset is not None
    reader = DataReader(source.dataset, source.inputs, source.preprocess, source.classes)
    return np.concatenate([batch.inputs["images"] for batch in reader.batches()])


def runner(path: Path, pinned: bool) -> Callable[[np.ndarray], np.ndarray]:
    """One artifact as a function of a batch: onnxruntime for .onnx, OpenVINO for an IR (the runtime's
    default precision for timing, pinned to f32 for accuracy, as modelc verifies)."""
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"} if pinned else {})
    return lambda x: compiled(x)[0]


def latencies_ms(calls: dict[str, Callable[[np.ndarray], Any]], sample: np.ndarray, rounds: int = 5, runs: int = 100) -> dict[str, float]:
    """Batch-1 latency of each artifact: `rounds` rounds, the artifacts taking turns within each
    round (a slow spell of the machine hits all of them), the median of the per-round medians."""
    medians: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            for _ in range(10):
                call(sample)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                call(sample)
                times.append(time.perf_counter() - started)
            medians[name].append(1000.0 * float(np.median(times)))
    return {name: float(np.median(values)) for name, values in medians.items()}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def measure(artifacts: dict[str, tuple[Path, Path]], reference: np.ndarray, inputs: np.ndarray) -> dict[str, dict[str, float]]:
    """Per INT8 artifact: its class-score rows against the FP32 ONNX (all samples, worst sample), and
    its latency beside the FP32 artifact of the same runtime, all timed in the same rounds."""
    results: dict[str, dict[str, float]] = {}
    timed: dict[str, Callable[[np.ndarray], Any]] = {}
    for label, (int8, fp32) in artifacts.items():
        accurate = runner(int8, pinned=True)
        outputs = np.concatenate([accurate(inputs[i:i + 1]) for i in range(len(inputs))])
        per_sample = [cosine(reference[i, 4:], outputs[i, 4:]) for i in range(len(inputs))]
        results[label] = {"scores_cosine": cosine(reference[:, 4:], outputs[:, 4:]), "worst": min(per_sample)}
        timed[f"{label} int8"], timed[f"{label} fp32"] = runner(int8, pinned=False), runner(fp32, pinned=False)
    latency = latencies_ms(timed, inputs[:1])
    for label, result in results.items():
        result.update(int8_ms=latency[f"{label} int8"], fp32_ms=latency[f"{label} fp32"])
    return results


def step_seconds(log: str, suffix: str) -> float:
    return sum(float(m.group(2)) for m in re.finditer(r"^✓ (\S+) \(([\d.]+) s,", log, re.M) if m.group(1).endswith(suffix))


def modelc_map50(release: Path) -> dict[str, float]:
    report = json.loads((release / "report.json").read_text())
    return {a["target"]: a["task_metric"]["value"] for a in report["artifacts"] if a.get("task_metric")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ultralytics-python", required=True, help="python of a venv with ultralytics installed")
    parser.add_argument("--weights", type=Path, default=Path(tempfile.gettempdir()) / "modelc-peer-yolov8n-shapes.pt",
                        help="Ultralytics' trained YOLOv8n (made by the first run)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs when --weights does not exist yet")
    parser.add_argument("--int8-max-map-drop", type=float, default=1.0, help="modelc's INT8 gate (mAP@0.5 points)")
    args = parser.parse_args()
    weights = trained_weights(args.ultralytics_python, args.weights, args.epochs)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        peer_root = work / "ultralytics"
        peer_root.mkdir()
        data = yolo_dataset(work / "dataset", {"train": SHAPES / "calibration", "val": SHAPES / "evaluation"})
        peer_seconds = timed([args.ultralytics_python, "-c", DELIVERABLES, str(weights), str(data), str(IMAGE_SIZE), str(peer_root)], work)
        peer = json.loads((peer_root / "ultralytics.json").read_text())
        onnx = Path(peer["files"]["onnx-fp32"])

        recipe = work / "peer.yaml"
        settings = {"onnx": onnx, "shapes": SHAPES, "size": IMAGE_SIZE, "classes": ", ".join(CLASSES)}
        recipe.write_text(RECIPE.format(version="1.0.0", drop=args.int8_max_map_drop, **settings))
        cold, cold_log, release = modelc_build(recipe, work, work / "cache")
        recipe.write_text(RECIPE.format(version="1.0.1", drop=args.int8_max_map_drop + 0.5, **settings))
        warm, _, _ = modelc_build(recipe, work, work / "cache")
        # the peer's checks only: every artifact against the reference and the labels, no emulated CPU
        recipe.write_text(RECIPE.format(version="1.0.2", drop=args.int8_max_map_drop, **settings) + "verify: {cpus: []}\n")
        same_checks, _, _ = modelc_build(recipe, work, work / "cache-same-checks")

        inputs = evaluation_inputs(recipe)
        reference = np.concatenate([runner(onnx, pinned=True)(inputs[i:i + 1]) for i in range(len(inputs))])
        peer_files = {name: Path(path) if path.endswith(".onnx") else next(Path(path).glob("*.xml")) for name, path in peer["files"].items()}
        ours = modelc_map50(release)
        measured = measure({
            "ultralytics onnx int8": (peer_files["onnx-int8"], peer_files["onnx-fp32"]),
            "modelc onnxruntime-int8": (artifact_file(release, "onnxruntime-int8", ".onnx"), artifact_file(release, "onnxruntime-fp32", ".onnx")),
            "ultralytics openvino int8": (peer_files["openvino-int8"], peer_files["openvino-fp32"]),
            "modelc openvino-int8": (artifact_file(release, "openvino-int8", ".xml"), artifact_file(release, "openvino-fp32", ".xml")),
        }, reference, inputs)
        metric = {"ultralytics onnx int8": (peer["map50"]["onnx-int8"], peer["map50"]["onnx-fp32"]),
                  "modelc onnxruntime-int8": (ours["onnxruntime-int8"], ours["onnxruntime-fp32"]),
                  "ultralytics openvino int8": (peer["map50"]["openvino-int8"], peer["map50"]["openvino-fp32"]),
                  "modelc openvino-int8": (ours["openvino-int8"], ours["openvino-fp32"])}

    export_seconds = peer["seconds"]["export onnx-fp32"]
    cpu = cpu_info()
    print(f"machine: {cpu['cpu']}, {cpu['cores']} cores, ISA {', '.join(cpu['isa'])} (class {cpu['kernel_class']})")
    print(f"YOLOv8n {IMAGE_SIZE}x{IMAGE_SIZE} trained by Ultralytics; 5 artifacts each side, INT8 calibrated on "
          f"{len(list((SHAPES / 'calibration').glob('*.png')))} images, checked on {len(inputs)} labelled images")
    print(f"ultralytics: {peer_seconds:.1f} s (exports {sum(v for k, v in peer['seconds'].items() if k.startswith('export')):.1f} s, "
          f"val of each export {sum(v for k, v in peer['seconds'].items() if k.startswith('val')):.1f} s)")
    emulated = step_seconds(cold_log, "@haswell") + step_seconds(cold_log, "@avx512-vnni")
    print(f"modelc cold -j 2: {cold:.1f} s + the ONNX export it starts from {export_seconds:.1f} s = {cold + export_seconds:.1f} s "
          f"(emulated-CPU checks {emulated:.1f} s of step time)")
    print(f"modelc warm, one recipe change: {warm:.1f} s")
    print(f"modelc cold with the peer's checks only (verify.cpus: [], no emulated CPU): {same_checks:.1f} s + "
          f"{export_seconds:.1f} s = {same_checks + export_seconds:.1f} s")
    print(f"ratio modelc cold / ultralytics: {(cold + export_seconds) / peer_seconds:.2f} (goal <= 1.0)")
    print(f"ratio modelc cold, the peer's checks only / ultralytics: {(same_checks + export_seconds) / peer_seconds:.2f}")
    print(f"ratio modelc warm / ultralytics: {warm / peer_seconds:.2f}")
    print("| artifact | mAP@0.5 INT8 | mAP@0.5 FP32 | class-score cosine | worst sample | INT8 ms | FP32 ms | INT8/FP32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, m in measured.items():
        map_int8, map_fp32 = metric[label]
        print(f"| {label} | {map_int8:.2f} | {map_fp32:.2f} | {m['scores_cosine']:.4f} | {m['worst']:.4f} | {m['int8_ms']:.2f} "
              f"| {m['fp32_ms']:.2f} | {m['int8_ms'] / m['fp32_ms']:.2f} |")
    print("ratio modelc / ultralytics OpenVINO INT8 latency: "
          f"{measured['modelc openvino-int8']['int8_ms'] / measured['ultralytics openvino int8']['int8_ms']:.2f} (goal <= 0.9)")
    print("ratio modelc / ultralytics onnxruntime INT8 latency: "
          f"{measured['modelc onnxruntime-int8']['int8_ms'] / measured['ultralytics onnx int8']['int8_ms']:.2f}")
    print("mAP@0.5: each side's own figure (Ultralytics interpolates COCO-style and caps a perfect score at 99.5)")

if __name__ == "__main__":
    main()
