"""JWT structure and signatures as distribution 2.8 (libtrust) expects them."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from berth.auth.jwt import (
    InvalidToken,
    SigningError,
    b64url_decode,
    b64url_encode,
    decode,
    generate_signing_key_pair,
    load_signer,
    verify,
)
from testbed.pki import CertificateAuthority

CLAIMS = {"iss": "berth", "aud": "reg.ns.svc", "access": [{"type": "repository"}]}


@pytest.mark.parametrize(("key_type", "algorithm"), [("ec", "ES256"), ("rsa", "RS256")])
def test_signed_token_carries_alg_and_x5c_and_verifies(key_type: str, algorithm: str) -> None:
    key_pem, cert_pem = generate_signing_key_pair(key_type=key_type)  # type: ignore[arg-type]
    signer = load_signer(key_pem, cert_pem)
    token = signer.sign(CLAIMS)

    header, claims, _, signature = decode(token)
    assert header["typ"] == "JWT"
    assert header["alg"] == algorithm
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert header["x5c"] == [
        base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    ]
    assert claims == CLAIMS
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey) or key_type == "rsa"
    assert verify(token, public_key) == CLAIMS  # type: ignore[arg-type]
    if key_type == "ec":
        assert len(signature) == 64  # JWS r || s, not DER


def test_token_parts_are_unpadded_base64url() -> None:
    signer = load_signer(*generate_signing_key_pair())
    token = signer.sign({"sub": "robot-a" * 7})
    assert "=" not in token
    assert all(
        set(part) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for part in token.split(".")
    )


def test_tampered_claims_fail_verification() -> None:
    key_pem, cert_pem = generate_signing_key_pair()
    token = load_signer(key_pem, cert_pem).sign(CLAIMS)
    header, _, signature = token.split(".")
    forged = b64url_encode(json.dumps({**CLAIMS, "access": [{"name": "*"}]}).encode())
    public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    with pytest.raises(InvalidToken):
        verify(f"{header}.{forged}.{signature}", public_key)  # type: ignore[arg-type]


def test_token_signed_by_another_key_fails_verification() -> None:
    token = load_signer(*generate_signing_key_pair()).sign(CLAIMS)
    _, other_cert = generate_signing_key_pair()
    with pytest.raises(InvalidToken):
        verify(token, x509.load_pem_x509_certificate(other_cert).public_key())  # type: ignore[arg-type]


def test_x5c_carries_the_whole_chain_leaf_first() -> None:
    authority = CertificateAuthority()
    pair = authority.issue("berth-token-signer")
    chain_pem = pair.cert_pem + authority.cert_pem
    signer = load_signer(pair.key_pem, chain_pem)
    header, _, _, _ = decode(signer.sign(CLAIMS))
    subjects = [
        x509.load_der_x509_certificate(base64.b64decode(entry)).subject.rfc4514_string()
        for entry in header["x5c"]
    ]
    assert subjects == ["CN=berth-token-signer", "CN=berth-testbed-ca"]


def test_certificate_of_another_key_is_refused() -> None:
    key_pem, _ = generate_signing_key_pair()
    _, other_cert = generate_signing_key_pair()
    with pytest.raises(SigningError, match="does not hold the signing key"):
        load_signer(key_pem, other_cert)


def test_keys_libtrust_cannot_verify_are_refused() -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    p224 = ec.generate_private_key(ec.SECP224R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _, cert_pem = generate_signing_key_pair()
    with pytest.raises(SigningError, match="not supported"):
        load_signer(ed_key, cert_pem)
    with pytest.raises(SigningError, match="not supported"):
        load_signer(p224, cert_pem)
    with pytest.raises(SigningError, match="signing key"):
        load_signer(b"not a key", cert_pem)


@pytest.mark.parametrize("token", ["a.b", "a.b.c.d", "!!!.e30.AA", "e30.W10.AA"])
def test_malformed_tokens_do_not_decode(token: str) -> None:
    with pytest.raises(InvalidToken):
        decode(token)


@pytest.mark.parametrize("data", [b"", b"\xfb", b"\xfb\xff", b"\xfb\xff\xfe", b"\x00" * 7])
def test_b64url_round_trip(data: bytes) -> None:
    encoded = b64url_encode(data)
    assert "=" not in encoded
    assert b64url_decode(encoded) == data
