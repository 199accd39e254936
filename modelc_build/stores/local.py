"""The local store: `<root>/<name>/<version>/`, written atomically, immutable once written."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from modelc_build.cache import Cache
from modelc_build.errors import StoreError, VerificationError, VersionTaken
from modelc_build.manifest import SIGNATURE_FILE, read_manifest, sha256_file
from modelc_build.stores import PushResult, Store, check_release_id, version_order


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root

    def step_cache(self) -> Cache:
        return Cache(self.root / ".step-cache")

    def release_path(self, name: str, version: str) -> Path:
        check_release_id(name, version)  # never a path outside the store, whatever a caller was given
        return self.root / name / version

    def stored_manifest(self, name: str, version: str) -> dict[str, Any] | None:
        return self._stored(self.release_path(name, version))

    def location(self, name: str, version: str) -> str:
        return str(self.release_path(name, version))

    def release_digest(self, name: str, version: str) -> str | None:
        manifest = self.release_path(name, version) / "manifest.json"
        return f"sha256:{sha256_file(manifest)}" if manifest.is_file() else None

    def push(self, staged: Path, name: str, version: str, content_digest: str) -> PushResult:
        final = self.release_path(name, version)
        existing = self._existing_digest(final)
        if existing is not None:
            return self._same_or_refuse(final, name, version, existing, content_digest)
        incoming = final.parent / f".incoming-{version}-{uuid.uuid4().hex[:8]}"
        _remove_abandoned(final.parent)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(staged, incoming)
            _fsync_tree(incoming)
            os.rename(incoming, final)  # atomic; fails if another build stored the version meanwhile
        except OSError as exc:
            shutil.rmtree(incoming, ignore_errors=True)
            existing = self._existing_digest(final)
            if existing is not None:
                return self._same_or_refuse(final, name, version, existing, content_digest)
            from modelc_build.errors import write_problem

            raise write_problem(exc, f"{final}: cannot write the release") or StoreError(
                f"{final}: cannot write the release ({exc.strerror or type(exc).__name__}): check the store folder") from exc
        return PushResult(str(final), created=True, digest=self.release_digest(name, version))

    @staticmethod
    def _stored(final: Path) -> dict[str, Any] | None:
        """The manifest of a stored version (None: not stored); a folder without one is an error."""
        if not final.exists():
            return None
        try:
            manifest = read_manifest(final)
            manifest["content_digest"]  # a modelc manifest always has one
        except (OSError, ValueError, KeyError, TypeError, VerificationError):
            raise StoreError(f"{final}: exists but holds no readable manifest.json; "
                             "it was not written by modelc: move it away") from None
        return manifest

    def _existing_digest(self, final: Path) -> str | None:
        stored = self._stored(final)
        return None if stored is None else str(stored["content_digest"])

    @staticmethod
    def _same_or_refuse(final: Path, name: str, version: str, existing: str, wanted: str) -> PushResult:
        if existing == wanted:
            return PushResult(str(final), created=False, digest=f"sha256:{sha256_file(final / 'manifest.json')}")
        raise VersionTaken(f"{name} {version} is already stored at {final} with different content "
                         f"(content digest {existing[:12]} there, {wanted[:12]} now); a version is immutable: "
                         "bump `version` in the recipe")

    def fetch(self, name: str, version: str, destination: Path, wanted: Callable[[dict[str, Any]], set[str] | None]) -> None:
        """Copies regular files only; names come from the release's own manifest.json and are
        checked to stay inside the folder (verification against the signature comes after)."""
        from modelc_build.manifest import safe_relative_path

        source = self.release_path(name, version)
        if not (source / "manifest.json").is_file():
            raise StoreError(f"{name}:{version} is not in the store {self.root}")
        destination.mkdir(parents=True, exist_ok=True)
        _copy_regular(source / "manifest.json", destination / "manifest.json")
        manifest = read_manifest(destination)
        chosen = wanted(manifest)
        for entry in manifest.get("files", []):
            path = str(entry["path"])
            relative = safe_relative_path(path)
            if chosen is None or path in chosen:
                (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                _copy_regular(source / relative, destination / relative)
        if (source / SIGNATURE_FILE).exists():
            _copy_regular(source / SIGNATURE_FILE, destination / SIGNATURE_FILE)

    def list(self, name: str | None = None) -> list[tuple[str, str]]:
        if not self.root.exists():
            raise StoreError(f"{self.root}: no store here (the folder does not exist): check --store / MODELC_STORE")
        if not self.root.is_dir():
            raise StoreError(f"{self.root}: a file, not a store folder: check --store / MODELC_STORE")
        names = [name] if name else sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        found = []
        for release in names:
            folder = self.root / release
            if folder.is_dir():
                versions = [v.name for v in folder.iterdir() if not v.name.startswith(".") and (v / "manifest.json").exists()]
                found += [(release, version) for version in version_order(versions)]
        return found


ABANDONED_SECONDS = 3600  # no push copies into its incoming folder for an hour


def _remove_abandoned(folder: Path) -> None:
    """Incoming copies left by a push that was killed (kill -9 between copy and rename)."""
    import time

    if not folder.is_dir():
        return
    for stale in folder.glob(".incoming-*"):
        try:
            if stale.stat().st_mtime < time.time() - ABANDONED_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        except OSError:
            continue  # another push just renamed or removed it


def _copy_regular(source: Path, destination: Path) -> None:
    if source.is_symlink() or not source.is_file():
        raise VerificationError(f"{source}: not a regular file (a link or missing): refused")
    shutil.copyfile(source, destination)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
