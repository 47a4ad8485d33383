"""Connect's CA: the root and leaf certificates themselves (pure), and through the agent the roots,
leaves that chain to them and rotate past half their lifetime, the operator's own CA, the root kept
across restarts, and authorize deciding by intentions. py-consul reads roots and leaves; blocking
reads and authorize go through requests (py-consul's leaf takes no index, and its authorize sends
PUT, which Consul, like this agent, refuses: the endpoint is POST only)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import stat
import subprocess
import threading
import time

import consul
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshspec.common.connect_certs import (
    colon_hex,
    fingerprint,
    generate_key,
    key_id,
    leaf_certificate,
    parse_service_uri,
    root_certificate,
    serial_hex,
    service_uri,
)
from meshspec.runtime.agent.connect_ca import CA, CAError, Leaves, open_ca, read_supplied, roots_json
from tests.agent.conftest import MESHSPEC, client_with_rules

TOKEN = "connect-ca-test-management-token"
NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def ext(cert: x509.Certificate, kind: type) -> x509.Extension:
    return cert.extensions.get_extension_for_class(kind)


def assert_chains(leaf: x509.Certificate, root: x509.Certificate) -> None:
    """The leaf is signed by the root's key (checked twice: by cryptography's issuer check and by the
    bare ECDSA signature over the leaf's TBS bytes) and names the root as its issuer and authority."""
    leaf.verify_directly_issued_by(root)
    root.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(leaf.signature_hash_algorithm))
    assert ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier == key_id(root)


