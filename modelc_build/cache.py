"""A content-addressed cache of step outputs, `.modelc/cache/` by default (or MODELC_CACHE).

An entry is a folder named by its key (sharded by the key's first two characters) holding the
step's files and `entry.json` (format version, step, every file's sha256). Entries are written
into a temporary folder and renamed into place, so a killed build never leaves a partial entry;
every read re-checks the digests, and a corrupted entry is dropped and rebuilt. A per-key file
lock makes two builds on one cache do each step once.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from modelc_build.manifest import sha256_file

CACHE_FORMAT_VERSION = 1
ENTRY_FILE = "entry.json"
# A step whose result must not be reused by a later build (a check that could not run: a broken or
# stalled emulator is a setup defect, not a property of the artifact) writes its reason here: the
# entry serves the build that made it and is a miss for every later one (never shared).
TRANSIENT_FILE = "transient.txt"
SCRATCH_PREFIXES = {"build", "release", "data"}  # temporary folders a build makes under the cache root
STALE_SECONDS = 3600  # no build keeps a scratch folder untouched this long


def cache_key(material: dict[str, Any]) -> str:
    """sha256 over canonical JSON of an explicit list of key material."""
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class CacheEntry:
    key: str
    step: str
    path: Path
    files: dict[str, str]  # relative path -> sha256
    created: float
    size: int

    def file(self, name: str) -> Path:
        return self.path / name


class Cache:
    def __init__(self, root: Path) -> None:
        from modelc_build.errors import WriteError

        if root.exists() and not root.is_dir():
            raise WriteError(f"{root}: the step cache must be a folder, and this is a file: give --cache (or "
                             "MODELC_CACHE) a folder")
        self.root = root

    def ensure_writable(self) -> None:
        """A build writes every step's output here: find out before the first step runs."""
        from modelc_build.errors import WriteError, write_problem

        probe = self.root / f".probe-{uuid.uuid4().hex[:8]}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise (write_problem(exc, f"the step cache {self.root} cannot be written")
                   or WriteError(f"the step cache {self.root} cannot be written ({exc.strerror}): give --cache (or "
                                 "MODELC_CACHE) a folder that can be written")) from exc

    def _entry_path(self, key: str) -> Path:
        return self.root / key[:2] / key

    @staticmethod
    def _entry(path: Path, record: dict[str, Any]) -> CacheEntry:
        files: dict[str, str] = record["files"]
        size = sum((path / name).stat().st_size for name in files if (path / name).exists())
        return CacheEntry(path.name, record["step"], path, files, record["created"], size)

    def get(self, key: str) -> tuple[CacheEntry | None, str]:
        """The entry and '' when present and intact; else None and the reason."""
        path = self._entry_path(key)
        if not path.is_dir():
            return None, "not in cache"
        try:
            record = json.loads((path / ENTRY_FILE).read_text())
            if not isinstance(record, dict) or not isinstance(record.get("files"), dict) or "created" not in record:
                raise ValueError(f"{ENTRY_FILE} is not an entry record")
            files: dict[str, str] = record["files"]
            for name, digest in files.items():
                if sha256_file(path / name) != digest:
                    raise ValueError(f"{name} changed")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._drop(path)
            return None, f"cache entry was corrupted ({exc}); dropped"
        if TRANSIENT_FILE in files:
            return None, f"the last result is not reused ({(path / TRANSIENT_FILE).read_text().strip()[:120]})"
        return self._entry(path, record), ""

    def put(self, key: str, step: str, produced: Path) -> CacheEntry:
        """Move the files of `produced` (a folder) into the cache under `key`."""
        final = self._entry_path(key)
        incoming = self.root / "tmp" / f"{key[:12]}-{uuid.uuid4().hex[:8]}"
        incoming.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(produced, incoming)
        (incoming / ENTRY_FILE).unlink(missing_ok=True)  # when copying an entry from another cache
        files = {p.relative_to(incoming).as_posix(): sha256_file(p) for p in sorted(incoming.rglob("*")) if p.is_file()}
        record = {"format_version": CACHE_FORMAT_VERSION, "key": key, "step": step, "created": time.time(), "files": files}
        (incoming / ENTRY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        for path in incoming.rglob("*"):
            if path.is_file():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            self._drop(final)
        try:
            os.rename(incoming, final)
            return self._entry(final, record)  # digests were just computed: no second hashing pass
        except OSError:
            shutil.rmtree(incoming, ignore_errors=True)  # another writer won the race with the same content
        entry, reason = self.get(key)
        if entry is None:
            raise OSError(f"cache entry {key[:12]} could not be written: {reason}")
        return entry

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive per-key lock across processes (released by the OS if the holder dies)."""
        from filelock import FileLock

        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with FileLock(str(locks / f"{key}.lock")):  # an OS lock: released if the holder dies
            yield

    def entries(self) -> list[CacheEntry]:
        found: list[CacheEntry] = []
        if not self.root.is_dir():
            return found
        for shard in sorted(self.root.iterdir()):
            if len(shard.name) != 2 or not shard.is_dir():
                continue
            for path in sorted(shard.iterdir()):
                try:
                    record = json.loads((path / ENTRY_FILE).read_text())
                    found.append(self._entry(path, record))
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    continue  # not an entry (a damaged one is dropped when a build next reads it)
        return found

    def gc(self, keep_days: float) -> tuple[int, int]:
        """Remove entries older than keep_days and stale temporary folders; (entries, bytes) freed."""
        cutoff = time.time() - keep_days * 86400
        removed, freed = 0, 0
        for entry in self.entries():
            if entry.created < cutoff:
                with self.lock(entry.key):
                    self._drop(entry.path)
                removed += 1
                freed += entry.size
        stale_scratch = [p for p in (self.root / "tmp").glob("*")] if (self.root / "tmp").is_dir() else []
        # a killed build's scratch folders (build-*, release-*, data-*): nothing else writes there
        stale_scratch += [p for p in self.root.glob("*") if p.is_dir() and p.name.split("-")[0] in SCRATCH_PREFIXES]
        for stale in stale_scratch:
            if stale.stat().st_mtime < time.time() - STALE_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        return removed, freed

    def _drop(self, path: Path) -> None:
        trash = self.root / "tmp" / f"drop-{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(path, trash)  # atomic removal from view first
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)
