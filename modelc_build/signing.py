"""Signing and verifying releases with OpenSSF model-signing (Sigstore bundle format).

A signature covers every file of a release directory (sha256 per file, in an in-toto statement
inside a Sigstore bundle) and is kept in the release as `signature.sigstore.json`, which the
signature itself ignores. Three ways to sign: an ECDSA private key (PEM file, or PEM text in
`MODELC_SIGNING_KEY`), a key plus a certificate chain, or keyless Sigstore with the ambient OIDC
identity of a GitHub Actions job. Verification takes the matching public key, certificate chain
(with the signer's identity checked here, because model-signing does not), or Sigstore identity.

model-signing 1.1.1 needs three things handled here (see FACTS.md): `pyopenssl` is a declared
dependency of modelc, since model-signing imports it without declaring it; keys must be ECDSA
(keygen writes P-256); the hashing configuration is given explicitly on verification (guessing it
fails for sharded hashing); and a tampered bundle raises `InvalidSignature` with no message, which
becomes a `SignatureError` that says so.
"""
from __future__ import annotations

import os
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from modelc_build.errors import UsageError, VerificationError
from modelc_build.manifest import SIGNATURE_FILE

SIGNING_KEY_ENV = "MODELC_SIGNING_KEY"
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"


class SignatureError(VerificationError):
    """A signature is missing, invalid, from another signer, or does not match the files."""


@dataclass(frozen=True)
class Signer:
    """How to sign: exactly one of `key` (with optional `certificate_chain`), `key_from_environment`
    (PEM text in MODELC_SIGNING_KEY) or `sigstore`."""

    key: Path | None = None
    certificate_chain: tuple[Path, ...] = ()
    sigstore: bool = False
    key_from_environment: bool = False

    def describe(self) -> str:
        if self.sigstore:
            return "Sigstore keyless (ambient OIDC identity)"
        where = f"${SIGNING_KEY_ENV}" if self.key_from_environment else str(self.key)
        return f"{'certificate' if self.certificate_chain else 'ECDSA key'} {where}"


@dataclass(frozen=True)
class Trust:
    """How to verify: a public key, a certificate chain plus expected identity, or a Sigstore identity."""

    public_key: Path | None = None
    certificate_chain: tuple[Path, ...] = ()
    certificate_identity: str | None = None  # expected subject (email/URI/DNS SAN or CN) of the signing certificate
    sigstore_identity: str | None = None
    sigstore_issuer: str = GITHUB_ISSUER

    def describe(self) -> str:
        if self.public_key is not None:
            return f"public key {self.public_key}"
        if self.certificate_chain:
            return f"certificate chain {', '.join(map(str, self.certificate_chain))}"
        return f"Sigstore identity {self.sigstore_identity} ({self.sigstore_issuer})"


def _hashing_config() -> Any:
    from model_signing import hashing

    return hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False) \
        .set_ignored_paths(paths=[SIGNATURE_FILE], ignore_git_paths=False)


def signer_from_options(key: Path | None, certificate_chain: Iterable[Path] = (), sigstore: bool = False) -> Signer | None:
    """The signer the user asked for: options first, then `MODELC_SIGNING_KEY`; None when unsigned."""
    chain = tuple(certificate_chain)
    if sigstore and key is not None:
        raise SignatureError("give either a signing key or --sigstore, not both")
    if chain and key is None:
        raise SignatureError("a certificate chain needs its private key: add --signing-key")
    if sigstore:
        return Signer(sigstore=True)
    if key is not None:
        if not key.is_file():
            raise SignatureError(f"{key}: the signing key file does not exist: run `modelc keygen --out PREFIX` or fix the path")
        _check_private_key(key.read_bytes(), str(key))
        return Signer(key=key, certificate_chain=chain)
    if os.environ.get(SIGNING_KEY_ENV):
        _check_private_key(os.environ[SIGNING_KEY_ENV].encode(), SIGNING_KEY_ENV)
        return Signer(key_from_environment=True)
    return None


