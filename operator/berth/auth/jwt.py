"""Signed JSON Web Tokens as distribution's token authentication verifies them.

distribution 2.8 finds the verification key through the JWT header: we send `x5c`, the
signing certificate (and any intermediates) as base64 DER, which the registry verifies
against the certificates in its `auth.token.rootcertbundle`. It then checks the
signature with libtrust, which expects JWS signatures: raw `r || s` for ECDSA (not the
DER that `cryptography` produces) and PKCS#1 v1.5 for RSA. The `aud` claim is a single
string, because 2.8 unmarshals it into a Go string.
"""

from __future__ import annotations

import base64
import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from berth.pki import signing_certificate

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
VerifyingKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

# libtrust names each curve's algorithm; other curves it cannot verify.
_EC_ALGORITHMS: Final[dict[str, tuple[str, hashes.HashAlgorithm, int]]] = {
    "secp256r1": ("ES256", hashes.SHA256(), 32),
    "secp384r1": ("ES384", hashes.SHA384(), 48),
    "secp521r1": ("ES512", hashes.SHA512(), 66),
}
_RSA_ALGORITHM: Final = "RS256"
_MIN_RSA_BITS: Final = 2048


class SigningError(ValueError):
    """A signing key or certificate the registry could not use."""


class InvalidToken(ValueError):
    """A token whose structure or signature does not verify."""


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _compact_json(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Signer:
    """A private key and the certificate chain that vouches for it, leaf first."""

    private_key: SigningKey
    chain: tuple[x509.Certificate, ...]

    @property
    def algorithm(self) -> str:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return _RSA_ALGORITHM
        return _EC_ALGORITHMS[self.private_key.curve.name][0]

    @property
    def x5c(self) -> list[str]:
        return [
            base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
            for cert in self.chain
        ]

    @property
    def not_valid_after(self) -> datetime.datetime:
        return self.chain[0].not_valid_after_utc

    def sign(self, claims: Mapping[str, Any]) -> str:
        header = {"typ": "JWT", "alg": self.algorithm, "x5c": self.x5c}
        signing_input = (
            f"{b64url_encode(_compact_json(header))}.{b64url_encode(_compact_json(claims))}"
        )
        return f"{signing_input}.{b64url_encode(self._signature(signing_input.encode()))}"

    def _signature(self, data: bytes) -> bytes:
        key = self.private_key
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        _, digest, size = _EC_ALGORITHMS[key.curve.name]
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def load_signer(key_pem: bytes, cert_pem: bytes) -> Signer:
    """A Signer from a PEM private key and a PEM certificate chain (leaf first).

    Refuses keys libtrust cannot verify and a leaf certificate that does not hold the
    key's public half: either mistake would only show as every push and pull failing.
    """
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise SigningError(f"cannot load the signing key: {error}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name not in _EC_ALGORITHMS:
            raise SigningError(f"EC curve {key.curve.name} is not supported; use P-256")
    elif isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < _MIN_RSA_BITS:
            raise SigningError(f"RSA keys need at least {_MIN_RSA_BITS} bits")
    else:
        raise SigningError(f"{type(key).__name__} keys are not supported; use EC P-256 or RSA")
    try:
        chain = tuple(x509.load_pem_x509_certificates(cert_pem))
    except ValueError as error:
        raise SigningError(f"cannot load the signing certificate: {error}") from None
    public_numbers = key.public_key().public_numbers()
    leaf_key = chain[0].public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) or (
        leaf_key.public_numbers() != public_numbers
    ):
        raise SigningError("the signing certificate does not hold the signing key")
    return Signer(key, chain)


def decode(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signing input and signature of a compact JWT, unverified."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken("a JWT has three dot-separated parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidToken(f"undecodable JWT: {error}") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("JWT header and claims must be JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def verify(token: str, public_key: VerifyingKey) -> dict[str, Any]:
    """The claims of `token` after checking its signature with `public_key` (the way
    libtrust does); expiry and audience are the caller's business."""
    header, claims, signing_input, signature = decode(token)
    algorithm = header.get("alg")
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if algorithm != _RSA_ALGORITHM:
                raise InvalidToken(f"alg {algorithm!r} does not fit an RSA key")
            public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            name, digest, size = _EC_ALGORITHMS[public_key.curve.name]
            if algorithm != name or len(signature) != 2 * size:
                raise InvalidToken(f"alg {algorithm!r} or signature length does not fit the key")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            public_key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(digest))
    except InvalidSignature:
        raise InvalidToken("bad signature") from None
    return claims


def generate_signing_key_pair(
    common_name: str = "berth-token-signer",
    *,
    key_type: Literal["ec", "rsa"] = "ec",
    validity: datetime.timedelta = datetime.timedelta(days=365),
) -> tuple[bytes, bytes]:
    """A new private key and a self-signed certificate for it, both PEM: (key, cert).

    The certificate goes into the registry's `auth.token.rootcertbundle` (a bundle may
    hold the old and the new certificate while the signing key rotates).
    """
    key: SigningKey = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=3072)
    )
    cert = signing_certificate(key, common_name, validity)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
