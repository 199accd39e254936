"""What a version is: every file's digest and size, the recipe digest, the toolchain, the source commit.

`content_digest` covers the model artifacts only (not reports, whose latencies vary run to run,
nor the manifest itself): two builds with the same content digest are the same release.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from modelc_build.errors import VerificationError

MANIFEST_FORMAT_VERSION = 3  # 2: deploy settings per artifact, build machine, data roles; 3: CPUs verified on, golden set
CHUNK = 1024 * 1024
REPORT_FILES = ("report.json", "report.md", "report.html")  # beside the artifacts in every release
TOOLCHAIN_PACKAGES = ("modelc-build", "torch", "onnx", "onnxsim", "onnxruntime", "openvino", "numpy")

# Beside every int8 artifact: how it was calibrated and what stayed in float (read into the report).
QUANTIZATION_NOTES = "quantization.json"
# The release's signature (a Sigstore bundle); the signature covers every other file.
SIGNATURE_FILE = "signature.sigstore.json"


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the release folder, '/'-separated
    sha256: str
    size: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(path: Path, file_digest: Callable[[Path], str] = sha256_file) -> str:
    """sha256 over every file below `path` (relative name + content digest), or of one file;
    `file_digest` lets a caller that already hashed the files reuse their digests."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        name = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}:{file_digest(file)};".encode())
    return digest.hexdigest()


def file_entries(root: Path, relative_paths: list[str]) -> list[FileEntry]:
    return [FileEntry(p, sha256_file(root / p), (root / p).stat().st_size) for p in sorted(relative_paths)]


def content_digest(entries: list[FileEntry]) -> str:
    canonical = json.dumps([[e.path, e.sha256] for e in sorted(entries, key=lambda e: e.path)], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@cache
def package_version(name: str) -> str | None:
    """An installed distribution's version from its metadata (no import), None if absent."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def toolchain_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in TOOLCHAIN_PACKAGES:
        version = package_version(package)
        if version is not None:
            versions[package] = version
    return versions


def source_commit(folder: Path) -> dict[str, Any] | None:
    """The git commit of the repository holding the recipe, and whether the work tree was dirty."""
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)}


@dataclass(frozen=True)
class ArtifactEntry:
    target: str
    backend: str
    precision: str
    files: list[str]
    runtime_config: dict[str, str] | None = None  # what a deploy stage passes the runtime (as verified)
    verified_on: list[dict[str, Any]] | None = None  # the CPUs it was judged on: the build machine's, emulated ones
    engines: dict[str, Any] | None = None  # tensorrt: per engine its GPU, builder, CUDA major, source graph, status
    variants: dict[str, Any] | None = None  # onnxruntime int8: per model file its layout and the CPUs it is for
    coverage: dict[str, Any] | None = None  # int8: per model file, how many weighted layers run in INT8


def build_manifest(*, name: str, version: str, recipe_file: Path, recipe_digest: str, exporter: str, opset: int,
                   simplified: bool, artifacts: list[ArtifactEntry], artifact_files: list[FileEntry],
                   report_files: list[FileEntry], passed: bool, machine: dict[str, Any] | None = None,
                   data: dict[str, Any] | None = None, measurement_digest: str | None = None,
                   golden: dict[str, Any] | None = None, model: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "name": name,
        "version": version,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "recipe": {"file": recipe_file.name, "sha256": recipe_digest},
        "source": source_commit(recipe_file.resolve().parent),
        "export": {"exporter": exporter, "opset": opset, "simplified": simplified},
        "model": model,  # inputs (name, shape, dtype, batch axis, fixed value, carried state) and outputs
        "toolchain": toolchain_versions(),
        "content_digest": content_digest(artifact_files),
        "measurement_digest": measurement_digest,  # task, gates, data, verification settings judged by
        "gates_passed": passed,
        "artifacts": [{"target": a.target, "backend": a.backend, "precision": a.precision, "files": a.files,
                       **({"runtime_config": a.runtime_config} if a.runtime_config is not None else {}),
                       **({"verified_on": a.verified_on} if a.verified_on is not None else {}),
                       **({"engines": a.engines} if a.engines is not None else {}),
                       **({"variants": a.variants} if a.variants is not None else {}),
                       **({"int8_coverage": a.coverage} if a.coverage is not None else {})}
                      for a in artifacts],
        "build_machine": machine,
        "data": data,
        "golden": golden,  # the golden set `modelc verify --run` proves artifacts on: samples, bytes, files
        "files": [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in artifact_files + report_files],
    }


def read_manifest(release_dir: Path) -> dict[str, Any]:
    """A release's manifest.json; one that is not a JSON object is a release to refuse."""
    path = release_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VerificationError(f"{path}: not a readable JSON manifest ({exc}): refused") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", []), list):
        raise VerificationError(f"{path}: not a modelc manifest (expected an object with a files list): refused")
    return manifest


def safe_relative_path(name: str) -> Path:
    """A release file name that stays inside its folder: no absolute paths, `..`, or odd parts."""
    path = Path(name)
    if not name or name.startswith(("/", "\\")) or "\\" in name or path.is_absolute() \
            or any(part in ("", ".", "..") for part in name.split("/")):
        raise VerificationError(f"refused file name {name!r}: it would escape the destination folder")
    return path

