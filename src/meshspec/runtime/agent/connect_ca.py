"""Connect's certificate authority, as Consul's built-in (`consul`) CA provider keeps it.

Consul's CA is a root certificate and its key, with a SPIFFE URI SAN `spiffe://<trust domain>`
where the trust domain is `<cluster ID>.consul`; an operator may hand it the key and root instead
(ca_config `private_key`, `root_cert`). It signs each service a leaf certificate whose URI SAN
names it, `spiffe://<trust domain>/ns/default/dc/<datacenter>/svc/<service>`, valid from a minute
back (clock drift) for leaf_cert_ttl (72h); the agent caches one leaf per service and fetches a new
one before the old one expires, so a watcher of the leaf sees it rotate.

Here: an EC P-256 root, self-signed for 10 years (Consul's RootCertTTL), generated on the first start
and kept with the cluster ID in the data dir (`connect-ca.json`, 0600, replaced atomically), or the
operator's (`--ca-cert`, `--ca-key`: an EC or RSA key matching a CA certificate, never copied into the
data dir). The trust domain is the root's: its SPIFFE URI names it, else `<cluster ID>.consul`;
`--trust-domain` sets it (a generated root is re-signed for it with the same key, so earlier leaves
still chain; an operator's root naming another is refused). Leaves get a fresh P-256 key and a random
128-bit serial each time, and are kept in memory only (a restart issues new ones, as Consul's agent
cache does). The root's index changes only when another root becomes the active one.

Pure but for `open_ca` (the data dir) and `Leaves` (the in-memory leaves): keys, times and names in,
certificates and Consul's JSON out.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshspec.common.connect_certs import (
    PrivateKey,
    cert_pem,
    colon_hex,
    fingerprint,
    generate_key,
    key_id,
    key_info,
    key_pem,
    leaf_certificate,
    rfc3339,
    root_certificate,
    serial_hex,
    service_uri,
    spiffe_trust_domain,
)

STATE_FILE = "connect-ca.json"
ROOT_NAME = "Consul CA Primary Cert"  # Consul's name of the built-in provider's root


class CAError(ValueError):
    """The CA cannot be loaded: a one-line reason naming the file or option at fault."""


# ---- the operator's CA and the agent's ------------------------------------------------------------


def read_supplied(cert_path: Path, key_path: Path, now: dt.datetime) -> tuple[PrivateKey, x509.Certificate]:
    """The operator's key and root, checked as a CA must be: the key the certificate's, an EC or
    RSA one, the certificate a CA that may sign certificates and has not expired."""
    cert_arg, key_arg = f"--ca-cert {cert_path}", f"--ca-key {key_path}"
    cert_data, key_data = _read(cert_path, cert_arg), _read(key_path, key_arg)
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
    except ValueError:
        raise CAError(f"{cert_arg}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise CAError(f"{key_arg}: the key is encrypted; give it unencrypted (the agent has no passphrase)") from None
    except ValueError:
        raise CAError(f"{key_arg}: not a PEM private key") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CAError(f"{key_arg}: a {type(key).__name__} key; the Connect CA signs with an EC or RSA key")
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        raise CAError(f"{key_arg}: the key does not match the certificate in {cert_arg}")
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CAError(f"{cert_arg}: not a CA certificate (no basicConstraints CA:TRUE)")
    try:
        signs = cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    except x509.ExtensionNotFound:
        signs = True  # without keyUsage a CA may sign certificates
    if not signs:
        raise CAError(f"{cert_arg}: its keyUsage does not allow signing certificates (keyCertSign)")
    if cert.not_valid_after_utc <= now:
        raise CAError(f"{cert_arg}: the certificate expired at {rfc3339(cert.not_valid_after_utc)}")
    return key, cert


def _read(path: Path, arg: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CAError(f"{arg}: {exc.strerror}") from None


@dataclass(frozen=True)
class CA:
    key: PrivateKey
    root: x509.Certificate
    cluster_id: str
    trust_domain: str
    index: int  # the index at which this root became the active one: the roots' CreateIndex and ModifyIndex

    @property
    def root_id(self) -> str:
        return fingerprint(self.root)


def open_ca(data_dir: Path, cert_path: Path | None, key_path: Path | None, trust_domain: str | None,
            take_index: Callable[[], int], now: dt.datetime) -> CA:
    """The agent's CA: the operator's pair if given, else the one kept in the data dir (generated
    on the first start). The state file keeps the cluster ID, the generated key and root, and which
    root was last active at which index (`take_index` stamps a root that becomes active); it is
    rewritten only when one of them changes."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / STATE_FILE
    state = _load_state(path)
    before = dict(state)
    state.setdefault("ClusterID", str(uuid.uuid4()))
    default = f"{state['ClusterID']}.consul"
    if cert_path is not None and key_path is not None:
        key, root = read_supplied(cert_path, key_path, now)
        named = spiffe_trust_domain(root)
        if trust_domain and named and named != trust_domain:
            raise CAError(f"--ca-cert {cert_path}: the certificate names the trust domain {named}, "
                          f"not --trust-domain {trust_domain}")
        domain = trust_domain or named or default
    else:
        key, root = _generated(state, path)
        domain = trust_domain or (root and spiffe_trust_domain(root)) or default
        if root is None or spiffe_trust_domain(root) != domain:
            root = root_certificate(key, domain, now)
            state["RootCert"] = cert_pem(root)
    if state.get("RootID") != fingerprint(root):
        state["RootID"], state["RootIndex"] = fingerprint(root), take_index()
    if state != before:
        _save_state(path, state)
    return CA(key, root, state["ClusterID"], domain, state["RootIndex"])


