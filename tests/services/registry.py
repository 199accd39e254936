"""A real OCI registry for the tests: CNCF distribution (Debian's `docker-registry`), started on
127.0.0.1 with filesystem storage in a temporary folder and no auth."""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

BINARY = "docker-registry"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path

    def url(self, repository: str = "models") -> str:
        return f"oci://{self.host}/{repository}"

    def blob_file(self, digest: str) -> Path:
        """Where distribution keeps a blob's bytes (to corrupt it in tamper tests)."""
        hexdigest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_registry(folder: Path) -> Iterator[Registry]:
    binary = shutil.which(BINARY)
    if binary is None:
        pytest.skip("docker-registry is not installed (Debian package docker-registry; .ci/run installs it)")
    port = _free_port()
    storage = folder / "storage"
    config = folder / "config.yml"
    config.write_text(f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  accesslog:
    disabled: true
""")
    log = (folder / "registry.log").open("wb")  # a pipe nobody reads would fill up and stall the registry
    process = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    import requests

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(folder / 'registry.log').read_text()[-500:]}")
        time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError("docker-registry did not answer on /v2/ within 20 s")
    try:
        yield Registry(f"127.0.0.1:{port}", storage)
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
