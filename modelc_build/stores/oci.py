"""An OCI registry as the artifact store (`oci://HOST[:PORT]/REPO`), over the distribution API.

A release `NAME:VERSION` becomes the image manifest tagged VERSION in repository `REPO/NAME`:
- artifactType `application/vnd.modelc.release.v1`; the config blob is modelc's `manifest.json`
  (`application/vnd.modelc.manifest.v1+json`);
- one uncompressed layer per file, with the CNCF ModelPack layer media types (weights, weight
  configs, docs) and the file's path in `org.opencontainers.image.title` and
  `org.cncf.model.filepath`; a layer's digest is the file's sha256, the same digest the signature
  lists;
- the signature (a Sigstore bundle) as a second manifest whose `subject` is the release manifest:
  an OCI 1.1 referrer. Registries without the referrers API (CNCF distribution 2.8, GHCR) get the
  tag fallback too: an index tagged `sha256-<hex of the release manifest digest>` listing it.

The release manifest is pushed by digest, then its signature, then the version tag: a version is
visible only once it is complete. A tag is never moved: a version whose content digest differs is
refused. Blobs stream in fixed-size chunks (bounded memory); requests are retried with backoff on
5xx answers and dropped connections; a pull resumes partial files with HTTP ranges. Every byte
downloaded is checked against the digest that was asked for, because a registry may serve
corrupted data as it is.

Authentication: anonymous first; on a 401 challenge, a bearer token from the realm the registry
names (as GHCR and Docker Hub do) or basic auth, with `MODELC_REGISTRY_USER` /
`MODELC_REGISTRY_TOKEN`, or in GitHub Actions `GITHUB_ACTOR` / `GITHUB_TOKEN`. Credentials and
tokens never appear in messages.
"""
from __future__ import annotations

import builtins
import contextlib
import functools
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urljoin, urlparse

from modelc_build.errors import NetworkError, StoreError, VerificationError, VersionTaken
from modelc_build.manifest import SIGNATURE_FILE, safe_relative_path
from modelc_build.stores import PushResult, Store, check_release_id, version_order

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
RELEASE_TYPE = "application/vnd.modelc.release.v1"
STEP_TYPE = "application/vnd.modelc.step.v1"
STEP_CONFIG_TYPE = "application/vnd.modelc.step.config.v1+json"
STEP_REPOSITORY = "modelc-step-cache"
CONFIG_TYPE = "application/vnd.modelc.manifest.v1+json"
SIGNATURE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
LAYER_WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
LAYER_WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
LAYER_DOC = "application/vnd.cncf.model.doc.v1.raw"
TITLE = "org.opencontainers.image.title"
FILEPATH = "org.cncf.model.filepath"
CONTENT_DIGEST = "dev.modelc.content-digest"
CHUNK = 8 * 1024 * 1024  # upload chunk and download buffer: what a transfer holds in memory
RETRIES = 5
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0  # silence this long within a response ends the attempt
RETRY_AFTER_CAP_S = 30.0  # a registry asking to come back in an hour is not waited for
DEFAULT_TIMEOUT_S = 300.0  # one operation (a push, a pull, a listing), all attempts together
TAGS_PER_PAGE = 1000
MAX_TAG_PAGES = 1000
LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
RELEASE_MANIFEST = "manifest.json"


def layer_media_type(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".md", ".txt"):
        return LAYER_DOC
    if suffix in (".json", ".xml", ".yaml"):
        return LAYER_WEIGHT_CONFIG
    return LAYER_WEIGHT


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            data["artifactType"] = self.artifact_type
        if self.annotations:
            data["annotations"] = self.annotations
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        try:
            return cls(str(data["mediaType"]), str(data["digest"]), int(data["size"]), data.get("annotations"),
                       data.get("artifactType"))
        except (KeyError, TypeError, ValueError):
            raise VerificationError(f"the registry sent a malformed descriptor: {str(data)[:200]}") from None


