"""Build-system costs, measured in one run.

    python benchmarks/cache.py [--recipe recipes/yolo.yaml] [--hash-gib 1]

Prints: cold build time (empty cache and store), no-op rebuild time and the ratio (target <= 0.02),
rebuild time after changing only a gate, and streamed sha256 throughput on a 1 GiB file
(target >= 1 GB/s). Every build is a fresh `modelc build` process, as a user runs it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from modelc_build.manifest import sha256_file  # noqa: E402


def timed_build(recipe: Path, store: Path, cache: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "modelc_build", "build", str(recipe), "--store", str(store), "--cache", str(cache)],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def with_changed_gate(recipe: Path, scratch: Path) -> Path:
    """A copy of the recipe beside the original (relative paths still resolve) with one gate changed."""
    text = recipe.read_text()
    changed = text.replace("min_cosine: 0.9999\n", "min_cosine: 0.9998\n", 1)
    assert changed != text, "the recipe has no 'min_cosine: 0.9999' gate to change"
    copy = recipe.parent / f".bench-{os.getpid()}-{recipe.name}"
    copy.write_text(changed)
    return copy


def hashing_throughput(scratch: Path, gib: float) -> tuple[float, float]:
    path = scratch / "big.bin"
    block = os.urandom(16 * 1024 * 1024)
    with path.open("wb") as handle:
        for _ in range(int(gib * 64)):
            handle.write(block)
    size = path.stat().st_size
    sha256_file(path)  # warm the page cache: we measure hashing, not the disk
    started = time.perf_counter()
    sha256_file(path)
    ours = size / (time.perf_counter() - started)
    started = time.perf_counter()
    subprocess.run(["sha256sum", str(path)], check=True, stdout=subprocess.DEVNULL)
    coreutils = size / (time.perf_counter() - started)
    path.unlink()
    return ours, coreutils


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes/yolo.yaml")
    parser.add_argument("--hash-gib", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        store, cache = scratch / "store", scratch / "cache"
        cold = timed_build(args.recipe, store, cache)
        noop = min(timed_build(args.recipe, store, cache) for _ in range(3))
        changed = with_changed_gate(args.recipe, scratch)
        try:
            gate = timed_build(changed, store, cache)
        finally:
            changed.unlink()
        ours, coreutils = hashing_throughput(scratch, args.hash_gib)
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| cold build | {cold:.2f} s | |")
    print(f"| no-op rebuild (best of 3) | {noop:.3f} s | < 1 s |")
    print(f"| no-op / cold | {noop / cold:.3f} | <= 0.02 |")
    print(f"| rebuild after a gate change | {gate:.3f} s | |")
    print(f"| sha256, streamed, 1 MiB reads | {ours / 1e9:.2f} GB/s | >= 1 GB/s |")
    print(f"| sha256sum (coreutils), same file | {coreutils / 1e9:.2f} GB/s | |")


if __name__ == "__main__":
    main()
