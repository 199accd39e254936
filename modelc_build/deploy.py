"""What deploy stages run: pull a release (or one target of it) from any store, verify it, and
only then move it into place; or verify a release already on disk.

A pull downloads into a staging folder beside the destination (`.modelc-pull-NAME-VERSION-DEST`,
kept after a dropped connection so the next pull resumes; a file lock keeps two pulls apart), checks every file against the signature
and the release's own name and version, and renames the folder into place. Any failure of
verification deletes the staging folder and leaves the destination untouched.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from modelc_build.errors import InputError, VerificationError
from modelc_build.manifest import REPORT_FILES, SIGNATURE_FILE, read_manifest, safe_relative_path, sha256_file
from modelc_build.signing import SignatureError, Trust, verified_digests, verify_release
from modelc_build.stores import Store

PARTIAL_FILE = ".modelc-pulled.json"  # beside a --target/--gpu pull: which signed files it holds, to re-verify later


@dataclass(frozen=True)
class Pulled:
    destination: Path
    files: list[str]  # release-relative paths now in the destination, the signature included


def parse_reference(reference: str) -> tuple[str, str]:
    name, _, version = reference.rpartition(":")
    if not name or not version:
        raise InputError(f"'{reference}': expected NAME:VERSION, e.g. tiny-yolo-shapes:1.0.0")
    return name, version


def selection(manifest: dict[str, Any], target: str | None, gpu: str | None = None) -> set[str] | None:
    """The files a deploy of `target` needs (its artifact, the reports, the golden set); None: every
    file. With `gpu`, only the TensorRT engines built for that generation (with their stamps)."""
    artifacts = {a["target"]: a for a in manifest.get("artifacts", []) if isinstance(a, dict)}
    golden = (manifest.get("golden") or {}).get("files", []) if isinstance(manifest.get("golden"), dict) else []
    listed = {str(f.get("path")) for f in manifest.get("files", []) if isinstance(f, dict)}
    common = (set(REPORT_FILES) & listed) | {str(name) for name in golden}  # golden: for verify --run / pull --check
    if target is not None and target not in artifacts:
        raise InputError(f"--target {target}: the release holds {', '.join(sorted(artifacts))}")
    if gpu is None:
        return None if target is None else set(artifacts[target]["files"]) | common
    chosen = [artifacts[target]] if target is not None else list(artifacts.values())
    engines = [(a["target"], e) for a in chosen for e in ((a.get("engines") or {}).get("engines") or [])]
    matching = [(name, e) for name, e in engines if e.get("gpu") == gpu]
    if not matching:
        held = "; ".join(f"{a['target']} for {', '.join(e['gpu'] for e in a['engines']['engines'])}"
                         for a in chosen if (a.get("engines") or {}).get("engines")) or "no TensorRT engines"
        raise InputError(f"--gpu {gpu}: no engine in {manifest.get('name')}:{manifest.get('version')} was built for "
                         f"{gpu}; it holds {held}")
    stamps = {f"{name}/engines.json" for name, _ in matching}
    return {e["file"] for _, e in matching} | stamps | common


def pull(store: Store, name: str, version: str, destination: Path, trust: Trust, target: str | None = None,
         gpu: str | None = None) -> Pulled:
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise InputError(f"{destination}: exists and is not an empty folder: give a new or empty --dest")
    destination.parent.mkdir(parents=True, exist_ok=True)
    # One staging folder per destination (a dropped download resumes there); pulls into one parent
    # folder take turns (a lock on the folder itself, so nothing is left behind): two pulls of one
    # release into different folders never share a staging folder, two into the same one never race.
    staging = destination.parent / f".modelc-pull-{name}-{version}-{destination.name}"
    with _locked(destination.parent):
        if destination.exists() and any(destination.iterdir()):
            raise InputError(f"{destination}: another pull filled it meanwhile: give a new or empty --dest")
        _fetch_verified(store, name, version, staging, trust, target, gpu)
        return _move_into_place(staging, destination)


def _fetch_verified(store: Store, name: str, version: str, staging: Path, trust: Trust, target: str | None,
                    gpu: str | None) -> None:
    chosen: dict[str, set[str] | None] = {}

    def wanted(manifest: dict[str, Any]) -> set[str] | None:
        chosen["files"] = selection(manifest, target, gpu)
        return chosen["files"]

    try:
        store.fetch(name, version, staging, wanted)
        verify_folder(staging, trust, expected=chosen.get("files"), identity=(name, version))
    except VerificationError as exc:
        shutil.rmtree(staging, ignore_errors=True)  # never keep what failed verification
        raise type(exc)(f"{name}:{version}: " + exc.message.replace(f"{staging}/", "").replace(f"{staging}: ", "")) from exc
    except InputError:
        shutil.rmtree(staging, ignore_errors=True)  # e.g. an unknown --target: nothing worth resuming
        raise
    _remove_leftovers(staging)
    if chosen.get("files") is not None:
        (staging / PARTIAL_FILE).write_text(json.dumps({"format_version": 1, "release": f"{name}:{version}",
                                                         "target": target, "gpu": gpu,
                                                         "files": sorted(chosen["files"] or [])}, indent=2) + "\n")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock for pulls into one folder (filelock: an OS lock, released if we die),
    kept in the temporary folder so that nothing is left beside the destination."""
    import hashlib
    import tempfile

    from filelock import FileLock

    name = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    with FileLock(str(Path(tempfile.gettempdir()) / f"modelc-pull-{name}.lock")):
        yield


