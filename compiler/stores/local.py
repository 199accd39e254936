"""The local store: `<root>/<name>/<version>/`, written atomically, immutable once written."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from compiler.cache import Cache
from compiler.errors import StoreError
from compiler.manifest import read_manifest
from compiler.stores import PushResult, Store


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root

    def step_cache(self) -> Cache:
        return Cache(self.root / ".step-cache")

    def release_path(self, name: str, version: str) -> Path:
        return self.root / name / version

    def push(self, staged: Path, name: str, version: str, content_digest: str) -> PushResult:
        final = self.release_path(name, version)
        existing = self._existing_digest(final)
        if existing is not None:
            return self._same_or_refuse(final, name, version, existing, content_digest)
        incoming = final.parent / f".incoming-{version}-{uuid.uuid4().hex[:8]}"
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
            raise StoreError(f"{final}: cannot write the release ({exc.strerror or exc}): check the store folder") from None
        return PushResult(str(final), created=True)

    @staticmethod
    def _existing_digest(final: Path) -> str | None:
        if not final.exists():
            return None
        try:
            return str(read_manifest(final)["content_digest"])
        except (OSError, ValueError, KeyError):
            raise StoreError(f"{final}: exists but holds no readable manifest.json; "
                             "it was not written by modelc: move it away") from None

    @staticmethod
    def _same_or_refuse(final: Path, name: str, version: str, existing: str, wanted: str) -> PushResult:
        if existing == wanted:
            return PushResult(str(final), created=False)
        raise StoreError(f"{name} {version} is already stored at {final} with different content "
                         f"(content digest {existing[:12]} there, {wanted[:12]} now); a version is immutable: "
                         "bump `version` in the recipe")

    def pull(self, name: str, version: str, destination: Path) -> Path:
        source = self.release_path(name, version)
        if not (source / "manifest.json").exists():
            raise StoreError(f"{name}:{version} is not in the store {self.root}")
        shutil.copytree(source, destination)
        return destination

    def list(self, name: str | None = None) -> list[tuple[str, str]]:
        if not self.root.is_dir():
            return []
        names = [name] if name else sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        found = []
        for release in names:
            folder = self.root / release
            if folder.is_dir():
                found += [(release, v.name) for v in sorted(folder.iterdir())
                          if not v.name.startswith(".") and (v / "manifest.json").exists()]
        return found


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
