"""Artifact stores, chosen by URL: a path or file:// URL is the local store (the default);
oci://HOST[:PORT]/REPOSITORY is an OCI registry. Both push, fetch and list the same way."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from modelc_build.errors import StoreError


class StepCache(Protocol):
    """What a build needs of a shared step cache (modelc_build.cache.Cache is one)."""

    def get(self, key: str) -> tuple[Any, str]:
        """(the entry, or None and why not)"""

    def put(self, key: str, step: str, produced: Path) -> Any:
        ...


@dataclass(frozen=True)
class PushResult:
    location: str
    created: bool  # False: the identical version was already stored (a no-op)
    digest: str | None = None  # sha256:… of the release's manifest as stored (an OCI manifest, or manifest.json)


class Store(ABC):
    @abstractmethod
    def push(self, staged: Path, name: str, version: str, content_digest: str) -> PushResult:
        """Publish a finished release folder; refuse to change an existing version."""

    @abstractmethod
    def fetch(self, name: str, version: str, destination: Path, wanted: Callable[[dict[str, Any]], set[str] | None]) -> None:
        """Copy a release into `destination` (a private staging folder): its manifest.json first,
        then the files `wanted(manifest)` names (None: all), and its signature if it has one.
        Checks each file against the digest the store holds it under; trusts nothing else."""

    def pull(self, name: str, version: str, destination: Path) -> Path:
        self.fetch(name, version, destination, lambda manifest: None)
        return destination

    @abstractmethod
    def list(self, name: str | None = None) -> list[tuple[str, str]]:
        ...

    @abstractmethod
    def stored_manifest(self, name: str, version: str) -> dict[str, Any] | None:
        """The manifest.json of a stored version, or None when the version is not stored."""

    @abstractmethod
    def location(self, name: str, version: str) -> str:
        """Where a version is (or would be) stored, for messages."""

    @abstractmethod
    def release_digest(self, name: str, version: str) -> str | None:
        """sha256:… of the stored version's manifest (what a provenance attestation names), None if
        the version is not stored."""

    def step_cache(self) -> StepCache | None:
        """A cache of step outputs kept in the store, shared by the jobs of a fanned-out build."""
        return None


def check_release_id(name: str, version: str) -> None:
    """Every store checks a release's name and version before they become a path or a tag."""
    from modelc_build.identity import name_problem, version_problem

    problem = name_problem(name) or version_problem(version)
    if problem:
        raise StoreError(f"refused: {problem}")


def version_order(versions: Iterable[str]) -> list[str]:
    """Versions in release order (1.2.0 before 1.10.0, PEP 440 rules via packaging); names that
    are no version sort after them, alphabetically."""
    from packaging.version import InvalidVersion, Version

    def key(text: str) -> tuple[int, Any, str]:
        try:
            return (0, Version(text), text)
        except InvalidVersion:
            return (1, (), text)

    return sorted(versions, key=key)


def open_store(url: str, timeout: float | None = None) -> Store:
    """`timeout`: seconds one registry operation may take, all attempts together (default 300,
    or MODELC_REGISTRY_TIMEOUT)."""
    if url.startswith("oci://"):
        from modelc_build.stores.oci import OciStore

        return OciStore(url, timeout=timeout)
    if url.startswith("file://"):
        url = url[len("file://"):]
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(f"store URL '{url}': the '{scheme}' scheme is not supported by this version of modelc; "
                         "use a folder path, a file:// URL or oci://HOST/REPOSITORY")
    from modelc_build.stores.local import LocalStore

    return LocalStore(Path(url))