def _check_private_key(pem: bytes, where: str) -> None:
    """Before any build work: the key must be an unencrypted ECDSA private key in PEM (the only kind
    model-signing signs with), or the build would fail only at its very end."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from modelc_build.errors import UsageError

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        hint = " (that is a public key)" if b"PUBLIC KEY" in pem else ""
        raise UsageError(f"{where}: not an unencrypted PEM private key{hint}: give the .key file `modelc keygen` "
                         "writes") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UsageError(f"{where}: a {type(key).__name__.removeprefix('_')} key; model-signing signs with ECDSA "
                         "(P-256/384/521) keys only: run `modelc keygen --out PREFIX`")


def sign_release(release: Path, signer: Signer) -> Path:
    """Sign every file of `release`; writes and returns `release/signature.sigstore.json`."""
    from model_signing import signing

    config = signing.Config().set_hashing_config(_hashing_config())
    destination = release / SIGNATURE_FILE
    with _key_file(signer) as key:
        try:
            if signer.sigstore:
                config.use_sigstore_signer(use_ambient_credentials=True)
            elif key is None:
                raise SignatureError("no signing key given")
            elif signer.certificate_chain:
                config.use_certificate_signer(private_key=key, signing_certificate=signer.certificate_chain[0],
                                              certificate_chain=list(signer.certificate_chain[1:]))
            else:
                config.use_elliptic_key_signer(private_key=key)
            config.sign(release, destination)
        except SignatureError:
            raise
        except Exception as exc:
            raise SignatureError(f"signing with {signer.describe()} failed: {_reason(exc)}"
                                 + (" (model-signing signs with ECDSA keys only: make one with `modelc keygen`)"
                                    if "curve" in str(exc) else "")) from exc
    return destination


@contextmanager
def _key_file(signer: Signer) -> Iterator[Path | None]:
    """The signer's key as a path; PEM text from the environment goes to a 0600 temporary file
    that is removed afterwards (model-signing reads keys from files only)."""
    if not signer.key_from_environment:
        yield signer.key
        return
    handle, name = tempfile.mkstemp(prefix="modelc-key-", suffix=".pem")
    try:
        os.fchmod(handle, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(handle, "w") as stream:
            stream.write(os.environ[SIGNING_KEY_ENV])
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _verifying_config(trust: Trust) -> Any:
    from model_signing import verifying

    config = verifying.Config().set_hashing_config(_hashing_config())
    if trust.public_key is not None:
        if not trust.public_key.is_file():
            raise SignatureError(f"{trust.public_key}: the public key file does not exist")
        return config.use_elliptic_key_verifier(public_key=trust.public_key)
    if trust.certificate_chain:
        if not trust.certificate_identity:
            raise SignatureError("certificate verification needs the expected signer: add --certificate-identity")
        return config.use_certificate_verifier(certificate_chain=list(trust.certificate_chain))
    if trust.sigstore_identity:
        return config.use_sigstore_verifier(identity=trust.sigstore_identity, oidc_issuer=trust.sigstore_issuer)
    raise SignatureError("nothing to verify against: give --public-key, --certificate-chain with "
                         "--certificate-identity, or --sigstore-identity")


def verify_release(release: Path, trust: Trust) -> None:
    """Every file of `release` matches the signature, and the signature is from `trust`."""
    signature = release / SIGNATURE_FILE
    if not signature.is_file():
        raise SignatureError(f"{release}: no {SIGNATURE_FILE}: this release is not signed")
    config = _verifying_config(trust)
    try:
        config.verify(release, signature)
    except Exception as exc:
        raise SignatureError(f"{release}: verification with {trust.describe()} failed: {_reason(exc)}") from exc
    if trust.certificate_chain:
        _check_certificate_identity(signature, trust)


def verified_digests(signature: Path, trust: Trust) -> dict[str, str]:
    """The file digests (path -> sha256 hex) a signature vouches for, after checking the signature
    itself; used to verify a partial download (one target of a release)."""
    config = _verifying_config(trust)
    try:  # model-signing 1.x has no public per-file API: its verifier, reached through a guard
        from model_signing._signing import sign_sigstore as sigstore_bundle
        from model_signing._signing import sign_sigstore_pb as sigstore_pb
    except ImportError as exc:
        raise SignatureError(f"{signature}: this model-signing ({_model_signing_version()}) cannot verify part of a "
                             "release: pull the whole release, or install model-signing 1.1") from exc
    try:
        reader = sigstore_bundle.Signature if trust.sigstore_identity else sigstore_pb.Signature
        manifest = config._verifier.verify(reader.read(signature))  # model-signing 1.1: no public per-file API
    except Exception as exc:
        raise SignatureError(f"{signature}: verification with {trust.describe()} failed: {_reason(exc)}") from exc
    if trust.certificate_chain:
        _check_certificate_identity(signature, trust)
    return {descriptor.identifier: descriptor.digest.digest_hex for descriptor in manifest.resource_descriptors()}


def _model_signing_version() -> str:
    from modelc_build.manifest import package_version

    return package_version("model-signing") or "unknown version"


def _check_certificate_identity(signature: Path, trust: Trust) -> None:
    """model-signing accepts any leaf the chain vouches for: check the leaf names the expected signer."""
    import base64
    import json

    from cryptography import x509

    bundle = json.loads(signature.read_text())
    material = bundle.get("verificationMaterial", {})
    raw = (material.get("certificate") or {}).get("rawBytes") or \
        ((material.get("x509CertificateChain") or {}).get("certificates") or [{}])[0].get("rawBytes")
    if not raw:
        raise SignatureError(f"{signature}: the bundle carries no signing certificate")
    leaf = x509.load_der_x509_certificate(base64.b64decode(raw))
    names = [a.value for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    try:
        names += [str(v) for v in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                  .get_values_for_type(x509.RFC822Name)]
        names += [str(v) for v in leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                  .get_values_for_type(x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        pass
    if trust.certificate_identity not in names:
        raise SignatureError(f"{signature}: signed by {', '.join(map(str, names)) or 'an unnamed certificate'}, "
                             f"not {trust.certificate_identity}")


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    if not text:  # model-signing's InvalidSignature carries no message
        return "the signature itself is invalid (the bundle or its signed statement was altered, or another key signed it)"
    return text.splitlines()[0][:500]


def write_key_pair(prefix: Path) -> tuple[Path, Path]:
    """An ECDSA P-256 key pair: PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private, public = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (private, public):
        if path.exists():
            raise UsageError(f"{path} exists: choose another --out prefix (keys are never overwritten)")
    private.parent.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    handle = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "wb") as stream:
        stream.write(pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public