class _Credentials:
    """Who modelc is at a registry: MODELC_REGISTRY_USER / MODELC_REGISTRY_TOKEN, else GitHub
    Actions' GITHUB_ACTOR / GITHUB_TOKEN, else what `docker login` (or docker/login-action, `oras
    login`) left in ~/.docker/config.json ($DOCKER_CONFIG): an `auths` entry for the host, or the
    credential helper `credHelpers` / `credsStore` names (`docker-credential-NAME get`)."""

    def __init__(self, host: str = "") -> None:
        self.host = host
        self.user = os.environ.get("MODELC_REGISTRY_USER") or os.environ.get("GITHUB_ACTOR") or "modelc"
        self.secret = os.environ.get("MODELC_REGISTRY_TOKEN") or os.environ.get("GITHUB_TOKEN")
        self._looked_up = bool(self.secret)

    def basic(self) -> tuple[str, str] | None:
        if not self._looked_up:
            self._looked_up = True
            found = docker_credentials(self.host)
            if found is not None:
                self.user, self.secret = found
        return (self.user, self.secret) if self.secret else None


def docker_credentials(host: str) -> tuple[str, str] | None:
    """(user, secret) for `host` from the Docker client's configuration, or None."""
    import base64

    folder = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    names = {host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"}
    helper = next((config["credHelpers"][n] for n in names if n in (config.get("credHelpers") or {})), None)
    if helper is None:
        auths = config.get("auths") or {}
        entry = next((auths[n] for n in names if n in auths), None)
        if isinstance(entry, dict) and entry.get("auth"):
            try:
                user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            return (user, secret) if secret else None
        if isinstance(entry, dict) and entry.get("identitytoken"):
            return ("<token>", str(entry["identitytoken"]))
        helper = config.get("credsStore")
    return _from_helper(str(helper), host) if helper else None


def _from_helper(helper: str, host: str) -> tuple[str, str] | None:
    """`docker-credential-HELPER get` with the host on stdin answers {"Username", "Secret"}."""
    import shutil
    import subprocess

    program = shutil.which(f"docker-credential-{helper}")
    if program is None:
        return None
    try:
        answer = subprocess.run([program, "get"], input=host, capture_output=True, text=True, timeout=30)
        found = json.loads(answer.stdout) if answer.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    if not isinstance(found, dict) or not found.get("Secret"):
        return None
    return str(found.get("Username") or "<token>"), str(found["Secret"])


def bounded(method: Callable[..., Any]) -> Callable[..., Any]:
    """A public store operation runs within the store's time budget (OciStore.operation)."""
    @functools.wraps(method)
    def run(self: OciStore, *args: Any, **kwargs: Any) -> Any:
        with self.operation(method.__name__):
            return method(self, *args, **kwargs)

    return run


class OciStore(Store):
    def __init__(self, url: str, chunk_size: int = CHUNK, timeout: float | None = None) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "oci" or not parsed.netloc:
            raise StoreError(f"store URL '{url}': expected oci://HOST[:PORT]/REPOSITORY")
        self.host = parsed.netloc
        self.base = parsed.path.strip("/")
        insecure = {h.strip() for h in os.environ.get("MODELC_INSECURE_REGISTRIES", "").split(",") if h.strip()}
        plain = parsed.hostname in LOOPBACK or self.host in insecure
        self.root = f"{'http' if plain else 'https'}://{self.host}"
        self.url = url
        self.chunk_size = chunk_size
        self.backoff = 0.5  # seconds before the first retry; doubles each time, with jitter
        self.timeout = timeout if timeout is not None else float(os.environ.get("MODELC_REGISTRY_TIMEOUT", DEFAULT_TIMEOUT_S))
        self._deadline: float | None = None
        self._operation = ""
        self._session: Any = None
        self._credentials = _Credentials(self.host)
        self._tokens: dict[str, str] = {}

    # --- HTTP ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def operation(self, name: str) -> Iterator[None]:
        """The deadline of one operation, every request and retry of it together; it starts with
        the outermost operation (a push that lists tags first shares one budget)."""
        if self._deadline is not None:
            yield
            return
        self._deadline, self._operation = time.monotonic() + self.timeout, name
        try:
            yield
        finally:
            self._deadline = None

    @property
    def session(self) -> Any:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def repository(self, name: str) -> str:
        return f"{self.base}/{name}" if self.base else name

    def _request(self, method: str, url: str, repository: str, *, body: Callable[[], Any] | None = None,
                 expect: tuple[int, ...] = (200,), headers: dict[str, str] | None = None, stream: bool = False,
                 push: bool = False, retry: Any = None) -> Any:
        """One API call with auth and retries, within the operation's deadline. `body` makes a fresh
        body for every attempt. `retry`: a caller's retry state to draw on (a resumed download
        counts every attempt against one budget); this is the client's only retry loop."""
        import requests

        full = url if url.startswith("http") else f"{self.root}/v2/{url}"
        scope = f"repository:{repository}:{'pull,push' if push else 'pull'}"
        retry = retry if retry is not None else self._retry_policy()
        refreshed = False
        while True:
            sent = dict(headers or {})
            token = self._tokens.get(scope)
            if token:
                sent["Authorization"] = token
            try:
                response = self.session.request(method, full, data=body() if body else None, headers=sent,
                                                stream=stream, timeout=self._timeouts(method, full))
            except (requests.ConnectionError, requests.Timeout) as exc:
                retry = self._next_retry(retry, method, full, error=exc)
                self._pause(retry, None, method, full)
                continue
            if response.status_code == 401 and (not token or not refreshed):
                # no token yet, or one that expired during a long transfer: (re)authenticate once
                refreshed = bool(token)
                self._tokens.pop(scope, None)
                self._authenticate(response, scope)
                if scope in self._tokens:
                    response.close()
                    continue
            if retry.is_retry(method, response.status_code, "Retry-After" in response.headers):
                retry = self._next_retry(retry, method, full, response=response)
                self._pause(retry, response, method, full)
                response.close()
                continue
            if response.status_code not in expect:
                raise self._error(method, full, response)
            return response

    def _remaining(self, method: str, full: str) -> float:
        """Seconds left of the operation's budget; a NetworkError when there are none."""
        if self._deadline is None:
            return self.timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise NetworkError(f"{self.url}: {self._operation or method} did not finish within {self.timeout:g} s "
                               f"(--timeout; the registry was at {method} {_path_of(full)}): check the registry, "
                               "or give it longer")
        return left

    def _timeouts(self, method: str, full: str) -> tuple[float, float]:
        left = self._remaining(method, full)
        return min(CONNECT_TIMEOUT_S, left), min(READ_TIMEOUT_S, left)

    def _pause(self, retry: Any, response: Any, method: str, full: str) -> None:
        """Back off before the next attempt: the registry's Retry-After (capped), else urllib3's
        exponential backoff with jitter, and never past the deadline."""
        asked = retry.get_retry_after(response.raw) if response is not None else None
        wait = min(float(asked), RETRY_AFTER_CAP_S) if asked is not None else retry.get_backoff_time()
        left = self._remaining(method, full)
        if wait >= left:
            said = f"asked to retry after {asked:g} s" if asked is not None else "kept failing"
            raise NetworkError(f"{self.url}: {method} {_path_of(full)}: the registry {said}, beyond the "
                               f"{self.timeout:g} s this operation may take (--timeout): try again later")
        time.sleep(wait)

    def _retry_policy(self) -> Any:
        """urllib3's Retry: idempotent requests only, on 429 (with Retry-After), 5xx and dropped
        connections, with exponential backoff and jitter; POST and PATCH (upload steps) are never
        repeated."""
        from urllib3.util.retry import Retry

        return Retry(total=RETRIES - 1, backoff_factor=self.backoff, status_forcelist=(429, 500, 502, 503, 504),
                     allowed_methods=frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
                     respect_retry_after_header=True, raise_on_status=False, backoff_max=RETRY_AFTER_CAP_S,
                     backoff_jitter=self.backoff)

    def _next_retry(self, retry: Any, method: str, full: str, *, error: Exception | None = None,
                    response: Any = None) -> Any:
        from urllib3.exceptions import MaxRetryError, ProtocolError

        if error is not None and method.upper() not in retry.allowed_methods:
            raise NetworkError(f"{self.url}: {method} {_path_of(full)} failed ({type(error).__name__}) and is not "
                               "repeated (not idempotent): push again") from error
        try:
            return retry.increment(method, full, response=response.raw if response is not None else None,
                                   error=None if error is None else ProtocolError(str(error)))  # a dropped connection
        except MaxRetryError as exhausted:
            what = type(error).__name__ if error is not None else f"HTTP {response.status_code}"
            raise NetworkError(f"{self.url}: {method} {_path_of(full)} failed after {len(retry.history) + 1} "
                               f"attempts: {what}") from exhausted

    def _authenticate(self, response: Any, scope: str) -> None:
        """Answer a 401 challenge: a bearer token from the named realm, or basic auth."""
        challenge = response.headers.get("WWW-Authenticate", "")
        kind, _, params = challenge.partition(" ")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if kind.lower() == "basic":
            credentials = self._credentials.basic()
            if credentials:
                import base64

                encoded = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
                self._tokens[scope] = f"Basic {encoded}"
            return
        if kind.lower() != "bearer" or "realm" not in fields:
            return
        query = {"service": fields.get("service", ""), "scope": fields.get("scope", scope)}
        answer = self.session.get(fields["realm"], params=query, auth=self._credentials.basic(),
                                  timeout=self._timeouts("GET", fields["realm"]))
        if answer.status_code != 200:
            raise StoreError(f"{self.url}: the registry's token service refused access to {query['scope']} "
                             f"(HTTP {answer.status_code}): set MODELC_REGISTRY_USER and MODELC_REGISTRY_TOKEN "
                             "(GITHUB_TOKEN in GitHub Actions) to an account that may use it")
        payload = answer.json()
        token = payload.get("token") or payload.get("access_token")
        if token:
            self._tokens[scope] = f"Bearer {token}"

    def _error(self, method: str, url: str, response: Any) -> StoreError:
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)[:300]
        except ValueError:
            pass
        hint = " (check MODELC_REGISTRY_USER / MODELC_REGISTRY_TOKEN)" if response.status_code in (401, 403) else ""
        return StoreError(f"{self.url}: {method} {_path_of(url)} answered HTTP {response.status_code}"
                          f"{': ' + detail if detail else ''}{hint}")

    # --- blobs --------------------------------------------------------------------------------

    def _blob_exists(self, repository: str, digest: str) -> bool:
        response = self._request("HEAD", f"{repository}/blobs/{digest}", repository, expect=(200, 404), push=True)
        return bool(response.status_code == 200)

    def _upload(self, repository: str, digest: str, size: int, read_range: Callable[[int, int], bytes]) -> None:
        """Chunked upload (POST, PATCH per chunk, PUT with the digest); skipped if the blob exists."""
        if self._blob_exists(repository, digest):
            return
        started = self._request("POST", f"{repository}/blobs/uploads/", repository, expect=(202,), push=True)
        location = urljoin(f"{self.root}/", started.headers["Location"])
        offset = 0
        while offset < size:
            length = min(self.chunk_size, size - offset)
            chunk: bytes = read_range(offset, length)
            response = self._request("PATCH", location, repository, body=functools.partial(bytes, chunk), expect=(202,), push=True,
                                     headers={"Content-Type": "application/octet-stream",
                                              "Content-Range": f"{offset}-{offset + length - 1}",
                                              "Content-Length": str(length)})
            location = urljoin(f"{self.root}/", response.headers["Location"])
            offset += length
        separator = "&" if "?" in location else "?"
        self._request("PUT", f"{location}{separator}digest={digest}", repository, expect=(201,), push=True,
                      headers={"Content-Length": "0"})

    # --- blobs and manifests: the public interface the step cache (and any other artifact kind) uses ----

    def upload_file(self, repository: str, path: Path, digest: str) -> None:
        with path.open("rb") as handle:
            def read_range(offset: int, length: int) -> bytes:
                handle.seek(offset)
                return handle.read(length)

            self._upload(repository, digest, path.stat().st_size, read_range)

    def upload_bytes(self, repository: str, data: bytes) -> Descriptor:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        self._upload(repository, digest, len(data), lambda offset, length: data[offset:offset + length])
        return Descriptor("", digest, len(data))

    def download_blob(self, repository: str, descriptor: Descriptor, destination: Path) -> None:
        """Stream a blob to `destination`, resuming a `.part` file, checking size and digest."""
        partial = destination.with_name(destination.name + ".part")
        destination.parent.mkdir(parents=True, exist_ok=True)
        hasher = _Sha256Stream(partial)  # hashes what is written as it is written: one read of each byte
        retry = self._retry_policy()  # one budget for every attempt of this blob, resumed or not
        full = f"{self.root}/v2/{repository}/blobs/{descriptor.digest}"
        while True:
            have = hasher.size
            if have > descriptor.size:
                partial.unlink()
                hasher = _Sha256Stream(partial)
                have = 0
            headers = {"Range": f"bytes={have}-"} if 0 < have < descriptor.size else {}
            try:
                if have < descriptor.size or descriptor.size == 0:
                    self._fetch_into(repository, descriptor, hasher, headers, retry)
                break
            except _Interrupted as dropped:  # the body stopped mid-way: resume from what arrived
                retry = self._next_retry(retry, "GET", full, error=dropped)
                self._pause(retry, None, "GET", full)
        digest = hasher.hexdigest()
        served = hasher.size
        if served != descriptor.size or f"sha256:{digest}" != descriptor.digest:
            partial.unlink()
            raise VerificationError(f"{self.url}: the registry served a blob whose sha256 is {digest[:16]}… "
                                    f"({served} bytes, {descriptor.size} expected) for "
                                    f"{descriptor.digest[:23]}… that was asked for: refused (the registry's copy "
                                    "is corrupt or was replaced)")
        os.replace(partial, destination)

    def _fetch_into(self, repository: str, descriptor: Descriptor, stream: _Sha256Stream, headers: dict[str, str],
                    retry: Any) -> None:
        import requests

        response = self._request("GET", f"{repository}/blobs/{descriptor.digest}", repository, stream=True,
                                 expect=(200, 206), headers=headers, retry=retry)
        if response.status_code == 200:  # the registry ignored the range: start over
            stream.restart()
        try:
            with stream.path.open("ab") as handle:
                for chunk in response.iter_content(chunk_size=256 * 1024):
                    handle.write(chunk)
                    stream.update(chunk)
                    if stream.size > descriptor.size:
                        break  # more than the descriptor says: the digest check refuses it
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, requests.Timeout):
            raise _Interrupted() from None
        finally:
            response.close()

    # --- manifests ----------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str, accept: str = MANIFEST_TYPE) -> tuple[dict[str, Any], str, int] | None:
        response = self._request("GET", f"{repository}/manifests/{reference}", repository, expect=(200, 404),
                                 headers={"Accept": accept})
        if response.status_code == 404:
            return None
        body = response.content
        digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        if reference.startswith("sha256:") and digest != reference:
            raise VerificationError(f"{self.url}: the registry served manifest {digest[:23]}… for {reference[:23]}…: refused")
        try:
            return json.loads(body), digest, len(body)
        except ValueError:
            raise VerificationError(f"{self.url}: {repository}:{reference} is not a JSON manifest") from None

    def put_manifest(self, repository: str, reference: str, manifest: dict[str, Any], media_type: str) -> tuple[str, int, Any]:
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        response = self._request("PUT", f"{repository}/manifests/{reference}", repository, body=lambda: body,
                                 expect=(201,), push=True, headers={"Content-Type": media_type})
        return f"sha256:{hashlib.sha256(body).hexdigest()}", len(body), response

    # --- the Store interface ------------------------------------------------------------------

    def location(self, name: str, version: str) -> str:
        check_release_id(name, version)
        return f"{self.url.rstrip('/')}/{name}:{version}"

    def step_cache(self) -> OciStepCache:
        return OciStepCache(self)

    @bounded
    def release_digest(self, name: str, version: str) -> str | None:
        check_release_id(name, version)
        found = self.get_manifest(self.repository(name), version)
        return None if found is None else found[1]

    @bounded
    def stored_manifest(self, name: str, version: str) -> dict[str, Any] | None:
        """The config blob of the tagged release (small; checked against its digest)."""
        check_release_id(name, version)
        import tempfile

        repository = self.repository(name)
        found = self.get_manifest(repository, version)
        if found is None:
            return None
        with tempfile.TemporaryDirectory(prefix="modelc-manifest-") as scratch:
            path = Path(scratch) / RELEASE_MANIFEST
            self.download_blob(repository, Descriptor.from_json(found[0]["config"]), path)
            manifest: dict[str, Any] = json.loads(path.read_text())
        return manifest

    @bounded
    def push(self, staged: Path, name: str, version: str, content_digest: str) -> PushResult:
        check_release_id(name, version)
        repository = self.repository(name)
        location = self.location(name, version)
        existing = self.get_manifest(repository, version)
        if existing is not None:
            theirs = (existing[0].get("annotations") or {}).get(CONTENT_DIGEST)
            if theirs == content_digest:
                return PushResult(location, created=False, digest=existing[1])
            raise VersionTaken(f"{name} {version} is already in {self.url} with different content (content digest "
                             f"{str(theirs)[:12]} there, {content_digest[:12]} now); a version is immutable: bump "
                             "`version` in the recipe")
        release_manifest = json.loads((staged / RELEASE_MANIFEST).read_text())
        layers = []
        for entry in sorted(release_manifest["files"], key=lambda e: e["path"]):
            path = str(entry["path"])
            safe_relative_path(path)
            digest = f"sha256:{entry['sha256']}"
            self.upload_file(repository, staged / path, digest)
            layers.append(Descriptor(layer_media_type(path), digest, int(entry["size"]), {TITLE: path, FILEPATH: path}))
        config = self.upload_bytes(repository, (staged / RELEASE_MANIFEST).read_bytes())
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": RELEASE_TYPE,
                    "config": Descriptor(CONFIG_TYPE, config.digest, config.size).to_json(),
                    "layers": [layer.to_json() for layer in layers],
                    "annotations": {"org.opencontainers.image.title": name, "org.opencontainers.image.version": version,
                                    "org.opencontainers.image.created": str(release_manifest.get("created", "")),
                                    CONTENT_DIGEST: content_digest}}
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        release_digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        self.put_manifest(repository, release_digest, manifest, MANIFEST_TYPE)  # by digest: not visible yet
        if (staged / SIGNATURE_FILE).is_file():
            self._push_signature(repository, staged / SIGNATURE_FILE, Descriptor(MANIFEST_TYPE, release_digest, len(body)))
        self.put_manifest(repository, version, manifest, MANIFEST_TYPE)  # the tag last: complete when visible
        return PushResult(location, created=True, digest=release_digest)

    def _push_signature(self, repository: str, signature: Path, subject: Descriptor) -> None:
        bundle = self.upload_bytes(repository, signature.read_bytes())
        empty = self.upload_bytes(repository, EMPTY_BLOB)
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": SIGNATURE_TYPE,
                    "config": Descriptor(EMPTY_TYPE, empty.digest, empty.size).to_json(),
                    "layers": [Descriptor(SIGNATURE_TYPE, bundle.digest, bundle.size,
                                          {TITLE: SIGNATURE_FILE}).to_json()],
                    "subject": subject.to_json()}
        body = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        digest, size, response = self.put_manifest(repository, f"sha256:{hashlib.sha256(body).hexdigest()}", manifest,
                                                    MANIFEST_TYPE)
        if response.headers.get("OCI-Subject") == subject.digest:
            return  # the registry indexes referrers itself
        # Tag fallback (OCI distribution 1.1): an index tagged after the subject's digest.
        tag = subject.digest.replace(":", "-")
        current = self.get_manifest(repository, tag, INDEX_TYPE)
        entries = [m for m in (current[0].get("manifests", []) if current else []) if m.get("digest") != digest]
        entries.append(Descriptor(MANIFEST_TYPE, digest, size, artifact_type=SIGNATURE_TYPE).to_json())
        self.put_manifest(repository, tag, {"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": entries}, INDEX_TYPE)

    def _signature_descriptor(self, repository: str, subject: str) -> Descriptor | None:
        response = self._request("GET", f"{repository}/referrers/{subject}?artifactType={SIGNATURE_TYPE}", repository,
                                 expect=(200, 404), headers={"Accept": INDEX_TYPE})
        index: dict[str, Any] | None = None
        if response.status_code == 200:
            try:
                index = response.json()
            except ValueError:
                index = None
        if not index or not index.get("manifests"):
            found = self.get_manifest(repository, subject.replace(":", "-"), INDEX_TYPE)
            index = found[0] if found else None
        for entry in (index or {}).get("manifests", []):
            if entry.get("artifactType") == SIGNATURE_TYPE:
                return Descriptor.from_json(entry)
        return None

    @bounded
    def fetch(self, name: str, version: str, destination: Path, wanted: Callable[[dict[str, Any]], set[str] | None]) -> None:
        """Download the release (or the files `wanted` picks from its manifest.json) and its
        signature into `destination`, every blob checked against its digest."""
        check_release_id(name, version)
        repository = self.repository(name)
        found = self.get_manifest(repository, version)
        if found is None:
            raise StoreError(f"{name}:{version} is not in {self.url}")
        manifest, digest, _ = found
        if manifest.get("artifactType") != RELEASE_TYPE or (manifest.get("config") or {}).get("mediaType") != CONFIG_TYPE:
            raise StoreError(f"{self.url}: {name}:{version} is not a modelc release (artifactType "
                             f"{manifest.get('artifactType')})")
        config = Descriptor.from_json(manifest["config"])
        self.download_blob(repository, config, destination / RELEASE_MANIFEST)
        chosen = wanted(json.loads((destination / RELEASE_MANIFEST).read_text()))
        for layer in manifest.get("layers", []):
            descriptor = Descriptor.from_json(layer)
            path = (descriptor.annotations or {}).get(TITLE, "")
            relative = safe_relative_path(path)
            if chosen is None or path in chosen:
                target = destination / relative
                if not (target.is_file() and f"sha256:{_sha256_of(target)}" == descriptor.digest):
                    self.download_blob(repository, descriptor, target)
        signature = self._signature_descriptor(repository, digest)
        if signature is not None:
            signed = self.get_manifest(repository, signature.digest)
            if signed is None or not signed[0].get("layers"):
                raise VerificationError(f"{self.url}: the signature of {name}:{version} is listed but its manifest "
                                        f"{signature.digest[:19]}… is missing or empty: refused")
            bundle = Descriptor.from_json(signed[0]["layers"][0])
            self.download_blob(repository, bundle, destination / SIGNATURE_FILE)

    @bounded
    def list(self, name: str | None = None) -> list[tuple[str, str]]:
        names = [name] if name else self._catalog()
        found = []
        for release in names:
            repository = self.repository(release)
            tags = self._tags(repository)
            found += [(release, tag) for tag in version_order(tags) if not tag.startswith("sha256-")]
        return found

    def _tags(self, repository: str) -> builtins.list[str]:
        """Every tag, page by page: the distribution API pages with `n`/`last` and a `Link` header
        naming the next page (GHCR pages at 100); a registry that ignores `n` answers in one page."""
        tags: builtins.list[str] = []
        url = f"{repository}/tags/list?n={TAGS_PER_PAGE}"
        for _ in range(MAX_TAG_PAGES):
            response = self._request("GET", url, repository, expect=(200, 404))
            if response.status_code == 404:
                return tags
            page = response.json().get("tags") or []
            if not isinstance(page, builtins.list) or not all(isinstance(tag, str) for tag in page):
                raise StoreError(f"{self.url}: {repository} answered tags/list with something that is not a list of tags")
            tags += page
            following = _next_link(response.headers.get("Link", ""))
            if following is None:
                return tags
            url = urljoin(f"{self.root}/", following)
        raise StoreError(f"{self.url}: {repository} lists more than {MAX_TAG_PAGES * TAGS_PER_PAGE} tags: refused")

    def _catalog(self) -> builtins.list[str]:
        response = self._request("GET", "_catalog", "", expect=(200, 404, 401))
        if response.status_code != 200:
            raise StoreError(f"{self.url}: this registry does not list its repositories: give a release name")
        prefix = f"{self.base}/" if self.base else ""
        return sorted(r[len(prefix):] for r in response.json().get("repositories") or []
                      if r.startswith(prefix) and r[len(prefix):] != STEP_REPOSITORY)


