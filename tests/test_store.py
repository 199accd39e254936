from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelc_build.errors import StoreError
from modelc_build.manifest import content_digest, file_entries
from modelc_build.stores import open_store
from modelc_build.stores.local import LocalStore


def staged_release(tmp_path: Path, payload: bytes, name: str = "staged") -> tuple[Path, str]:
    folder = tmp_path / name
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(payload)
    entries = file_entries(folder, ["onnx/model.onnx"])
    digest = content_digest(entries)
    files = [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in entries]
    (folder / "manifest.json").write_text(json.dumps({"content_digest": digest, "files": files}))
    return folder, digest


def test_push_is_immutable_and_identical_push_is_a_no_op(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    staged, digest = staged_release(tmp_path, b"one")
    first = store.push(staged, "m", "1.0", digest)
    assert first.created and (tmp_path / "store/m/1.0/onnx/model.onnx").read_bytes() == b"one"
    again = store.push(staged, "m", "1.0", digest)
    assert not again.created
    other, other_digest = staged_release(tmp_path, b"two", "other")
    with pytest.raises(StoreError, match=r"m 1.0 is already stored .* a version is immutable: bump `version`"):
        store.push(other, "m", "1.0", other_digest)
    assert (tmp_path / "store/m/1.0/onnx/model.onnx").read_bytes() == b"one"
    assert store.list() == [("m", "1.0")]
    assert not [p for p in (tmp_path / "store/m").iterdir() if p.name.startswith(".incoming")]


def test_pull_copies_a_release(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    staged, digest = staged_release(tmp_path, b"one")
    store.push(staged, "m", "1.0", digest)
    store.pull("m", "1.0", tmp_path / "out")
    assert (tmp_path / "out/onnx/model.onnx").read_bytes() == b"one"
    with pytest.raises(StoreError, match="m:2.0 is not in the store"):
        store.pull("m", "2.0", tmp_path / "out2")


def test_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    with pytest.raises(StoreError, match="the 's3' scheme is not supported"):
        open_store("s3://bucket/x")


def test_foreign_folder_at_version_path_is_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    (tmp_path / "store/m/1.0").mkdir(parents=True)
    staged, digest = staged_release(tmp_path, b"one")
    with pytest.raises(StoreError, match="holds no readable manifest.json"):
        store.push(staged, "m", "1.0", digest)


def test_versions_are_listed_in_release_order(tmp_path: Path) -> None:
    from modelc_build.stores import version_order

    assert version_order(["1.10.0", "1.2.0", "1.2.0rc1", "latest", "0.9"]) == ["0.9", "1.2.0rc1", "1.2.0", "1.10.0", "latest"]
    store = LocalStore(tmp_path / "store")
    for version, content in (("1.10.0", b"a"), ("1.2.0", b"b")):
        staged, digest = staged_release(tmp_path / version, content)
        store.push(staged, "m", version, digest)
    assert store.list("m") == [("m", "1.2.0"), ("m", "1.10.0")]


def test_a_killed_pushs_incoming_copy_is_removed_by_the_next_push(tmp_path: Path) -> None:
    from tests.conftest import stale_and_fresh_folders

    store = LocalStore(tmp_path / "store")
    abandoned, recent = tmp_path / "store/m/.incoming-1.0-dead", tmp_path / "store/m/.incoming-2.0-live"
    stale_and_fresh_folders(abandoned, recent)
    staged, digest = staged_release(tmp_path, b"new")
    assert store.push(staged, "m", "3.0", digest).created
    assert not abandoned.exists() and recent.exists()  # a push still copying is left alone
