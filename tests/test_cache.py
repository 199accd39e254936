from __future__ import annotations

from pathlib import Path

import pytest

from modelc_build.cache import Cache, cache_key


def test_golden_key() -> None:
    """Changing how keys are made must be deliberate: it invalidates every user's cache."""
    material = {"step": "export", "source": {"weights": "ab" * 32}, "export": {"opset": 18}, "tools": {"torch": "2.13.0"}}
    assert cache_key(material) == "517993b4e861b45eaadc7004a041e7a5c65aa5b468cb6f59c38fe511de48b649"


def test_key_ignores_dict_order() -> None:
    assert cache_key({"a": 1, "b": {"c": 2, "d": 3}}) == cache_key({"b": {"d": 3, "c": 2}, "a": 1})


def produced(tmp_path: Path, content: bytes) -> Path:
    folder = tmp_path / f"out-{content.hex()}"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(content)
    return folder


def test_put_get_and_sharding(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    key = cache_key({"x": 1})
    entry = cache.put(key, "export", produced(tmp_path, b"abc"))
    assert entry.path == tmp_path / "cache" / key[:2] / key
    got, reason = cache.get(key)
    assert got is not None and reason == "" and got.file("model.onnx").read_bytes() == b"abc"
    assert got.files == entry.files


def test_corrupted_entry_is_dropped(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    key = cache_key({"x": 2})
    entry = cache.put(key, "export", produced(tmp_path, b"abc"))
    entry.file("model.onnx").write_bytes(b"abd")
    got, reason = cache.get(key)
    assert got is None and "model.onnx changed" in reason
    assert not entry.path.exists()
    assert cache.get(key) == (None, "not in cache")


def test_ls_and_gc(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    old = cache.put(cache_key({"old": 1}), "export", produced(tmp_path, b"old"))
    cache.put(cache_key({"new": 1}), "simplify", produced(tmp_path, b"new!"))
    record = (old.path / "entry.json").read_text().replace(f'"created": {old.created}', f'"created": {old.created - 10 * 86400}')
    (old.path / "entry.json").write_text(record)
    assert sorted(e.step for e in cache.entries()) == ["export", "simplify"]
    removed, freed = cache.gc(keep_days=7)
    assert (removed, freed) == (1, 3)
    assert [e.step for e in cache.entries()] == ["simplify"]


@pytest.mark.parametrize("record", ["[]", "{}", '{"files": []}', '{"files": {"a": 1}}', "not json"])
def test_an_entry_record_of_the_wrong_shape_is_dropped(tmp_path: Path, record: str) -> None:
    cache = Cache(tmp_path / "cache")
    key = cache_key({"shape": record})
    entry = cache.put(key, "export", produced(tmp_path, b"data"))
    (entry.path / "entry.json").write_text(record)
    found, reason = cache.get(key)
    assert found is None and "dropped" in reason
    assert cache.entries() == [] and not entry.path.exists()


def test_a_cache_path_that_is_a_file_is_a_write_error(tmp_path: Path) -> None:
    from modelc_build.errors import WriteError

    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="the step cache must be a folder"):
        Cache(tmp_path / "file")


def test_gc_removes_a_killed_builds_scratch_folders(tmp_path: Path) -> None:
    from tests.conftest import stale_and_fresh_folders

    cache = Cache(tmp_path / "cache")
    old, fresh = tmp_path / "cache/build-abc", tmp_path / "cache/release-x-def"
    stale_and_fresh_folders(old, fresh)
    cache.gc(keep_days=30)
    assert not old.exists() and fresh.exists()  # a running build's scratch stays


def test_a_transient_result_serves_its_build_and_is_a_miss_for_the_next(tmp_path: Path) -> None:
    """A check that could not run (a broken emulator) is reported by the build that made it and
    tried again by the next one, never served from the cache as if it were the artifact's verdict."""
    from modelc_build.cache import TRANSIENT_FILE

    cache = Cache(tmp_path / "cache")
    key = cache_key({"x": 2})
    out = produced(tmp_path, b"result")
    (out / TRANSIENT_FILE).write_text("the emulated check could not run: it stalled\n")
    entry = cache.put(key, "verify:x@haswell", out)
    assert entry.file("model.onnx").read_bytes() == b"result"  # this build reads it
    got, reason = cache.get(key)
    assert got is None and reason == "the last result is not reused (the emulated check could not run: it stalled)"
    again = cache.put(key, "verify:x@haswell", produced(tmp_path, b"judged"))  # the next build's run replaces it
    assert cache.get(key)[0] is not None and again.file("model.onnx").read_bytes() == b"judged"
