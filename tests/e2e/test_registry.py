"""Signed releases through a real OCI registry (CNCF distribution on 127.0.0.1), and the tamper
cases a deploy stage must refuse: each exits 8 and writes nothing."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelc_build.manifest import SIGNATURE_FILE


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from modelc_build.signing import write_key_pair

    folder = tmp_path_factory.mktemp("keys")
    ours, theirs = write_key_pair(folder / "ours"), write_key_pair(folder / "theirs")
    return {"key": ours[0], "pub": ours[1], "other_key": theirs[0], "other_pub": theirs[1]}


def release_name(recipe: Path) -> tuple[str, str]:
    data = yaml.safe_load(recipe.read_text())
    return data["name"], data["version"]


def push(run_cli, recipe: Path, store: str, key: Path) -> Any:
    return run_cli("build", recipe, "--push", "--store", store, "--signing-key", key)


def test_build_push_pull_verify_one_target(tmp_path: Path, tiny_recipe, run_cli, registry, keys) -> None:
    recipe = tiny_recipe()
    store = registry.url("e2e-roundtrip")
    built = push(run_cli, recipe, store, keys["key"])
    assert built.exit_code == 0, built.stderr
    name, version = release_name(recipe)
    assert f"{name} {version}" in run_cli("ls", "--store", store).stdout

    dest = tmp_path / "deploy"
    pulled = run_cli("pull", f"{name}:{version}", "--store", store, "--target", "openvino-fp16", "--dest", dest,
                     "--public-key", keys["pub"])
    assert pulled.exit_code == 0, pulled.stderr
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    golden = ["golden/golden.json", "golden/inputs.npz", "golden/reference.npz", "golden/tolerances.json"]  # verify --run
    assert files == [".modelc-pulled.json"] + golden + ["manifest.json", "openvino-fp16/model.bin",  # what was pulled
                                                        "openvino-fp16/model.xml", "report.html", "report.json",
                                                        "report.md", SIGNATURE_FILE]
    assert not list(tmp_path.glob(".modelc-pull-*"))  # the staging folder became the destination

    everything = tmp_path / "all"
    assert run_cli("pull", f"{name}:{version}", "--store", store, "--dest", everything,
                   "--public-key", keys["pub"]).exit_code == 0
    verified = run_cli("verify", everything, "--public-key", keys["pub"])
    assert verified.exit_code == 0 and "every file matches the signature" in verified.stdout

    again = push(run_cli, recipe, store, keys["key"])  # identical content: nothing to do
    assert again.exit_code == 0 and "up to date" in again.stdout
    data = yaml.safe_load(recipe.read_text())
    data["export"]["opset"] = 16  # other bytes, same version
    recipe.write_text(yaml.safe_dump(data))
    changed = push(run_cli, recipe, store, keys["key"])
    assert changed.exit_code == 5 and "a version is immutable" in changed.stderr


def test_push_needs_a_signature_and_a_registry(tiny_recipe, run_cli, registry) -> None:
    unsigned = run_cli("build", tiny_recipe(), "--push", "--store", registry.url("e2e-unsigned"))
    assert unsigned.exit_code == 2 and "--push publishes signed releases only" in unsigned.stderr
    no_push = run_cli("build", tiny_recipe(), "--store", registry.url("e2e-unsigned"))
    assert no_push.exit_code == 2 and "add --push" in no_push.stderr


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, registry, keys) -> dict[str, Any]:
    """One signed release pushed to the registry through the store API, and its local copy."""
    from click.testing import CliRunner

    from modelc_build.cli import main
    from tests.conftest import FIXTURES, write_images

    folder = tmp_path_factory.mktemp("published")
    write_images(folder / "images", 6, classes=("a", "b", "c"))
    import torch

    from tests.fixtures.tiny_net import build_model

    torch.save(build_model().state_dict(), folder / "tiny.pt")
    recipe = folder / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "format_version": 1, "name": "tamper", "version": "1.0.0",
        "model": {"source": "torch", "factory": str(FIXTURES / "tiny_net.py") + ":build_model",
                  "weights": str(folder / "tiny.pt"), "inputs": [{"name": "images", "shape": ["batch", 3, 16, 16]}],
                  "outputs": ["logits"]},
        "export": {"exporter": "torchscript", "opset": 17},
        "targets": [{"backend": "onnxruntime", "precisions": ["fp32"]}, {"backend": "openvino", "precisions": ["fp32"]}],
        "latency": {"runs": 1, "warmup": 0}}))
    result = CliRunner().invoke(main, ["build", str(recipe), "--store", str(folder / "local"), "--signing-key",
                                       str(keys["key"]), "--cache", str(folder / "cache")], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    release = folder / "local" / "tamper" / "1.0.0"
    return {"release": release, "manifest": json.loads((release / "manifest.json").read_text()), "folder": folder}


def push_copy(registry, published: dict[str, Any], repository: str, change: Any = None) -> str:
    """Push (a possibly altered copy of) the published release to a fresh repository."""
    from modelc_build.stores import open_store

    staged = published["folder"] / f"staged-{repository}"
    shutil.copytree(published["release"], staged)
    if change is not None:
        change(staged)
    url = registry.url(repository)
    manifest = json.loads((staged / "manifest.json").read_text())
    open_store(url).push(staged, "tamper", "1.0.0", manifest["content_digest"])
    return url


def pull_cli(run_cli, url: str, dest: Path, public_key: Path, *extra: str) -> Any:
    return run_cli("pull", "tamper:1.0.0", "--store", url, "--dest", dest, "--public-key", public_key, *extra)


def flip_byte(path: Path, at: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def layer_digest(manifest: dict[str, Any], suffix: str) -> str:
    return "sha256:" + next(f["sha256"] for f in manifest["files"] if f["path"].endswith(suffix))


@pytest.mark.parametrize("case", ["artifact", "manifest"])
def test_registry_serving_other_bytes_is_refused(tmp_path: Path, run_cli, registry, published, keys, case: str) -> None:
    url = push_copy(registry, published, f"served-{case}")
    if case == "artifact":
        digest = layer_digest(published["manifest"], "model.bin")
    else:
        digest = "sha256:" + __import__("hashlib").sha256((published["release"] / "manifest.json").read_bytes()).hexdigest()
    flip_byte(registry.blob_file(digest))  # the registry now serves corrupted bytes under the same digest
    try:
        result = pull_cli(run_cli, url, tmp_path / "dest", keys["pub"])
    finally:
        flip_byte(registry.blob_file(digest))  # blobs are shared by every repository of the registry
    assert result.exit_code == 8, result.stderr
    assert "the registry served a blob whose sha256 is" in result.stderr
    assert not (tmp_path / "dest").exists() and not list(tmp_path.glob(".modelc-pull-*"))


def test_tampered_signature_is_refused(tmp_path: Path, run_cli, registry, published, keys) -> None:
    def alter_signature(staged: Path) -> None:
        bundle = json.loads((staged / SIGNATURE_FILE).read_text())
        signature = bundle["dsseEnvelope"]["signatures"][0]
        raw = bytearray(__import__("base64").b64decode(signature["sig"]))
        raw[-1] ^= 0x01
        signature["sig"] = __import__("base64").b64encode(bytes(raw)).decode()
        (staged / SIGNATURE_FILE).write_text(json.dumps(bundle))

    url = push_copy(registry, published, "bad-signature", alter_signature)
    result = pull_cli(run_cli, url, tmp_path / "dest", keys["pub"])
    assert result.exit_code == 8 and "the signature itself is invalid" in result.stderr, result.stderr
    assert not (tmp_path / "dest").exists()


def test_changed_manifest_is_refused(tmp_path: Path, run_cli, registry, published, keys) -> None:
    def alter_manifest(staged: Path) -> None:
        manifest = json.loads((staged / "manifest.json").read_text())
        manifest["gates_passed"] = not manifest["gates_passed"]
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    url = push_copy(registry, published, "bad-manifest", alter_manifest)
    result = pull_cli(run_cli, url, tmp_path / "dest", keys["pub"])
    assert result.exit_code == 8 and "manifest.json differs from the signed sha256" in result.stderr, result.stderr


def test_release_signed_with_another_key_is_refused(tmp_path: Path, run_cli, registry, published, keys) -> None:
    url = push_copy(registry, published, "other-key")
    result = pull_cli(run_cli, url, tmp_path / "dest", keys["other_pub"], "--target", "onnxruntime-fp32")
    assert result.exit_code == 8 and "Key mismatch" in result.stderr, result.stderr
    assert not (tmp_path / "dest").exists()


def test_unsigned_release_is_refused(tmp_path: Path, run_cli, registry, published, keys) -> None:
    url = push_copy(registry, published, "unsigned", lambda staged: (staged / SIGNATURE_FILE).unlink())
    result = pull_cli(run_cli, url, tmp_path / "dest", keys["pub"])
    assert result.exit_code == 8 and "not signed" in result.stderr, result.stderr


def test_file_swapped_in_from_another_version_is_refused(tmp_path: Path, run_cli, published, keys) -> None:
    release = tmp_path / "release"
    shutil.copytree(published["release"], release)
    (release / "onnxruntime-fp32" / "model.onnx").write_bytes((release / "onnx" / "model.onnx").read_bytes() + b"\0")
    result = run_cli("verify", release, "--public-key", keys["pub"])
    assert result.exit_code == 8 and "onnxruntime-fp32/model.onnx differs from the signed sha256" in result.stderr


def test_names_escaping_the_destination_and_links_are_refused(tmp_path: Path, run_cli, published, keys) -> None:
    store = tmp_path / "store"
    release = store / "tamper" / "1.0.0"
    shutil.copytree(published["release"], release)
    manifest = json.loads((release / "manifest.json").read_text())
    manifest["files"].append({"path": "../../escape.txt", "sha256": "0" * 64, "size": 1})
    (release / "manifest.json").write_text(json.dumps(manifest))
    result = pull_cli(run_cli, str(store), tmp_path / "dest", keys["pub"])
    assert result.exit_code == 8 and "would escape the destination folder" in result.stderr, result.stderr
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "dest").exists()

    linked = tmp_path / "linked"
    shutil.copytree(published["release"], linked)
    (linked / "report.md").unlink()
    (linked / "report.md").symlink_to("/etc/hostname")
    result = run_cli("verify", linked, "--public-key", keys["pub"])
    assert result.exit_code == 8 and "a link inside a release" in result.stderr


def test_signature_in_the_registry_is_a_referrer_with_the_tag_fallback(registry, published) -> None:
    import requests

    url = push_copy(registry, published, "referrers")
    repository = "referrers/tamper"
    base = f"http://{registry.host}/v2/{repository}"
    release = requests.get(f"{base}/manifests/1.0.0", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    digest = release.headers["Docker-Content-Digest"]
    assert release.json()["artifactType"] == "application/vnd.modelc.release.v1"
    created = release.json()["annotations"]["org.opencontainers.image.created"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created), created  # the manifest's build time
    titles = {layer["annotations"]["org.opencontainers.image.title"] for layer in release.json()["layers"]}
    assert "openvino-fp32/model.bin" in titles and "manifest.json" not in titles  # manifest.json is the config
    index = requests.get(f"{base}/manifests/{digest.replace(':', '-')}",
                         headers={"Accept": "application/vnd.oci.image.index.v1+json"}).json()
    signature = index["manifests"][0]
    assert signature["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    signed = requests.get(f"{base}/manifests/{signature['digest']}",
                          headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert signed["subject"]["digest"] == digest
    assert url.endswith("/referrers")


def test_fanned_out_jobs_share_steps_through_the_registry(tmp_path: Path, tiny_recipe, run_cli, registry, keys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.e2e.test_fan_out import fan_out

    recipe = tiny_recipe()
    store = registry.url("e2e-fan-out")
    fan_out(run_cli, recipe, store, tmp_path, monkeypatch, "--push", "--signing-key", str(keys["key"]))
    name, version = release_name(recipe)
    assert f"{name} {version}" in run_cli("ls", name, "--store", store).stdout


def test_an_interrupted_push_leaves_no_version_and_can_be_repeated(registry, published, monkeypatch) -> None:
    from modelc_build.errors import StoreError
    from modelc_build.stores import open_store
    from modelc_build.stores.oci import OciStore

    url = registry.url("interrupted")
    manifest = published["manifest"]

    def dropped(*args: object, **kwargs: object) -> None:
        raise StoreError("connection dropped while pushing the signature")

    monkeypatch.setattr(OciStore, "_push_signature", dropped)
    with pytest.raises(StoreError, match="connection dropped"):
        open_store(url).push(published["release"], "tamper", "1.0.0", manifest["content_digest"])
    assert open_store(url).list("tamper") == []  # blobs and an untagged manifest at most: no version
    monkeypatch.undo()
    assert open_store(url).push(published["release"], "tamper", "1.0.0", manifest["content_digest"]).created
    assert open_store(url).list("tamper") == [("tamper", "1.0.0")]
