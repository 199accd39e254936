"""A registry that never answers, or asks to be retried in an hour, ends a push or pull within
the operation's deadline (--timeout), with exit code 9 and one line naming the registry."""
from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


@pytest.fixture
def silent_registry() -> str:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            held.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    yield f"oci://127.0.0.1:{server.getsockname()[1]}/models"
    server.close()
    for connection in held:
        connection.close()


@pytest.fixture
def come_back_in_an_hour() -> str:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(429)
            self.send_header("Retry-After", "3600")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"oci://127.0.0.1:{server.server_address[1]}/models"
    server.shutdown()


def test_a_registry_that_never_answers_ends_a_listing_within_the_deadline(silent_registry: str, run_cli) -> None:
    started = time.monotonic()
    result = run_cli("ls", "--store", silent_registry, "--timeout", "4")
    elapsed = time.monotonic() - started
    assert result.exit_code == 9, result.stderr
    assert elapsed < 12, elapsed
    line = result.stderr.strip()
    assert line.startswith(f"error: {silent_registry}: list did not finish within 4 s (--timeout")
    assert len(line.splitlines()) == 1


def test_a_pull_from_a_registry_that_never_answers_writes_nothing(silent_registry: str, tmp_path: Path, run_cli) -> None:
    from modelc_build.signing import write_key_pair

    write_key_pair(tmp_path / "key")
    started = time.monotonic()
    result = run_cli("pull", "m:1.0.0", "--store", silent_registry, "--dest", tmp_path / "deploy", "--public-key",
                     tmp_path / "key.pub", "--timeout", "3")
    assert result.exit_code == 9 and time.monotonic() - started < 12, result.stderr
    assert not (tmp_path / "deploy").exists()


def test_retry_after_an_hour_is_not_obeyed(come_back_in_an_hour: str, run_cli) -> None:
    started = time.monotonic()
    result = run_cli("ls", "--store", come_back_in_an_hour, "--timeout", "20")
    assert result.exit_code == 9, result.stderr
    assert time.monotonic() - started < 10
    assert "the registry asked to retry after 3600 s, beyond the 20 s this operation may take" in result.stderr
