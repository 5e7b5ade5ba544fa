"""The certificates Berth makes: a Registry's CA, its serving certificate, and the token
server's self-signed signing certificate, field by field."""

from __future__ import annotations

import datetime
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from berth import pki
from berth.auth.jwt import generate_signing_key_pair

BACKDATE = datetime.timedelta(minutes=5)


def _cert(pem: str | bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def _common_name(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


# KeyUsage flags; encipher_only and decipher_only only exist with key_agreement.
KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


def _extensions(cert: x509.Certificate) -> list[tuple[object, bool]]:
    """(value, critical) of each extension in order, a KeyUsage as the set of its flags."""
    found: list[tuple[object, bool]] = []
    for extension in cert.extensions:
        value: object = extension.value
        if isinstance(value, x509.KeyUsage):
            value = {name for name in KEY_USAGES if getattr(value, name)}
        found.append((value, extension.critical))
    return found


def _assert_recent(cert: x509.Certificate, validity: datetime.timedelta) -> None:
    now = datetime.datetime.now(datetime.UTC)
    assert now - BACKDATE - datetime.timedelta(minutes=1) <= cert.not_valid_before_utc
    assert cert.not_valid_before_utc <= now - BACKDATE
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == validity + BACKDATE


def test_ca_certificate() -> None:
    ca = pki.new_ca("berth team/reg CA")
    cert = _cert(ca.cert_pem)
    key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert ca.key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert cert.public_key() == key.public_key()
    assert cert.subject == cert.issuer
    assert _common_name(cert.subject) == "berth team/reg CA"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    _assert_recent(cert, pki.CA_VALIDITY)
    assert _extensions(cert) == [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        ({"digital_signature", "key_cert_sign", "crl_sign"}, True),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
    ]
    cert.verify_directly_issued_by(cert)


def test_ca_common_name_is_cut_to_64_characters() -> None:
    cert = _cert(pki.new_ca("c" * 100).cert_pem)
    assert _common_name(cert.subject) == "c" * 64


def test_serving_certificate() -> None:
    ca = pki.new_ca("test CA")
    names = ["reg.team.svc", "reg.team.svc.cluster.local", "10.0.0.7"]
    serving = pki.issue_serving(ca, names)
    cert, ca_cert = _cert(serving.cert_pem), _cert(ca.cert_pem)
    key = serialization.load_pem_private_key(serving.key_pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert cert.public_key() == key.public_key()
    assert _common_name(cert.subject) == "reg.team.svc"
    assert cert.issuer == ca_cert.subject
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    _assert_recent(cert, pki.SERVING_VALIDITY)
    ca_public = ca_cert.public_key()
    assert isinstance(ca_public, ec.EllipticCurvePublicKey)
    assert _extensions(cert) == [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        (
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("reg.team.svc"),
                    x509.DNSName("reg.team.svc.cluster.local"),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.7")),
                ]
            ),
            False,
        ),
        (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), False),
    ]
    cert.verify_directly_issued_by(ca_cert)
    assert pki.needs_renewal(serving.cert_pem, names, ca_pem=ca.cert_pem) is None


def test_serving_common_name_is_cut_to_64_characters() -> None:
    name = "a" * 60 + ".team.svc"
    cert = _cert(pki.issue_serving(pki.new_ca("test CA"), [name]).cert_pem)
    assert _common_name(cert.subject) == name[:64]


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_token_signing_certificate(key_type: str) -> None:
    validity = datetime.timedelta(days=30)
    key_pem, cert_pem = generate_signing_key_pair(
        "berth ns/reg signer",
        key_type=key_type,  # type: ignore[arg-type]
        validity=validity,
    )
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = _cert(cert_pem)
    if key_type == "ec":
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == 3072
        assert key.private_numbers().public_numbers.e == 65537
    assert cert.public_key() == key.public_key()
    assert cert.subject == cert.issuer
    assert _common_name(cert.subject) == "berth ns/reg signer"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    _assert_recent(cert, validity)
    assert _extensions(cert) == [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        ({"digital_signature"}, True),
    ]
    cert.verify_directly_issued_by(cert)


def test_token_signing_defaults() -> None:
    _, cert_pem = generate_signing_key_pair()
    cert = _cert(cert_pem)
    assert _common_name(cert.subject) == "berth-token-signer"
    _assert_recent(cert, datetime.timedelta(days=365))


def test_token_signing_common_name_is_not_cut() -> None:
    with pytest.raises(ValueError, match="length must be"):
        generate_signing_key_pair("s" * 65)


def test_a_certificate_from_another_ca_of_the_same_name_needs_renewal() -> None:
    """A Registry's CAs share their name across rotations: the signature decides."""
    first, second = pki.new_ca("berth team/reg CA"), pki.new_ca("berth team/reg CA")
    assert _cert(first.cert_pem).subject == _cert(second.cert_pem).subject
    serving = pki.issue_serving(first, ["reg.team.svc"])
    assert pki.needs_renewal(serving.cert_pem, ["reg.team.svc"], ca_pem=first.cert_pem) is None
    assert (
        pki.needs_renewal(serving.cert_pem, ["reg.team.svc"], ca_pem=second.cert_pem)
        == "it was not issued by the current CA"
    )


def test_a_ca_close_to_expiry_is_valid_but_not_usable() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = pki.build_certificate(
        "old CA", key.public_key(), key, pki.SERVING_VALIDITY - datetime.timedelta(days=1), []
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    expiring = pki.CertKey(cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem)
    assert pki.ca_is_valid(expiring)
    assert not pki.ca_is_usable(expiring)
    fresh = pki.new_ca("new CA")
    assert pki.ca_is_valid(fresh)
    assert pki.ca_is_usable(fresh)
    assert not pki.ca_is_valid(pki.CertKey("not a certificate", key_pem))
    assert not pki.ca_is_valid(pki.CertKey(fresh.cert_pem, "not a key"))