def _generated(state: dict[str, Any], path: Path) -> tuple[PrivateKey, x509.Certificate | None]:
    """The agent's own key (made now if there is none yet) and the root last signed with it."""
    if "PrivateKey" not in state:
        state["PrivateKey"] = key_pem(generate_key())
    try:
        key = serialization.load_pem_private_key(state["PrivateKey"].encode(), password=None)
        root = x509.load_pem_x509_certificate(state["RootCert"].encode()) if "RootCert" in state else None
    except (ValueError, TypeError, AttributeError) as exc:
        raise CAError(f"{path}: cannot read the Connect CA's key or root: {exc}") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CAError(f"{path}: the Connect CA's key is a {type(key).__name__} key, not an EC or RSA one")
    return key, root


def _load_state(path: Path) -> dict[str, Any]:
    try:
        path.chmod(0o600)  # the generated key is the agent's alone, also in a file copied in with looser modes
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CAError(f"{path}: cannot read the Connect CA's state: {exc}") from None
    if not isinstance(state, dict):
        raise CAError(f"{path}: cannot read the Connect CA's state: not a JSON object")
    return state


def _save_state(path: Path, state: dict[str, Any]) -> None:
    """Write-then-rename, 0600 from creation: a crash leaves the old file or the new one, and the key
    is never readable by another user, not even for a moment."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.unlink(missing_ok=True)
    with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        json.dump(state, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


# ---- leaves ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    service: str
    uri: str
    cert: x509.Certificate
    key_pem: str
    index: int
    renew_at: float  # seconds since the epoch: half of its lifetime has passed


class Leaves:
    """The current leaf of each service asked for, in memory. A leaf is reissued (new key, new
    serial, a higher index) once more than half of its lifetime has passed; a leaf nobody asked for
    again until it expired is dropped, so the map holds only what is in use."""

    def __init__(self, ca: CA, datacenter: str, ttl: float, take_index: Callable[[], int]) -> None:
        self.ca, self.datacenter, self.ttl = ca, datacenter, ttl
        # A durable index per leaf: after a restart no new leaf carries the index of an earlier one,
        # which would keep its watcher waiting with a certificate that is not the current one.
        self._take_index = take_index
        self._leaves: dict[str, Leaf] = {}

    def current(self, service: str, now: float) -> Leaf:
        leaf = self._leaves.get(service)
        if leaf is None or now >= leaf.renew_at:
            leaf = self._issue(service, now)
        return leaf

    def _issue(self, service: str, now: float) -> Leaf:
        uri = service_uri(self.ca.trust_domain, self.datacenter, service)
        cert, key = leaf_certificate(self.ca.key, self.ca.root, uri, service, self.ttl,
                                     dt.datetime.fromtimestamp(now, dt.timezone.utc))
        index = self._take_index()
        for name in [n for n, old in self._leaves.items() if old.cert.not_valid_after_utc.timestamp() <= now]:
            del self._leaves[name]
        self._leaves[service] = Leaf(service, uri, cert, key_pem(key), index, now + self.ttl / 2)
        return self._leaves[service]


# ---- Consul's JSON --------------------------------------------------------------------------------


def roots_json(ca: CA) -> dict[str, Any]:
    """Consul's CARootList: the one root, active."""
    kind, bits = key_info(ca.root.public_key())
    root = {
        "ID": ca.root_id, "Name": ROOT_NAME,
        "SerialNumber": ca.root.serial_number & (2**64 - 1),  # Go's big.Int.Uint64: the low 64 bits
        "SigningKeyID": colon_hex(key_id(ca.root)), "ExternalTrustDomain": ca.cluster_id,
        "NotBefore": rfc3339(ca.root.not_valid_before_utc), "NotAfter": rfc3339(ca.root.not_valid_after_utc),
        "RootCert": cert_pem(ca.root), "IntermediateCerts": [], "Active": True,
        "PrivateKeyType": kind, "PrivateKeyBits": bits, "CreateIndex": ca.index, "ModifyIndex": ca.index,
    }
    return {"ActiveRootID": ca.root_id, "TrustDomain": ca.trust_domain, "Roots": [root]}


def issued_json(leaf: Leaf) -> dict[str, Any]:
    """Consul's IssuedCert."""
    return {
        "SerialNumber": serial_hex(leaf.cert.serial_number), "CertPEM": cert_pem(leaf.cert),
        "PrivateKeyPEM": leaf.key_pem, "Service": leaf.service, "ServiceURI": leaf.uri,
        "ValidAfter": rfc3339(leaf.cert.not_valid_before_utc), "ValidBefore": rfc3339(leaf.cert.not_valid_after_utc),
        "CreateIndex": leaf.index, "ModifyIndex": leaf.index,
    }
