"""Every certificate Berth makes: for SelfSigned TLS a CA per Registry and a serving
certificate for every name the registry answers to, renewed well before it expires; and
the token server's self-signed signing certificate (`berth.auth.jwt`)."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY: Final = datetime.timedelta(days=3650)
SERVING_VALIDITY: Final = datetime.timedelta(days=90)
RENEW_BEFORE: Final = datetime.timedelta(days=30)
_BACKDATE: Final = datetime.timedelta(minutes=5)  # tolerate clock skew between nodes

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


@dataclass(frozen=True)
class CertKey:
    cert_pem: str
    key_pem: str


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """Digital signatures, and with `cert_sign` signing certificates and CRLs."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def build_certificate(
    common_name: str,
    public_key: PublicKey,
    signing_key: PrivateKey,
    validity: datetime.timedelta,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
    *,
    issuer: x509.Name | None = None,
) -> x509.Certificate:
    """A certificate for `public_key` named `common_name`, signed (SHA-256) by
    `signing_key` as `issuer` (None: self-signed), valid from a few minutes ago for
    `validity`, with `extensions` as (extension, critical) in this order."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + validity)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def new_ca(common_name: str) -> CertKey:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_certificate(
        common_name[:64],
        key.public_key(),
        key,
        CA_VALIDITY,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (_key_usage(cert_sign=True), True),
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        ],
    )
    return CertKey(_cert_pem(cert), _key_pem(key))


def issue_serving(ca: CertKey, names: list[str]) -> CertKey:
    """A serving certificate for `names` (DNS names and IP addresses), signed by `ca`."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_certificate(
        names[0][:64],
        key.public_key(),
        ca_key,
        SERVING_VALIDITY,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectAlternativeName(_general_names(names)), False),
            (
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
                False,
            ),
        ],
        issuer=ca_cert.subject,
    )
    return CertKey(_cert_pem(cert), _key_pem(key))


def signing_certificate(
    key: PrivateKey, common_name: str, validity: datetime.timedelta
) -> x509.Certificate:
    """A self-signed certificate for a key that signs data (tokens), not certificates.

    `common_name` is used as it is: one longer than 64 characters is a ValueError.
    """
    return build_certificate(
        common_name,
        key.public_key(),
        key,
        validity,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(cert_sign=False), True),
        ],
    )


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def needs_renewal(cert_pem: str, names: list[str], *, ca_pem: str | None = None) -> str | None:
    """Why the certificate must be reissued (expiring, names changed, other CA), or None."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return "the stored certificate cannot be parsed"
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "it has no subject alternative names"
    present = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    present |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    if present != set(names):
        return "the registry's names changed"
    if ca_pem is not None and not issued_by(cert, ca_pem):
        return "it was not issued by the current CA"
    return None


def issued_by(cert: x509.Certificate, ca_pem: str) -> bool:
    """Whether the CA in `ca_pem` signed `cert`: by its signature, as the CAs of one
    Registry share a name across rotations."""
    ca_cert = x509.load_pem_x509_certificate(ca_pem.encode())
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def ca_is_valid(ca: CertKey) -> bool:
    """Whether `ca` is a certificate and its key, not yet expired."""
    return _ca_time_left(ca) > datetime.timedelta(0)


def ca_is_usable(ca: CertKey) -> bool:
    """Whether `ca` may sign serving certificates for their whole validity (else it is
    time to rotate it)."""
    return _ca_time_left(ca) > SERVING_VALIDITY


def _ca_time_left(ca: CertKey) -> datetime.timedelta:
    try:
        cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
        serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    except (ValueError, TypeError):
        return datetime.timedelta(0)
    return cert.not_valid_after_utc - _now()
