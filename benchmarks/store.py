"""Registry store throughput and signing cost, one run.

    python benchmarks/store.py [--megabytes 500]

Makes a release of MEGABYTES of incompressible data (4 files + manifest.json), signs it, then in
fresh processes, each measured for wall time and peak memory (ru_maxrss from wait4):
  push   OciStore.push to CNCF distribution (docker-registry) on 127.0.0.1
  pull   modelc's verified pull of the whole release (download + digest checks + signature)
and, in this process: sign and verify of the release against `sha256sum` over the same bytes.
Targets: push and pull >= 200 MB/s, peak memory < 200 MB; sign + verify <= 2 x sha256sum.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PUSH = """
import json, sys
from pathlib import Path
from modelc_build.stores import open_store
release = Path(sys.argv[2])
manifest = json.loads((release / "manifest.json").read_text())
open_store(sys.argv[1]).push(release, "bench", "1.0.0", manifest["content_digest"])
"""

PULL = """
import sys
from pathlib import Path
from modelc_build.deploy import pull
from modelc_build.signing import Trust
from modelc_build.stores import open_store
pull(open_store(sys.argv[1]), "bench", "1.0.0", Path(sys.argv[2]), Trust(public_key=Path(sys.argv[3])))
"""


def make_release(folder: Path, megabytes: int) -> Path:
    release = folder / "release"
    release.mkdir()
    files = []
    per_file = megabytes * 1024 * 1024 // 4
    for index in range(4):
        path = release / f"target-{index}" / "model.bin"
        path.parent.mkdir()
        digest = hashlib.sha256()
        with path.open("wb") as handle:
            for _ in range(per_file // (4 << 20)):
                block = os.urandom(4 << 20)
                digest.update(block)
                handle.write(block)
        files.append({"path": str(path.relative_to(release)), "sha256": digest.hexdigest(), "size": path.stat().st_size})
    (release / "manifest.json").write_text(json.dumps({"name": "bench", "version": "1.0.0", "files": files,
                                                       "content_digest": hashlib.sha256(str(files).encode()).hexdigest()}))
    return release


def measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS in MiB of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{command[:3]} failed with status {status}")
    return elapsed, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=500)
    args = parser.parse_args()
    from modelc_build.signing import Signer, Trust, sign_release, verify_release, write_key_pair
    from tests.services.registry import start_registry

    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as scratch:
        folder = Path(scratch)
        release = make_release(folder, args.megabytes)
        size_mb = sum(p.stat().st_size for p in release.rglob("*") if p.is_file()) / 1e6
        key, public = write_key_pair(folder / "bench")

        started = time.perf_counter()
        subprocess.run(["sha256sum", *[str(p) for p in sorted(release.rglob("*.bin"))]], check=True,
                       stdout=subprocess.DEVNULL)
        sha256sum = time.perf_counter() - started
        started = time.perf_counter()
        sign_release(release, Signer(key=key))
        signing = time.perf_counter() - started
        started = time.perf_counter()
        verify_release(release, Trust(public_key=public))
        verifying = time.perf_counter() - started

        (folder / "registry").mkdir()
        registry_runs = start_registry(folder / "registry")
        registry = next(registry_runs)
        try:
            url = registry.url("bench")
            push_s, push_mib = measured([sys.executable, "-c", PUSH, url, str(release)])
            pull_s, pull_mib = measured([sys.executable, "-c", PULL, url, str(folder / "pulled"), str(public)])
        finally:
            next(registry_runs, None)

    print(f"release: {size_mb:.0f} MB in 4 files, signed; registry: docker-registry on 127.0.0.1 (filesystem storage)")
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| push throughput | {size_mb / push_s:.0f} MB/s ({push_s:.2f} s) | >= 200 MB/s |")
    print(f"| push peak memory (whole process) | {push_mib:.0f} MiB | < 200 MB |")
    print(f"| verified pull throughput | {size_mb / pull_s:.0f} MB/s ({pull_s:.2f} s) | >= 200 MB/s |")
    print(f"| pull peak memory (whole process) | {pull_mib:.0f} MiB | < 200 MB |")
    print(f"| sha256sum | {sha256sum:.2f} s | |")
    print(f"| sign | {signing:.2f} s | |")
    print(f"| verify | {verifying:.2f} s | |")
    print(f"| (sign + verify) / sha256sum | {(signing + verifying) / sha256sum:.2f} | <= 2 |")


if __name__ == "__main__":
    main()