def _move_into_place(staging: Path, destination: Path) -> Pulled:
    try:
        if destination.exists():
            destination.rmdir()
        os.rename(staging, destination)
    except OSError as exc:
        raise InputError(f"{destination}: cannot move the verified release into place ({exc.strerror or exc}); "
                         f"it is complete in {staging}") from exc
    files = sorted(str(p.relative_to(destination)) for p in destination.rglob("*") if p.is_file())
    return Pulled(destination, files)


def verify_folder(folder: Path, trust: Trust, expected: set[str] | None = None, identity: tuple[str, str] | None = None) -> None:
    """All of a release (expected None) or the `expected` part of it matches its signature, and the
    signed manifest names the release asked for (`identity`) or, in a store's NAME/VERSION folder,
    the one the folder says. A folder a partial pull wrote (PARTIAL_FILE) is checked for its part."""
    _refuse_links(folder)
    if not (folder / SIGNATURE_FILE).is_file():
        raise SignatureError(f"{folder}: no {SIGNATURE_FILE}: the release is not signed; refusing it")
    if expected is None and (folder / PARTIAL_FILE).is_file():
        expected = _partial_selection(folder)
    _verify_signed_files(folder, trust, expected)
    check_identity(folder, identity)


def verify_unsigned(folder: Path, identity: tuple[str, str] | None = None) -> None:
    """A release checked without a signature, as asked for explicitly (`verify --unsigned`): every
    file its manifest lists is there with that sha256, and nothing else is. This proves the folder
    is what its manifest says, not who built it: for a developer's own unsigned local build."""
    _refuse_links(folder)
    listed = {}
    for entry in read_manifest(folder).get("files", []):
        if isinstance(entry, dict):
            listed[safe_relative_path(str(entry.get("path", ""))).as_posix()] = str(entry.get("sha256"))
    listed["manifest.json"] = sha256_file(folder / "manifest.json")  # nothing vouches for it but itself
    problems = _mismatches(folder, listed, only=set(listed))
    if problems:
        raise VerificationError(f"{folder}: " + "; ".join(problems))
    check_identity(folder, identity)


def _partial_selection(folder: Path) -> set[str]:
    try:
        listed = json.loads((folder / PARTIAL_FILE).read_text())["files"]
        if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
            raise ValueError("files is not a list of names")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VerificationError(f"{folder / PARTIAL_FILE}: not a readable record of a partial pull ({exc}): refused") from exc
    return set(listed)


def check_identity(folder: Path, identity: tuple[str, str] | None) -> None:
    """The signed manifest names `identity` (NAME, VERSION) when one is asked for; without one, a
    folder laid out as NAME/VERSION must hold that release (a version copied to another version's
    folder is refused)."""
    manifest = read_manifest(folder)
    signed = (str(manifest.get("name")), str(manifest.get("version")))
    if identity is not None:
        if signed != identity:
            raise VerificationError(f"{folder}: expected {identity[0]}:{identity[1]}, but the signed release is "
                                    f"{signed[0]}:{signed[1]}: refused")
        return
    if folder.resolve().parent.name == signed[0] and folder.resolve().name != signed[1]:
        raise VerificationError(f"{folder}: the folder says version {folder.resolve().name}, but the signed release is "
                                f"{signed[0]}:{signed[1]} (copied or renamed?): refused; --expect NAME:VERSION says "
                                "which release to accept")


def _verify_signed_files(folder: Path, trust: Trust, expected: set[str] | None) -> None:
    if expected is None:
        try:
            verify_release(folder, trust)
        except SignatureError as exc:
            raise SignatureError(_diagnosis(folder, trust) or str(exc)) from exc
        _check_listed_files(folder)
        return
    signed = verified_digests(folder / SIGNATURE_FILE, trust)
    problems = _mismatches(folder, signed, only=expected | {"manifest.json"})  # missing files included
    if problems:
        raise SignatureError(f"{folder}: " + "; ".join(problems))


def _mismatches(folder: Path, signed: dict[str, str], only: set[str] | None = None) -> list[str]:
    present = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != SIGNATURE_FILE
               and p.name != PARTIAL_FILE and not p.name.endswith(".part")}
    problems = []
    for path in sorted(present):
        if path not in signed:
            problems.append(f"{path} is not in the signed release")
        elif sha256_file(folder / path) != signed[path]:
            problems.append(f"{path} differs from the signed sha256 {signed[path][:16]}…")
    wanted = set(signed) if only is None else only
    problems += [f"{path} is missing" if path in signed else f"{path} is not in the signed release"
                 for path in sorted(wanted - present)]
    return problems


def _check_listed_files(folder: Path) -> None:
    """The signed manifest's file list must name files inside the release that are there and match:
    a signature over the present files does not vouch for what the manifest claims besides."""
    problems = []
    for entry in read_manifest(folder).get("files", []):
        path = str(entry.get("path", "")) if isinstance(entry, dict) else ""
        relative = safe_relative_path(path)
        if not (folder / relative).is_file():
            problems.append(f"the manifest lists {path}, which is missing")
        elif sha256_file(folder / relative) != entry.get("sha256"):
            problems.append(f"{path} differs from the sha256 its manifest lists")
    if problems:
        raise VerificationError(f"{folder}: " + "; ".join(problems))


def _diagnosis(folder: Path, trust: Trust) -> str | None:
    """Which files differ, when the signature itself is good (clearer than model-signing's text)."""
    try:
        signed = verified_digests(folder / SIGNATURE_FILE, trust)
    except SignatureError as exc:
        return str(exc)
    problems = _mismatches(folder, signed)
    return f"{folder}: " + "; ".join(problems) if problems else None


def _refuse_links(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_symlink():
            raise VerificationError(f"{path}: a link inside a release: refused")


def _remove_leftovers(folder: Path) -> None:
    for part in folder.rglob("*.part"):
        part.unlink()
