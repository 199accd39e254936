"""INT8 against FP32 and FP16, per backend, for both shipped recipes, measured in one run.

    python benchmarks/int8.py

Builds each recipe cold (empty cache, temporary store) and prints, per artifact: task metric,
drop against the reference and against the same backend's FP32, batch-1 median latency and the
speed-up over that FP32 artifact. Targets (issue 4): OpenVINO INT8 latency <= 0.5 x FP32;
detector mAP@0.5 drop <= 1 point; classifier top-1 drop <= 0.5 point.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPES = ("recipes/classifier.yaml", "recipes/yolo.yaml")


def main() -> None:
    print("| recipe | artifact | metric % | drop vs ref | drop vs fp32 | latency ms | speed-up vs fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for recipe in RECIPES:
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run([sys.executable, "-m", "compiler", "build", recipe, "--store", f"{scratch}/store",
                            "--cache", f"{scratch}/cache", "--reports-dir", f"{scratch}/failed"],
                           cwd=REPO, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            reports = list(Path(scratch).glob("*/*/*/report.json"))
            report = json.loads(reports[0].read_text())
        for a in report["artifacts"]:
            task = a["task_metric"] or {}
            versus = a["versus_fp32"] or {}
            drop_fp32 = versus.get("metric_drop")
            speedup = versus.get("speedup")
            print(f"| {Path(recipe).stem} | {a['target']} | {task.get('value', float('nan')):.2f} | {task.get('drop', 0):+.2f} | "
                  f"{'—' if drop_fp32 is None else f'{drop_fp32:+.2f}'} | {a['latency_ms']:.3f} | "
                  f"{'—' if speedup is None else f'{speedup:.2f}x'} |")


if __name__ == "__main__":
    main()