def _next_link(header: str) -> str | None:
    """The target of `Link: <URL>; rel="next"`, if any."""
    match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', header)
    return match.group(1) if match else None


class OciStepCache:
    """Step outputs shared by the jobs of a fanned-out build, in `REPO/modelc-step-cache`, one
    artifact per step key (tag `step-<key>`). Downloads are digest-checked and land in a local
    cache. Whoever may push to the repository can feed these steps, exactly as they could push a
    release: keep write access to the registry as narrow as release signing."""

    def __init__(self, store: OciStore) -> None:
        import tempfile

        from modelc_build.cache import Cache

        self.store = store
        self.repository = store.repository(STEP_REPOSITORY)
        self.local = Cache(Path(tempfile.mkdtemp(prefix="modelc-shared-steps-")))

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.local.root, ignore_errors=True)

    @staticmethod
    def _tag(key: str) -> str:
        return f"step-{key}"

    def get(self, key: str) -> tuple[Any, str]:
        entry, _ = self.local.get(key)
        if entry is not None:
            return entry, ""
        with self.store.operation("step cache get"):
            return self._download(key)

    def _download(self, key: str) -> tuple[Any, str]:
        found = self.store.get_manifest(self.repository, self._tag(key))
        if found is None or found[0].get("artifactType") != STEP_TYPE:
            return None, "not in the registry's step cache"
        import tempfile

        with tempfile.TemporaryDirectory(prefix="modelc-step-") as scratch:
            folder = Path(scratch)
            for layer in found[0].get("layers", []):
                descriptor = Descriptor.from_json(layer)
                relative = safe_relative_path((descriptor.annotations or {}).get(TITLE, ""))
                self.store.download_blob(self.repository, descriptor, folder / relative)
            step = (found[0].get("annotations") or {}).get("dev.modelc.step", "step")
            return self.local.put(key, step, folder), ""

    def put(self, key: str, step: str, produced: Path) -> None:
        """Jobs of one pipeline push the same key with the same bytes at the same moment (the export
        every target job starts from): distribution then refuses the later manifest (a blob the
        other upload was finishing). The entry is there when the other job's push completes, so a
        refused push looks again, then pushes once more."""
        with self.store.operation("step cache put"):
            try:
                self._upload(key, step, produced)
            except StoreError:
                if self.store.get_manifest(self.repository, self._tag(key)) is not None:
                    return
                time.sleep(1.0)
                self._upload(key, step, produced)

    def _upload(self, key: str, step: str, produced: Path) -> None:
        if self.store.get_manifest(self.repository, self._tag(key)) is not None:
            return  # another job stored it: same key, same content
        layers = []
        for path in sorted(p for p in produced.rglob("*") if p.is_file()):
            relative = str(path.relative_to(produced))
            digest = f"sha256:{_sha256_of(path)}"
            self.store.upload_file(self.repository, path, digest)
            layers.append(Descriptor(layer_media_type(relative), digest, path.stat().st_size,
                                     {TITLE: relative}).to_json())
        config = self.store.upload_bytes(self.repository, json.dumps({"key": key, "step": step}).encode())
        manifest = {"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "artifactType": STEP_TYPE,
                    "config": Descriptor(STEP_CONFIG_TYPE, config.digest, config.size).to_json(), "layers": layers,
                    "annotations": {"dev.modelc.step": step}}
        self.store.put_manifest(self.repository, self._tag(key), manifest, MANIFEST_TYPE)


class _Interrupted(Exception):
    pass


class _Sha256Stream:
    """sha256 and size of a file being appended to; an existing partial file (a resumed download)
    is read once, new bytes are hashed as they arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.restart(keep=path.exists())

    def restart(self, keep: bool = False) -> None:
        self._hash = hashlib.sha256()
        self.size = 0
        if keep:
            with self.path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    self.update(block)
        else:
            self.path.write_bytes(b"")

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _sha256_of(path: Path) -> str:
    from modelc_build.manifest import sha256_file

    return sha256_file(path)


def _path_of(url: str) -> str:
    """A URL without its query (upload state ids, digests) for messages."""
    return urlparse(url).path

