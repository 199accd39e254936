"""An HTTP proxy in front of the test registry that demands a bearer token (the way GHCR does:
401 + WWW-Authenticate pointing at a token realm that takes basic auth) and injects faults:
503 answers, 429 answers with Retry-After, tokens that expire mid-transfer, and blob downloads cut
off half way."""
from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import requests

USER, SECRET, TOKEN = "ci-bot", "s3cret-registry-token", "issued-bearer-token"


@dataclass
class Faults:
    fail_5xx: int = 0  # answer this many requests with 503 first
    rate_limited: int = 0  # answer this many requests with 429 and Retry-After: 1 first
    expire_token_after: int = 0  # the issued token stops working after this many authorised requests (0: never)
    authorised: int = 0
    generation: int = 0  # tokens issued before the last expiry are refused
    retry_after_seen: list[float] = field(default_factory=list)  # seconds between a 429 and the next request
    tags_page: int = 0  # serve tags/list in pages of this many tags, with Link headers (as GHCR does)
    tag_pages_served: int = 0
    cut_blob_downloads: int = 0  # this many blob GETs send half the body, then drop the connection
    seen_ranges: list[str] = field(default_factory=list)
    seen_authorizations: set[str] = field(default_factory=set)
    token_requests: int = 0


def start_proxy(upstream: str, faults: Faults) -> Iterator[str]:
    last_429: list[float] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _token(self) -> None:
            faults.token_requests += 1
            expected = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self._reply(401, b'{"errors":[{"code":"DENIED"}]}')
                return
            self._reply(200, f'{{"token":"{TOKEN}-{faults.generation}"}}'.encode())

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self) -> None:
            if self.path.startswith("/token"):
                self._token()
                return
            faults.seen_authorizations.add(self.headers.get("Authorization", ""))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None  # read first: an unread body would poison the connection
            if self.headers.get("Authorization") != f"Bearer {TOKEN}-{faults.generation}":
                realm = f"http://{self.headers['Host']}/token"
                self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {
                    "WWW-Authenticate": f'Bearer realm="{realm}",service="test-registry",scope="repository:x:pull"'})
                return
            faults.authorised += 1
            if faults.expire_token_after and faults.authorised % faults.expire_token_after == 0:
                faults.generation += 1  # this token expired: the next request with it gets 401
            if last_429:
                faults.retry_after_seen.append(time.monotonic() - last_429.pop())
            if faults.rate_limited > 0:
                faults.rate_limited -= 1
                last_429.append(time.monotonic())
                self._reply(429, b"slow down", {"Retry-After": "1"})
                return
            if faults.fail_5xx > 0:
                faults.fail_5xx -= 1
                self._reply(503, b"busy")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "authorization")}
            if "Range" in self.headers:
                faults.seen_ranges.append(self.headers["Range"])
            if faults.tags_page and "/tags/list" in self.path and self.command == "GET":
                self._tags_page(upstream, headers)
                return
            answer = requests.request(self.command, upstream + self.path, data=body, headers=headers,
                                      allow_redirects=False, stream=True)
            content = answer.raw.read() if self.command != "HEAD" else b""
            cut = self.command == "GET" and "/blobs/sha256:" in self.path and faults.cut_blob_downloads > 0 \
                and len(content) > 1024 * 1024  # big blobs only: the client resumes at its buffer size
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    if key.lower() == "location" and value.startswith(upstream):
                        value = value.replace(upstream, f"http://{self.headers['Host']}")
                    self.send_header(key, value)
            self.send_header("Content-Length", answer.headers.get("Content-Length", str(len(content)))
                             if self.command == "HEAD" else str(len(content)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if cut:
                faults.cut_blob_downloads -= 1
                self.wfile.write(content[:len(content) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(content)

        def _tags_page(self, upstream: str, headers: dict[str, str]) -> None:
            """The registry's whole tag list, served `tags_page` at a time after `last`."""
            import json
            from urllib.parse import parse_qs, urlparse

            path, query = urlparse(self.path).path, parse_qs(urlparse(self.path).query)
            every = sorted(requests.get(upstream + path, headers=headers).json().get("tags") or [])
            last = query.get("last", [""])[0]
            rest = [tag for tag in every if tag > last]
            page, more = rest[:faults.tags_page], len(rest) > faults.tags_page
            faults.tag_pages_served += 1
            link = {"Link": f'<{path}?n={faults.tags_page}&last={page[-1]}>; rel="next"'} if more else {}
            self._reply(200, json.dumps({"name": path, "tags": page}).encode(), {"Content-Type": "application/json", **link})

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
