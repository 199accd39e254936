"""The OCI client against the real test registry behind a proxy that demands a bearer token and
injects faults: retries, resumed downloads, auth, secrets kept out of messages."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from modelc_build.errors import StoreError, VerificationError
from modelc_build.manifest import safe_relative_path
from modelc_build.stores.oci import OciStore
from tests.services.faulty_proxy import SECRET, TOKEN, USER, Faults, start_proxy


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def proxy(registry: Any, faults: Faults) -> Iterator[str]:
    yield from start_proxy(f"http://{registry.host}", faults)


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELC_REGISTRY_USER", USER)
    monkeypatch.setenv("MODELC_REGISTRY_TOKEN", SECRET)


def fake_release(folder: Path, name: str = "client", version: str = "1.0.0", size: int = 3 * 1024 * 1024) -> Path:
    """A release folder as modelc lays it out (files + manifest.json listing them)."""
    release = folder / "release"
    (release / "onnx").mkdir(parents=True)
    (release / "onnx" / "model.onnx").write_bytes(np.random.default_rng(0).bytes(size))
    (release / "report.md").write_text("# report\n")
    files = [{"path": p, "sha256": hashlib.sha256((release / p).read_bytes()).hexdigest(), "size": (release / p).stat().st_size}
             for p in ("onnx/model.onnx", "report.md")]
    (release / "manifest.json").write_text(json.dumps({"name": name, "version": version, "files": files,
                                                       "content_digest": "c" * 64}))
    return release


def test_bearer_auth_retries_and_a_resumed_download(tmp_path: Path, proxy: str, faults: Faults, credentials: None) -> None:
    release = fake_release(tmp_path)
    store = OciStore(f"oci://{proxy}/auth", chunk_size=1024 * 1024)  # 3 chunks per upload
    store.backoff = 0.05
    faults.fail_5xx = 3
    assert store.push(release, "client", "1.0.0", "c" * 64).created
    assert faults.fail_5xx == 0 and faults.token_requests >= 1
    assert f"Bearer {TOKEN}-0" in faults.seen_authorizations

    faults.cut_blob_downloads = 1
    fresh = OciStore(f"oci://{proxy}/auth")
    fresh.fetch("client", "1.0.0", tmp_path / "out", lambda manifest: None)
    assert (tmp_path / "out" / "onnx" / "model.onnx").read_bytes() == (release / "onnx" / "model.onnx").read_bytes()
    assert any(r.startswith("bytes=") and r != "bytes=0-" for r in faults.seen_ranges)  # resumed, not restarted
    assert not list((tmp_path / "out").rglob("*.part"))
    assert fresh.list("client") == [("client", "1.0.0")]


def test_wrong_credentials_fail_without_showing_the_secret(tmp_path: Path, proxy: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELC_REGISTRY_USER", USER)
    monkeypatch.setenv("MODELC_REGISTRY_TOKEN", "wrong-" + SECRET)
    with pytest.raises(StoreError) as caught:
        OciStore(f"oci://{proxy}/auth").push(fake_release(tmp_path), "client", "2.0.0", "d" * 64)
    assert "token service refused access" in caught.value.message
    assert SECRET not in caught.value.message and "wrong-" not in caught.value.message


def test_a_dead_registry_is_a_store_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = OciStore(f"oci://127.0.0.1:{port}/none")
    store.backoff = 0.01
    store_module = __import__("modelc_build.stores.oci", fromlist=["RETRIES"])
    with pytest.raises(StoreError, match=r"failed after \d+ attempts: ConnectionError"):
        store.list("x")
    assert store_module.RETRIES >= 3


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "a\\b", "", "a//b", "./a"])
def test_names_that_escape_are_refused(name: str) -> None:
    with pytest.raises(VerificationError, match="would escape"):
        safe_relative_path(name)


def test_plain_http_only_for_loopback_or_listed_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert OciStore("oci://ghcr.io/org").root == "https://ghcr.io"
    assert OciStore("oci://127.0.0.1:5000/models").root == "http://127.0.0.1:5000"
    monkeypatch.setenv("MODELC_INSECURE_REGISTRIES", "registry.lan:5000")
    assert OciStore("oci://registry.lan:5000/m").root == "http://registry.lan:5000"
    assert OciStore("oci://ghcr.io/org").repository("tiny") == "org/tiny"
    with pytest.raises(StoreError, match="expected oci://HOST"):
        OciStore("oci:///nohost")


def test_rate_limits_are_waited_out_as_the_registry_asks(tmp_path: Path, proxy: str, faults: Faults, credentials: None) -> None:
    release = fake_release(tmp_path)
    store = OciStore(f"oci://{proxy}/ratelimit")
    store.backoff = 0.01  # far below Retry-After: 1, so a wait of about a second is the header's doing
    faults.rate_limited = 2
    assert store.push(release, "client", "1.0.0", "c" * 64).created
    assert faults.rate_limited == 0 and len(faults.retry_after_seen) >= 2
    assert min(faults.retry_after_seen[:2]) >= 0.9


def test_a_token_that_expires_during_a_long_push_is_refreshed(tmp_path: Path, proxy: str, faults: Faults,
                                                             credentials: None) -> None:
    release = fake_release(tmp_path)
    store = OciStore(f"oci://{proxy}/expiry", chunk_size=1024 * 1024)  # several requests per blob
    faults.expire_token_after = 3
    assert store.push(release, "client", "1.0.0", "c" * 64).created
    assert faults.generation >= 2 and faults.token_requests >= 3  # expired more than once, refreshed each time
    fresh = OciStore(f"oci://{proxy}/expiry")
    fresh.fetch("client", "1.0.0", tmp_path / "out", lambda manifest: None)
    assert (tmp_path / "out/onnx/model.onnx").read_bytes() == (release / "onnx/model.onnx").read_bytes()


def test_tags_are_read_page_by_page(tmp_path: Path, proxy: str, faults: Faults, credentials: None) -> None:
    store = OciStore(f"oci://{proxy}/pages")
    for version in ("1.2.0", "1.10.0", "0.9.0", "2.0.0", "1.3.0"):
        store.push(fake_release(tmp_path / version, version=version), "client", version, "c" * 64)
    faults.tags_page = 2
    assert store.list("client") == [("client", v) for v in ("0.9.0", "1.2.0", "1.3.0", "1.10.0", "2.0.0")]
    assert faults.tag_pages_served >= 3  # five tags (and the signature tags) two at a time


@pytest.mark.parametrize("how", ["auths", "helper"])
def test_credentials_come_from_the_docker_config_as_docker_login_leaves_them(tmp_path: Path, proxy: str,
                                                                            monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """After docker/login-action (or `docker login`, `oras login`): an `auths` entry, or a
    credential helper (a stand-in `docker-credential-modelctest` on the PATH)."""
    import base64
    import os
    import stat

    for name in ("MODELC_REGISTRY_USER", "MODELC_REGISTRY_TOKEN", "GITHUB_ACTOR", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    config: dict[str, Any] = {}
    if how == "auths":
        config["auths"] = {proxy: {"auth": base64.b64encode(f"{USER}:{SECRET}".encode()).decode()}}
    else:
        helper = tmp_path / "bin" / "docker-credential-modelctest"
        helper.parent.mkdir()
        helper.write_text("#!/bin/sh\nread host\n"
                          f"[ \"$host\" = \"{proxy}\" ] && echo '{{\"Username\": \"{USER}\", \"Secret\": \"{SECRET}\"}}'\n")
        helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{helper.parent}{os.pathsep}{os.environ['PATH']}")
        config["credHelpers"] = {proxy: "modelctest"}
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    store = OciStore(f"oci://{proxy}/docker-{how}")
    assert store.push(fake_release(tmp_path), "client", "1.0.0", "c" * 64).created
    assert store.list("client") == [("client", "1.0.0")]
