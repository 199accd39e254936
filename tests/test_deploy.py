"""Deploy-side faults: concurrent pulls, unknown targets, damaged manifests, manifests that list
what is not there. Real signatures (ECDSA keys from `modelc keygen`'s code), a real folder store."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from modelc_build.deploy import pull, verify_folder
from modelc_build.errors import InputError, VerificationError
from modelc_build.manifest import FileEntry, content_digest, sha256_file
from modelc_build.signing import Signer, Trust, sign_release, write_key_pair
from modelc_build.stores.local import LocalStore


def signed_release(tmp_path: Path, files: dict[str, bytes], listed: list[dict] | None = None) -> tuple[LocalStore, Trust]:
    write_key_pair(tmp_path / "key")
    folder = tmp_path / "staged"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    entries = [FileEntry(name, sha256_file(folder / name), len(data)) for name, data in files.items()]
    manifest = {"format_version": 2, "name": "m", "version": "1.0", "content_digest": content_digest(entries),
                "artifacts": [{"target": "onnx", "backend": "onnx", "precision": "fp32", "files": list(files)}],
                "files": listed if listed is not None else [{"path": e.path, "sha256": e.sha256, "size": e.size}
                                                            for e in entries]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    sign_release(folder, Signer(key=tmp_path / "key.key"))
    store = LocalStore(tmp_path / "store")
    store.push(folder, "m", "1.0", content_digest(entries))
    return store, Trust(public_key=tmp_path / "key.pub")


def test_two_pulls_of_one_release_at_once_both_succeed_apart(tmp_path: Path) -> None:
    store, trust = signed_release(tmp_path, {"onnx/model.onnx": b"graph" * 1000, "report.md": b"# r", "report.json": b"{}"})
    errors: list[BaseException] = []

    def one(dest: str) -> None:
        try:
            pull(store, "m", "1.0", tmp_path / "deploy" / dest, trust, target="onnx" if dest == "b" else None)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(dest,)) for dest in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (tmp_path / "deploy/a/report.md").exists() and (tmp_path / "deploy/b/onnx/model.onnx").exists()
    assert list((tmp_path / "deploy").glob(".modelc-pull-*")) == []


def test_an_unknown_target_leaves_no_staging_folder(tmp_path: Path) -> None:
    store, trust = signed_release(tmp_path, {"onnx/model.onnx": b"graph"})
    with pytest.raises(InputError, match="--target nope: the release holds onnx"):
        pull(store, "m", "1.0", tmp_path / "deploy/x", trust, target="nope")
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == []


def test_a_manifest_that_is_not_json_is_refused_and_nothing_kept(tmp_path: Path) -> None:
    store, trust = signed_release(tmp_path, {"onnx/model.onnx": b"graph"})
    (tmp_path / "store/m/1.0/manifest.json").write_text("{not json")
    with pytest.raises(VerificationError, match="not a readable JSON manifest"):
        pull(store, "m", "1.0", tmp_path / "deploy/x", trust)
    assert sorted(p.name for p in (tmp_path / "deploy").iterdir()) == []


@pytest.mark.parametrize("listed,problem", [
    ([{"path": "../outside.bin", "sha256": "0" * 64, "size": 1}], "would escape the destination folder"),
    ([{"path": "ghost.onnx", "sha256": "0" * 64, "size": 1}], "the manifest lists ghost.onnx, which is missing"),
])
def test_verify_refuses_a_signed_manifest_listing_what_is_not_there(tmp_path: Path, listed: list, problem: str) -> None:
    signed_release(tmp_path, {"onnx/model.onnx": b"graph"}, listed=listed)
    with pytest.raises(VerificationError, match=problem):
        verify_folder(tmp_path / "store/m/1.0", Trust(public_key=tmp_path / "key.pub"))
