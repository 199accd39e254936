"""Signing modes other than a plain key: a certificate chain with the signer's identity checked,
and the key from the environment; plus the messages of failed verifications."""
from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modelc_build.manifest import SIGNATURE_FILE
from modelc_build.signing import SignatureError, Signer, Trust, sign_release, signer_from_options, verify_release, write_key_pair


def release(tmp_path: Path) -> Path:
    folder = tmp_path / "release"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(b"\x08\x01graph")
    (folder / "manifest.json").write_text('{"name": "m", "version": "1"}')
    return folder


def certificate_chain(tmp_path: Path, signer_email: str) -> tuple[Path, Path, Path]:
    """A CA and a code-signing leaf for `signer_email`: (leaf key, leaf cert, CA cert) as PEM files."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelc test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "release bot")]))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(signer_email)]), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp_path / "leaf.key", tmp_path / "leaf.pem", tmp_path / "ca.pem"
    paths[0].write_bytes(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return paths


def test_certificate_signing_checks_the_chain_and_the_signer(tmp_path: Path) -> None:
    folder = release(tmp_path)
    key, leaf, ca = certificate_chain(tmp_path, "release-bot@example.com")
    sign_release(folder, Signer(key=key, certificate_chain=(leaf, ca)))
    verify_release(folder, Trust(certificate_chain=(ca,), certificate_identity="release-bot@example.com"))
    with pytest.raises(SignatureError, match="signed by release bot, release-bot@example.com, not mallory@example.com"):
        verify_release(folder, Trust(certificate_chain=(ca,), certificate_identity="mallory@example.com"))
    (tmp_path / "other").mkdir()
    _, _, other_ca = certificate_chain(tmp_path / "other", "release-bot@example.com")  # same name, another CA
    with pytest.raises(SignatureError, match="verification with certificate chain"):
        verify_release(folder, Trust(certificate_chain=(other_ca,), certificate_identity="release-bot@example.com"))


def test_key_from_the_environment_is_used_and_not_left_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    private, public = write_key_pair(tmp_path / "ci")
    monkeypatch.setenv("MODELC_SIGNING_KEY", private.read_text())
    signer = signer_from_options(None)
    assert signer is not None
    before = set(Path(tempfile.gettempdir()).glob("modelc-key-*"))
    folder = release(tmp_path)
    sign_release(folder, signer)
    verify_release(folder, Trust(public_key=public))
    assert set(Path(tempfile.gettempdir()).glob("modelc-key-*")) == before


def test_signature_covers_every_file_and_says_which_changed(tmp_path: Path) -> None:
    from modelc_build.deploy import verify_folder

    private, public = write_key_pair(tmp_path / "k")
    folder = release(tmp_path)
    sign_release(folder, Signer(key=private))
    assert (folder / SIGNATURE_FILE).is_file()
    (folder / "extra.txt").write_text("smuggled")
    with pytest.raises(SignatureError, match="extra.txt is not in the signed release"):
        verify_folder(folder, Trust(public_key=public))
    (folder / "extra.txt").unlink()
    (folder / "onnx" / "model.onnx").unlink()
    with pytest.raises(SignatureError, match="onnx/model.onnx is missing"):
        verify_folder(folder, Trust(public_key=public))


def test_keygen_never_overwrites_and_other_key_types_are_explained(tmp_path: Path) -> None:
    from modelc_build.errors import UsageError

    write_key_pair(tmp_path / "k")
    with pytest.raises(UsageError, match="exists: choose another --out prefix"):  # exit 2: the command line
        write_key_pair(tmp_path / "k")
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = tmp_path / "ed.key"
    ed.write_bytes(ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(SignatureError, match="model-signing signs with ECDSA keys only"):
        sign_release(release(tmp_path), Signer(key=ed))


@pytest.mark.parametrize("which", ["public key file", "garbage in the environment", "an RSA key"])
def test_an_unusable_signing_key_is_refused_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            which: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from modelc_build.errors import UsageError
    from modelc_build.signing import write_key_pair

    write_key_pair(tmp_path / "k")
    key: Path | None = None
    if which == "public key file":
        key = tmp_path / "k.pub"
    elif which == "garbage in the environment":
        monkeypatch.setenv("MODELC_SIGNING_KEY", "not a key at all")
    else:
        key = tmp_path / "rsa.key"
        key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(UsageError) as caught:
        signer_from_options(key)
    assert caught.value.exit_code == 2
    assert {"public key file": "(that is a public key)", "garbage in the environment": "MODELC_SIGNING_KEY: not an",
            "an RSA key": "ECDSA (P-256/384/521) keys only"}[which] in caught.value.message
