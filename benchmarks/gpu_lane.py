"""The GPU lane: on a machine with an NVIDIA GPU and a TensorRT runtime, run every TensorRT engine
of a release built for this GPU against the release's golden set and time the precisions side by
side (batch 1; FP32, FP16, INT8, FP8, weight-only INT4, whichever the release holds), then write the
verdicts beside the release (`<release>.gpu-lane-<gpu>.json` and `.md`; the signed folder itself is
not touched).

    python benchmarks/gpu_lane.py RELEASE_FOLDER [--runs 200] [--warmup 20]

Exit codes: 0 every engine for this GPU ran and held its golden tolerances; 4 one missed them;
6 it could not run here (no NVIDIA GPU, no TensorRT runtime, or no engine for this GPU's
generation: said in one line, with the generations the release holds).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def engine_targets(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in manifest.get("artifacts", []) if isinstance(a, dict) and a.get("engines")]


def lane(release: Path, runs: int, warmup: int) -> tuple[int, dict[str, Any]]:
    from modelc_build import runtime
    from modelc_build.accuracy import measure_latency
    from modelc_build.errors import BackendUnavailable, GateFailed
    from modelc_build.golden import GoldenSet
    from modelc_build.gpus import FULL, RTX, installed, local_gpus
    from modelc_build.manifest import read_manifest

    manifest = read_manifest(release)
    targets = engine_targets(manifest)
    built = sorted({e["gpu"] for a in targets for e in a["engines"]["engines"]})
    gpus = local_gpus()
    if not gpus:
        return 6, {"status": "not run", "why": "no NVIDIA GPU on this machine (nvidia-smi finds none)", "built_for": built}
    if not (installed(FULL) or installed(RTX)):
        return 6, {"status": "not run", "why": f"this machine has {', '.join(gpus)} but no TensorRT runtime "
                                              "(pip install 'modelc-build[tensorrt-rtx]' or full TensorRT)", "built_for": built}
    gpu = next((g for g in gpus if g in built), None)
    if gpu is None:
        return 6, {"status": "not run", "why": f"this machine's GPU ({', '.join(gpus)}) has no engine in the release "
                                              f"(built for {', '.join(built)})", "built_for": built}
    golden = GoldenSet.load(release / "golden")
    first = next(golden.pairs())[0]
    feed = {name: value[:1] for name, value in first.items()}
    rows, code = [], 0
    for artifact in targets:
        target = artifact["target"]
        engines = {e["gpu"]: e for e in artifact["engines"]["engines"]}
        if gpu not in engines:
            rows.append({"target": target, "verdict": f"no engine for {gpu}"})
            continue
        stamp = engines[gpu]
        if not installed(stamp["flavour"]):
            rows.append({"target": target, "verdict": f"built by {stamp['flavour']}, which is not installed here: not run"})
            code = max(code, 6)
            continue
        try:
            with runtime.load(release, target) as deployed:
                result = deployed.check()
                timing = measure_latency(deployed.runner, feed, max(runs, 1), warmup)
                latency = timing["p50"] if timing else float("nan")
        except GateFailed as failed:
            rows.append({"target": target, "verdict": f"FAIL: {failed}"})
            code = 4
            continue
        except BackendUnavailable as unavailable:
            rows.append({"target": target, "verdict": f"not run: {unavailable}"})
            code = max(code, 6)
            continue
        rows.append({"target": target, "precision": artifact.get("precision"), "flavour": stamp["flavour"],
                     "verdict": "pass", "golden": result.describe(), "latency_ms": round(latency, 4)})
    fp32 = next((r["latency_ms"] for r in rows if r.get("precision") == "fp32" and "latency_ms" in r), None)
    for row in rows:
        if fp32 and "latency_ms" in row:
            row["speedup_vs_fp32"] = round(fp32 / row["latency_ms"], 3)
    return code, {"status": "ran", "gpu": gpu, "release": f"{manifest.get('name')} {manifest.get('version')}",
                  "runs": runs, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    if result["status"] != "ran":
        return f"GPU lane did not run: {result['why']}\n"
    lines = [f"## GPU lane: {result['release']} on {result['gpu']}", "",
             "| target | verdict | latency ms (batch 1, median) | speed-up vs fp32 |", "|---|---|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| `{row['target']}` | {row['verdict']} | {row.get('latency_ms', '—')} | {row.get('speedup_vs_fp32', '—')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("release", type=Path)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    options = parser.parse_args(argv)
    release = options.release.resolve()
    code, result = lane(release, options.runs, options.warmup)
    print(markdown(result), end="")
    if result["status"] == "ran":
        stem = f"{release.name}.gpu-lane-{result['gpu']}"
        (release.parent / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (release.parent / f"{stem}.md").write_text(markdown(result))
    else:
        print(f"error: {result['why']}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