def same_key(key_pem: str, cert: x509.Certificate) -> bool:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def write_ca(directory, name: str, key: ec.EllipticCurvePrivateKey | None = None, ca: bool = True,
             trust_domain: str = "operator.test"):
    """An operator's CA as files: a P-256 key (PKCS #8, as tools write it) and its self-signed root."""
    key = key or generate_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
            .not_valid_after(dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path, cert


# ---- pure ---------------------------------------------------------------------------------------------


def test_the_root_is_a_self_signed_p256_ca_for_leaves_only():
    key = generate_key()
    root = root_certificate(key, "abc.consul", NOW)
    root.verify_directly_issued_by(root)
    assert root.public_key().curve.name == "secp256r1"
    cn = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn.startswith("meshspec Connect CA ") and len(cn.rsplit(" ", 1)[1]) == 8
    assert root.issuer == root.subject
    constraints = ext(root, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ext(root, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    assert ext(root, x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://abc.consul"]
    assert ext(root, x509.SubjectKeyIdentifier).value.digest
    assert root.not_valid_before_utc == NOW and root.not_valid_after_utc - NOW == dt.timedelta(hours=87600)
    assert 0 < root.serial_number < 2**64
    # Re-signed for another trust domain, the same key keeps the name: earlier leaves still chain.
    assert root_certificate(key, "other.test", NOW).subject == root.subject


def test_a_leaf_names_its_service_and_chains_to_the_root():
    ca_key = generate_key()
    root = root_certificate(ca_key, "abc.consul", NOW)
    uri = service_uri("abc.consul", "dc1", "web")
    assert uri == "spiffe://abc.consul/ns/default/dc/dc1/svc/web"
    leaf, key = leaf_certificate(ca_key, root, uri, "web", 4.0, NOW)
    assert_chains(leaf, root)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web"
    assert ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    assert leaf.public_key().curve.name == "secp256r1"
    usage = ext(leaf, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not ext(leaf, x509.BasicConstraints).value.ca
    assert ext(leaf, x509.SubjectKeyIdentifier).value.digest != ext(root, x509.SubjectKeyIdentifier).value.digest
    assert leaf.not_valid_before_utc == NOW - dt.timedelta(minutes=1)
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(seconds=4)
    assert leaf.serial_number != leaf_certificate(ca_key, root, uri, "web", 4.0, NOW)[0].serial_number
    assert leaf.serial_number < 2**128


def test_leaves_are_reissued_past_half_their_lifetime():
    key = generate_key()
    ca = CA(key, root_certificate(key, "abc.consul", NOW), "abc", "abc.consul", 7)
    leaves = Leaves(ca, "dc1", 10.0, take_index=itertools.count(41).__next__)
    start = NOW.timestamp()
    first = leaves.current("web", start)
    assert first.index == 41 and first.renew_at == start + 5
    assert leaves.current("web", start + 4.9) is first
    second = leaves.current("web", start + 5)
    assert second.index > first.index and second.cert.serial_number != first.cert.serial_number
    assert second.key_pem != first.key_pem and same_key(second.key_pem, second.cert)
    assert leaves.current("db", start + 5).index == second.index + 1  # each leaf takes an index of its own
    leaves.current("api", start + 30)  # web and db have expired unasked since: they are forgotten
    assert set(leaves._leaves) == {"api"}


def test_spiffe_service_uris_parse_as_consul_s_do():
    parsed = parse_service_uri("spiffe://ABC.consul/ns/default/dc/dc1/svc/web")
    assert (parsed.trust_domain, parsed.namespace, parsed.datacenter, parsed.service) == ("abc.consul", "default", "dc1", "web")
    assert parse_service_uri("spiffe://abc.consul/ap/default/ns/default/dc/dc1/svc/web").service == "web"
    assert parse_service_uri("spiffe://abc.consul") is None  # the signing root's ID, not a service's
    assert parse_service_uri("spiffe://abc.consul/agent/client/dc/dc1/id/x") is None
    for bad in ("https://abc.consul/ns/default/dc/dc1/svc/web", "spiffe:///ns/default/dc/dc1/svc/web", "web"):
        with pytest.raises(ValueError):
            parse_service_uri(bad)


def test_consul_s_hex_forms():
    assert colon_hex(b"\x0a\x1b\xff") == "0a:1b:ff"
    assert serial_hex(0x0102) == "01:02" and serial_hex(5) == "05"


def test_the_generated_ca_is_kept_and_follows_the_trust_domain(tmp_path):
    indexes = itertools.count(2).__next__
    first = open_ca(tmp_path, None, None, None, indexes, NOW)
    assert first.trust_domain == f"{first.cluster_id}.consul" and first.index == 2
    assert stat.S_IMODE((tmp_path / "connect-ca.json").stat().st_mode) == 0o600
    again = open_ca(tmp_path, None, None, None, indexes, NOW)  # the same root: the same index, none taken
    assert (again.root_id, again.index, again.cluster_id) == (first.root_id, 2, first.cluster_id)
    moved = open_ca(tmp_path, None, None, "mesh.test", indexes, NOW)  # same key, root re-signed for the new domain
    assert moved.trust_domain == "mesh.test" and moved.root_id != first.root_id and moved.index == 3
    assert moved.root.subject == first.root.subject and moved.key.private_numbers() == first.key.private_numbers()
    assert open_ca(tmp_path, None, None, None, indexes, NOW).trust_domain == "mesh.test"  # the root's, from now on
    json_roots = roots_json(moved)
    assert json_roots["ActiveRootID"] == fingerprint(moved.root) and json_roots["TrustDomain"] == "mesh.test"


def test_an_operator_s_ca_is_checked(tmp_path):
    cert_path, key_path, cert = write_ca(tmp_path, "good")
    _, loaded = read_supplied(cert_path, key_path, NOW)
    assert loaded == cert
    ca = open_ca(tmp_path / "data", cert_path, key_path, None, itertools.count(2).__next__, NOW)
    assert (ca.root, ca.trust_domain) == (cert, "operator.test")  # the domain its root names
    assert "PrivateKey" not in json.loads((tmp_path / "data" / "connect-ca.json").read_text())  # never copied
    _, other_key, _ = write_ca(tmp_path, "other")
    leaf_cert, leaf_key, _ = write_ca(tmp_path, "leaf", ca=False)
    cases = [
        (cert_path, other_key, f"--ca-key {other_key}: the key does not match the certificate in --ca-cert {cert_path}"),
        (leaf_cert, leaf_key, f"--ca-cert {leaf_cert}: not a CA certificate"),
        (key_path, key_path, f"--ca-cert {key_path}: not a PEM certificate"),
        (cert_path, cert_path, f"--ca-key {cert_path}: not a PEM private key"),
        (cert_path, tmp_path / "missing.key", f"--ca-key {tmp_path / 'missing.key'}: No such file or directory"),
    ]
    for cert_file, key_file, message in cases:
        with pytest.raises(CAError) as refused:
            read_supplied(cert_file, key_file, NOW)
        assert str(refused.value).startswith(message), str(refused.value)
    with pytest.raises(CAError, match="expired"):
        read_supplied(cert_path, key_path, cert.not_valid_after_utc + dt.timedelta(seconds=1))
    with pytest.raises(CAError, match="names the trust domain operator.test, not --trust-domain mesh.test"):
        open_ca(tmp_path / "data", cert_path, key_path, "mesh.test", itertools.count(2).__next__, NOW)


def test_an_operator_s_rsa_ca_signs_p256_leaves(tmp_path):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rsa root")])
    root = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(rsa_key.public_key())
            .serial_number(2**100).not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(rsa_key, hashes.SHA256()))
    (tmp_path / "rsa.crt").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "rsa.key").write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    ca = open_ca(tmp_path / "data", tmp_path / "rsa.crt", tmp_path / "rsa.key", None, itertools.count(2).__next__, NOW)
    assert ca.trust_domain == f"{ca.cluster_id}.consul"  # the root names none
    [shown] = roots_json(ca)["Roots"]
    assert (shown["PrivateKeyType"], shown["PrivateKeyBits"]) == ("rsa", 2048)
    assert shown["SerialNumber"] == 2**100 & (2**64 - 1)  # Go's Uint64 of a larger serial: its low 64 bits
    leaf, _ = leaf_certificate(ca.key, ca.root, service_uri(ca.trust_domain, "dc1", "web"), "web", 60, NOW)
    leaf.verify_directly_issued_by(root)
    root.public_key().verify(leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA256())
    assert leaf.public_key().curve.name == "secp256r1"


# ---- through the agent --------------------------------------------------------------------------------


def leaf_of(agent, service: str, token: str | None = None, **query) -> requests.Response:
    headers = {"X-Consul-Token": token} if token else {}
    return requests.get(f"http://{agent.address}/v1/agent/connect/ca/leaf/{service}", params=query,
                        headers=headers, timeout=30)


def authorize(agent, target: str, uri: str, token: str | None = None) -> requests.Response:
    headers = {"X-Consul-Token": token} if token else {}
    return requests.post(f"http://{agent.address}/v1/agent/connect/authorize", headers=headers, timeout=5,
                         json={"Target": target, "ClientCertURI": uri, "ClientCertSerial": "01:02"})


@pytest.mark.integration
def test_roots_and_a_leaf_that_chains_to_them(agent):
    c = agent.client()
    roots = c.connect.ca.roots()
    assert c.agent.connect.ca.roots() == roots
    assert set(roots) == {"ActiveRootID", "TrustDomain", "Roots"}
    [root] = roots["Roots"]
    assert set(root) == {"ID", "Name", "SerialNumber", "SigningKeyID", "ExternalTrustDomain", "NotBefore", "NotAfter",
                         "RootCert", "IntermediateCerts", "Active", "PrivateKeyType", "PrivateKeyBits", "CreateIndex",
                         "ModifyIndex"}
    root_cert = x509.load_pem_x509_certificate(root["RootCert"].encode())
    assert root["ID"] == roots["ActiveRootID"] == fingerprint(root_cert)
    assert (root["Active"], root["PrivateKeyType"], root["PrivateKeyBits"], root["IntermediateCerts"]) == (True, "ec", 256, [])
    assert roots["TrustDomain"] == f"{root['ExternalTrustDomain']}.consul"
    assert root["SigningKeyID"] == colon_hex(ext(root_cert, x509.SubjectKeyIdentifier).value.digest)
    assert root["SerialNumber"] == root_cert.serial_number

    issued = c.agent.connect.ca.leaf("web")
    assert set(issued) == {"SerialNumber", "CertPEM", "PrivateKeyPEM", "Service", "ServiceURI", "ValidAfter",
                           "ValidBefore", "CreateIndex", "ModifyIndex"}
    leaf = x509.load_pem_x509_certificate(issued["CertPEM"].encode())
    assert_chains(leaf, root_cert)
    uri = f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web"
    assert issued["ServiceURI"] == uri and issued["Service"] == "web"
    assert ext(leaf, x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier) == [uri]
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "web"
    assert same_key(issued["PrivateKeyPEM"], leaf)
    assert issued["SerialNumber"] == serial_hex(leaf.serial_number)
    assert issued["ValidBefore"] == leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    left = leaf.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(hours=71) < left <= dt.timedelta(hours=72)  # Consul's default leaf_cert_ttl
    again = leaf_of(agent, "web")
    assert again.json()["SerialNumber"] == issued["SerialNumber"]  # one current leaf per service
    assert again.headers["X-Consul-Index"] == str(issued["ModifyIndex"])
    pem = requests.get(f"http://{agent.address}/v1/connect/ca/roots", params={"pem": "true"}, timeout=5)
    assert (pem.headers["Content-Type"], pem.text) == ("application/pem-certificate-chain", root["RootCert"])


@pytest.mark.integration
def test_a_blocking_read_of_a_leaf_returns_the_next_one_past_half_its_lifetime(make_agent):
    agent = make_agent(extra=["--leaf-cert-ttl", "4s"])
    first = leaf_of(agent, "web").json()
    began = time.monotonic()
    answered = leaf_of(agent, "web", index=first["ModifyIndex"], wait="10s")
    waited = time.monotonic() - began
    rotated = answered.json()
    assert 1.0 < waited < 4.0, waited  # held until the reissue, 2 s after the first leaf was issued
    assert rotated["SerialNumber"] != first["SerialNumber"] and rotated["PrivateKeyPEM"] != first["PrivateKeyPEM"]
    assert rotated["ModifyIndex"] > first["ModifyIndex"]
    assert answered.headers["X-Consul-Index"] == str(rotated["ModifyIndex"])
    assert_chains(x509.load_pem_x509_certificate(rotated["CertPEM"].encode()),
                  x509.load_pem_x509_certificate(agent.client().connect.ca.roots()["Roots"][0]["RootCert"].encode()))
    # An index that is not the current leaf's answers at once; the current one waits out a short wait.
    began = time.monotonic()
    assert leaf_of(agent, "web", index=first["ModifyIndex"], wait="10s").json()["SerialNumber"] == rotated["SerialNumber"]
    assert leaf_of(agent, "web", index=rotated["ModifyIndex"], wait="300ms").json()["SerialNumber"] == rotated["SerialNumber"]
    assert time.monotonic() - began < 1.5


@pytest.mark.integration
def test_blocking_reads_of_the_roots_wait_out_their_wait(agent):
    answered = requests.get(f"http://{agent.address}/v1/agent/connect/ca/roots", timeout=5)
    index = answered.headers["X-Consul-Index"]
    assert index == str(answered.json()["Roots"][0]["ModifyIndex"])
    began = time.monotonic()
    held = requests.get(f"http://{agent.address}/v1/connect/ca/roots", params={"index": index, "wait": "500ms"}, timeout=5)
    assert time.monotonic() - began >= 0.5 and held.json() == answered.json()


@pytest.mark.integration
def test_a_leaf_needs_service_write_on_its_service(make_agent):
    agent = make_agent(token=TOKEN)
    web = client_with_rules(agent, TOKEN, "web-writer", 'service "web" { policy = "write" }\n'
                                                        'service "db" { policy = "read" }')
    assert web.agent.connect.ca.leaf("web")["Service"] == "web"
    with pytest.raises(consul.ACLPermissionDenied):
        web.agent.connect.ca.leaf("db")
    denied = leaf_of(agent, "db", token=web.token)
    assert denied.status_code == 403 and "lacks permission 'service:write' on \"db\"" in denied.text
    assert leaf_of(agent, "web").status_code == 403  # the anonymous token
    assert agent.client().connect.ca.roots()["Roots"]  # the roots need no token at all


@pytest.mark.integration
def test_a_restart_keeps_the_root_and_its_trust_domain(make_agent):
    agent = make_agent()
    before = agent.client().connect.ca.roots()
    issued = agent.client().agent.connect.ca.leaf("web")
    leaf = x509.load_pem_x509_certificate(issued["CertPEM"].encode())
    state = agent.data_dir / "connect-ca.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    agent.stop()
    agent.start()
    after = agent.client().connect.ca.roots()
    assert after == before
    assert_chains(leaf, x509.load_pem_x509_certificate(after["Roots"][0]["RootCert"].encode()))  # old leaves still chain
    # Leaves live in memory: the restarted agent issues a new one, at an index no earlier leaf had, so a
    # watcher still holding the old one's index is answered at once.
    reissued = leaf_of(agent, "web", index=issued["ModifyIndex"], wait="10s").json()
    assert reissued["SerialNumber"] != issued["SerialNumber"] and reissued["ModifyIndex"] > issued["ModifyIndex"]


@pytest.mark.integration
def test_the_operator_s_ca_signs_the_leaves(make_agent, tmp_path):
    cert_path, key_path, cert = write_ca(tmp_path, "operator", trust_domain="mesh.test")
    agent = make_agent(extra=["--ca-cert", str(cert_path), "--ca-key", str(key_path), "--trust-domain", "mesh.test",
                              "--datacenter", "east"])
    roots = agent.client().connect.ca.roots()
    assert roots["TrustDomain"] == "mesh.test"
    assert x509.load_pem_x509_certificate(roots["Roots"][0]["RootCert"].encode()) == cert
    assert roots["ActiveRootID"] == fingerprint(cert)
    issued = agent.client().agent.connect.ca.leaf("api")
    assert issued["ServiceURI"] == "spiffe://mesh.test/ns/default/dc/east/svc/api"
    assert_chains(x509.load_pem_x509_certificate(issued["CertPEM"].encode()), cert)
    assert "BEGIN" not in (agent.data_dir / "connect-ca.json").read_text()  # the operator's key stays in its file


@pytest.mark.integration
def test_a_mismatched_ca_pair_refuses_to_start(tmp_path):
    cert_path, _, _ = write_ca(tmp_path, "one")
    _, other_key, _ = write_ca(tmp_path, "two")
    done = subprocess.run([str(MESHSPEC), "agent", "--data-dir", str(tmp_path / "data"), "--port", "1",
                           "--ca-cert", str(cert_path), "--ca-key", str(other_key)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"meshspec agent: cannot start: --ca-key {other_key}: the key does not match "
                                   f"the certificate in --ca-cert {cert_path}")
    half = subprocess.run([str(MESHSPEC), "agent", "--data-dir", str(tmp_path / "data"), "--ca-cert", str(cert_path)],
                          capture_output=True, text=True, timeout=60)
    assert half.returncode == 2 and "give both --ca-cert and --ca-key, or neither" in half.stderr


@pytest.mark.integration
def test_authorize_decides_by_intentions(make_agent):
    agent = make_agent(token=TOKEN)
    admin = agent.client(token=TOKEN)
    domain = admin.connect.ca.roots()["TrustDomain"]
    admin.connect.intentions.upsert("web", "db", action="allow")
    admin.connect.intentions.upsert("api", "db", action="deny")
    allow_id = admin.connect.intentions.read("web", "db")["ID"]

    def uri(service: str) -> str:
        return f"spiffe://{domain}/ns/default/dc/dc1/svc/{service}"

    db = client_with_rules(agent, TOKEN, "db-owner", 'service "db" { policy = "write" }')
    allowed = authorize(agent, "db", uri("web"), db.token)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json() == {"Authorized": True, "Reason": f"Matched L4 intention: web => db (ID: {allow_id}, "
                                                            "Precedence: 9, Action: ALLOW)"}
    denied = authorize(agent, "db", uri("api"), db.token).json()
    assert denied["Authorized"] is False and denied["Reason"].startswith("Matched L4 intention: api => db")
    assert authorize(agent, "db", uri("cache"), db.token).json() == {
        "Authorized": False, "Reason": "Default behavior configured by ACLs"}
    foreign = authorize(agent, "db", "spiffe://elsewhere.consul/ns/default/dc/dc1/svc/web", db.token).json()
    assert foreign["Authorized"] is False and "elsewhere.consul" in foreign["Reason"]
    assert authorize(agent, "web", uri("db"), db.token).status_code == 403  # no service:write on the target
    bad = authorize(agent, "db", "https://web", TOKEN)
    assert (bad.status_code, bad.text) == (400, "ClientCertURI not a valid Connect identifier")
    assert authorize(agent, "", uri("web"), TOKEN).text == "Target service must be specified"
    with pytest.raises(consul.ConsulException, match="405"):  # py-consul sends PUT; Consul takes POST only
        admin.agent.connect.authorize("db", uri("web"), "01:02")


@pytest.mark.integration
def test_without_acls_authorize_allows_what_no_intention_denies(agent):
    domain = agent.client().connect.ca.roots()["TrustDomain"]
    agent.client().connect.intentions.upsert("*", "db", action="deny")
    assert authorize(agent, "cache", f"spiffe://{domain}/ns/default/dc/dc1/svc/web").json() == {
        "Authorized": True, "Reason": "ACLs disabled, access is allowed by default"}
    assert authorize(agent, "db", f"spiffe://{domain}/ns/default/dc/dc1/svc/web").json()["Authorized"] is False


@pytest.mark.integration
def test_concurrent_watchers_of_a_leaf_all_see_the_same_rotation(make_agent):
    agent = make_agent(extra=["--leaf-cert-ttl", "2s"])
    first = leaf_of(agent, "web").json()
    seen: list[str] = []
    watchers = [threading.Thread(target=lambda: seen.append(
        leaf_of(agent, "web", index=first["ModifyIndex"], wait="10s").json()["SerialNumber"])) for _ in range(5)]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        watcher.join(10)
    assert len(seen) == 5 and len(set(seen)) == 1 and seen[0] != first["SerialNumber"]
