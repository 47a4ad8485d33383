"""Connect's certificates, as Consul's built-in CA makes them: SPIFFE names, the root, the leaves.

Pure (keys, times and names in; certificates out), so that both the registry's agent
(runtime.agent.connect_ca, which issues them while the mesh runs) and the deploy (render.mesh_ca,
which derives the mesh CA and the proxy's first certificate) build the same certificates.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT_TTL = dt.timedelta(hours=87600)  # Consul's RootCertTTL
CLOCK_DRIFT = dt.timedelta(minutes=1)  # Consul signs leaves valid from a minute back
DEFAULT_LEAF_TTL = 72 * 3600.0  # Consul's leaf_cert_ttl
NAMESPACE = "default"  # the one namespace (and partition) of this agent, as in Consul CE
CN_MAX = 64  # X.509's upper bound on a common name; Consul truncates service CNs to it too
# SPIFFE's trust domain: lowercase letters, digits, dots, dashes and underscores.
TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SERVICE_PATH = re.compile(r"(?:/ap/([^/]+))?/ns/([^/]+)/dc/([^/]+)/svc/([^/]+)")

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


# ---- names and encodings --------------------------------------------------------------------------


def colon_hex(data: bytes) -> str:
    """Consul's HexString: serial numbers and key IDs as `0a:1b:...`."""
    return ":".join(f"{b:02x}" for b in data)


def serial_hex(serial: int) -> str:
    return colon_hex(serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big"))


def rfc3339(when: dt.datetime) -> str:
    """As Go's time.Time encodes in JSON; certificate times are whole seconds, in UTC."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def service_uri(trust_domain: str, datacenter: str, service: str) -> str:
    return f"spiffe://{trust_domain}/ns/{NAMESPACE}/dc/{quote(datacenter, safe='')}/svc/{quote(service, safe='')}"


def valid_trust_domain(name: str) -> bool:
    return bool(TRUST_DOMAIN.fullmatch(name))


@dataclass(frozen=True)
class SpiffeService:
    """What a service's certificate URI names (Consul's SpiffeIDService)."""

    trust_domain: str
    partition: str
    namespace: str
    datacenter: str
    service: str


def parse_service_uri(uri: str) -> SpiffeService | None:
    """The service named by a Connect URI; None for a SPIFFE ID of something else (a signing
    root's, an agent's). ValueError when `uri` is no SPIFFE ID at all."""
    parts = urlsplit(uri)
    if parts.scheme.lower() != "spiffe" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"not a SPIFFE ID: {uri!r}")
    match = _SERVICE_PATH.fullmatch(parts.path)
    if match is None:
        return None
    partition, namespace, datacenter, service = (unquote(g) if g else g for g in match.groups())
    return SpiffeService(parts.netloc.lower(), partition or NAMESPACE, namespace, datacenter, service)


def spiffe_trust_domain(cert: x509.Certificate) -> str | None:
    """The trust domain a CA certificate's SPIFFE URI SAN (`spiffe://<domain>`) names, if any."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in names.get_values_for_type(x509.UniformResourceIdentifier):
        parts = urlsplit(uri)
        if parts.scheme.lower() == "spiffe" and parts.netloc and parts.path in ("", "/"):
            return parts.netloc.lower()
    return None


def key_id(cert: x509.Certificate) -> bytes:
    """The certificate's SubjectKeyIdentifier, or the one RFC 5280 derives when it has none."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest


def fingerprint(cert: x509.Certificate) -> str:
    """A root's ID in Consul: the SHA-1 of its DER, colon hex."""
    return colon_hex(cert.fingerprint(hashes.SHA1()))


def key_info(public: Any) -> tuple[str, int]:
    """Consul's PrivateKeyType and PrivateKeyBits of a root."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        return "ec", public.curve.key_size
    if isinstance(public, rsa.RSAPublicKey):
        return "rsa", public.key_size
    raise ValueError(f"unsupported key type {type(public).__name__}")


def _signing_hash(key: PrivateKey) -> hashes.HashAlgorithm:
    """The digest Go's x509 pairs with the CA's key: by curve size for EC, SHA-256 for RSA."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {384: hashes.SHA384(), 521: hashes.SHA512()}.get(key.curve.key_size, hashes.SHA256())
    return hashes.SHA256()


def key_pem(key: PrivateKey) -> str:
    """Consul's encoding of its keys: SEC 1 (`EC PRIVATE KEY`) or PKCS #1, unencrypted."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# ---- certificates ---------------------------------------------------------------------------------


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def root_certificate(key: PrivateKey, trust_domain: str, now: dt.datetime, serial: int | None = None) -> x509.Certificate:
    """The self-signed root: a CA that signs leaves only (path length 0). Its CN comes from the key,
    so a root re-signed for another trust domain keeps the issuer name its earlier leaves carry.
    Signed deterministically (RFC 6979 for EC): with a given `serial`, the same key, domain and time
    give the same root byte for byte, which the deploy's derived mesh CA relies on (render.mesh_ca)."""
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"meshspec Connect CA {ski.digest.hex()[:8]}")])
    start = now.replace(microsecond=0)
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            # 63 bits: Consul reports a root's serial as an unsigned 64-bit integer.
            .serial_number(serial or secrets.randbelow(2**63 - 1) + 1)
            .not_valid_before(start).not_valid_after(start + ROOT_TTL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                           critical=False)
            .sign(key, _signing_hash(key), ecdsa_deterministic=isinstance(key, ec.EllipticCurvePrivateKey) or None))


def dns_names(service: str) -> list[str]:
    """The DNS names a service's leaf carries beside its SPIFFE ID: its name, and any name under it.
    A TLS client that checks the server name it sends (HAProxy does, whenever it sends one) verifies
    a leaf by them: a proxy asks another host's proxy for `<instance>.<proxy's service>`, so only a
    leaf of the proxy's service answers it."""
    return [service, f"*.{service}"]


def leaf_certificate(ca_key: PrivateKey, root: x509.Certificate, uri: str, service: str, ttl: float,
                     now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A service's leaf and its new key: CN the service, URI SAN its SPIFFE ID, for TLS both ways."""
    key = generate_key()
    start = now.replace(microsecond=0)
    issuer_ski = x509.SubjectKeyIdentifier(key_id(root))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service[:CN_MAX])]))
            .issuer_name(root.subject).public_key(key.public_key())
            .serial_number(secrets.randbelow(2**128 - 1) + 1)
            .not_valid_before(start - CLOCK_DRIFT).not_valid_after(start + dt.timedelta(seconds=ttl))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri),
                                                        *map(x509.DNSName, dns_names(service[:CN_MAX]))]), critical=False)
            .sign(ca_key, _signing_hash(ca_key)))
    return cert, key
