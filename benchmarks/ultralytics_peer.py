"""modelc against Ultralytics' own exports of a YOLOv8n-class detector, side by side in one run.

    python -m venv --system-site-packages /tmp/ulvenv && /tmp/ulvenv/bin/pip install ultralytics
    python models/fetch_mobilenet_v2.py          # the photos used as calibration/evaluation data
    python benchmarks/ultralytics_peer.py --ultralytics-python /tmp/ulvenv/bin/python [--repeats 2]

Ultralytics (AGPL-3.0) is a peer we measure, never a dependency: it runs in its own virtual
environment, from its own process. Its side: `YOLO("yolov8n.yaml")` (the YOLOv8n architecture,
untrained: no weights can be downloaded here, and timing does not depend on the weights) exported
four times, ONNX, OpenVINO FP32, OpenVINO FP16, TorchScript, in one fresh process. modelc's side: a
cold build (empty cache, -j 2) of that same model, from the ONNX file Ultralytics wrote, for
onnxruntime fp32/int8 and openvino fp32/fp16/int8, calibrated on 212 photos and verified on 100
(every artifact against the reference, latency of each). Prints both wall times and the ratio
(target <= 3).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from timing import print_ratio, timed

REPO = Path(__file__).resolve().parent.parent

EXPORTS = r'''
import os
os.environ["YOLO_OFFLINE"] = "1"
from ultralytics import YOLO
for fmt, options in (("onnx", {}), ("openvino", {}), ("openvino", {"half": True}), ("torchscript", {})):
    YOLO("yolov8n.yaml").export(format=fmt, imgsz=640, **options)
'''

RECIPE = """format_version: 1
name: yolov8n-peer
version: 1.0.0
model:
  source: onnx
  path: {onnx}
  inputs: [{{name: images, shape: [1, 3, 640, 640]}}]
  outputs: [output0]
data:
  preprocess: {{size: [640, 640], resize: letterbox}}
  calibration: {{path: {photos}/calibration}}
  evaluation: {{path: {photos}/evaluation, samples: 100}}
task: {{type: generic}}
targets:
  - {{backend: onnxruntime, precisions: [fp32, int8]}}
  - {{backend: openvino, precisions: [fp32, fp16, int8]}}
gates:
  default: {{min_cosine: -1}}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ultralytics-python", required=True, help="python of a venv with ultralytics installed")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    photos = REPO / "calibration/photos"
    if not (photos / "evaluation").is_dir():
        sys.exit("run python models/fetch_mobilenet_v2.py first (it makes the photo sets)")
    ultralytics, modelc = [], []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for run in range(args.repeats):
            exports = work / f"ultralytics-{run}"
            exports.mkdir()
            ultralytics.append(timed([args.ultralytics_python, "-c", EXPORTS], exports))
            recipe = work / f"peer-{run}.yaml"
            recipe.write_text(RECIPE.format(onnx=exports / "yolov8n.onnx", photos=photos))
            modelc.append(timed([sys.executable, "-m", "modelc_build", "build", str(recipe), "--store", str(work / f"store-{run}"),
                                 "--cache", str(work / f"cache-{run}"), "-j", "2"], REPO))
    print_ratio(("ultralytics, 4 exports (onnx, openvino fp32/fp16, torchscript)", ultralytics),
                ("modelc build -j 2, 5 targets + verification + latency", modelc), "modelc / ultralytics", "target <= 3",
                digits=1)


if __name__ == "__main__":
    main()
