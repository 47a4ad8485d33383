"""The mesh CA: the root of the registry's Connect CA, which signs every instance's certificate.

Consul lets an operator hand its built-in CA a key and root certificate (the consul provider's
`PrivateKey` and `RootCert`); the deploy does so for the embedded agent (`--ca-cert`, `--ca-key`),
deriving both from the management token like every other secret of the mesh: a lost file is
rewritten byte for byte (the key from the secret; the root, the agent's own builder, from that key
at a fixed time with a serial of the key's, signed deterministically), no second secret is stored,
and the proxy's host holds the root it must trust, and a first certificate, before the registry
answers.

Pure: a secret in, PEM text out. The certificates are the ones the agent issues (common.connect_certs).
"""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from meshspec.common.connect_certs import (
    DEFAULT_LEAF_TTL,
    cert_pem,
    dns_names,
    key_pem,
    leaf_certificate,
    root_certificate,
)

# Fixed, so that the same secret gives the same root; it lives ten years from then (Consul's RootCertTTL).
NOT_BEFORE = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def ca_key(secret: str) -> ec.EllipticCurvePrivateKey:
    """A P-256 key whose scalar is a hash of the secret (reduced into [1, n-1])."""
    scalar = int.from_bytes(hashlib.sha256(f"meshspec connect ca/{secret}".encode()).digest(), "big")
    return ec.derive_private_key(scalar % (_P256_ORDER - 1) + 1, ec.SECP256R1())


def ca_certificate(key: ec.EllipticCurvePrivateKey, trust_domain: str) -> x509.Certificate:
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    return root_certificate(key, trust_domain, NOT_BEFORE, serial=int.from_bytes(key_id[:7], "big") or 1)


def ca_key_pem(secret: str) -> str:
    return key_pem(ca_key(secret))


def ca_certificate_pem(secret: str, trust_domain: str) -> str:
    return cert_pem(ca_certificate(ca_key(secret), trust_domain))


def certificate_pem(ca_secret: str, trust_domain: str, service: str, uri: str, now: dt.datetime,
                    ttl: float = DEFAULT_LEAF_TTL) -> str:
    """A new certificate for `service` and its key, one PEM (as HAProxy's `crt` reads it)."""
    signer = ca_key(ca_secret)
    cert, key = leaf_certificate(signer, ca_certificate(signer, trust_domain), uri, service, ttl, now)
    return cert_pem(cert) + key_pem(key)


def is_current(pem: str, ca_secret: str, trust_domain: str, service: str, uri: str, now: dt.datetime) -> bool:
    """Whether `pem` holds a certificate for `uri` that the mesh CA signed, valid at `now`, with the
    DNS names a leaf of `service` carries (one made before they were added is replaced)."""
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        cert.verify_directly_issued_by(ca_certificate(ca_key(ca_secret), trust_domain))
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    return (names.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
            and names.get_values_for_type(x509.DNSName) == dns_names(service)
            and cert.not_valid_before_utc <= now < cert.not_valid_after_utc)
