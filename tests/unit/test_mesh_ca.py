"""The mesh CA the deploy derives (render.mesh_ca), and the files that carry it (render.secrets)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from meshspec.common.connect_certs import DEFAULT_LEAF_TTL, service_uri
from meshspec.render.acl import service_rules
from meshspec.render.haproxy import proxy_paths
from meshspec.render.mesh_ca import ca_certificate, ca_certificate_pem, ca_key, ca_key_pem, certificate_pem, is_current
from meshspec.render.secrets import connect_ca_name, host_secret_files, proxy_certificate
from tests.unit.test_acl_tokens import shipped

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
URI = service_uri("mesh", "dc1", "mesh-proxy")
LEAF_TTL = dt.timedelta(seconds=DEFAULT_LEAF_TTL)


def test_the_same_secret_gives_the_same_ca_byte_for_byte_and_another_secret_another():
    assert ca_certificate_pem("s", "mesh") == ca_certificate_pem("s", "mesh") and ca_key_pem("s") == ca_key_pem("s")
    assert ca_certificate_pem("t", "mesh") != ca_certificate_pem("s", "mesh") and ca_key_pem("t") != ca_key_pem("s")


def test_the_ca_signs_leaves_only_and_names_its_trust_domain():
    cert = x509.load_pem_x509_certificate(ca_certificate_pem("s", "mesh").encode())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == ["spiffe://mesh"]
    cert.verify_directly_issued_by(cert)  # self-signed, with the key the secret gives
    assert cert.public_key() == ca_key("s").public_key()


def test_a_proxy_certificate_is_current_only_for_its_ca_its_identity_and_its_lifetime():
    pem = certificate_pem("s", "mesh", "mesh-proxy", URI, NOW)
    leaf = x509.load_pem_x509_certificate(pem.encode())
    leaf.verify_directly_issued_by(ca_certificate(ca_key("s"), "mesh"))
    assert leaf.not_valid_after_utc == NOW + LEAF_TTL and "PRIVATE KEY" in pem  # HAProxy's crt: both in one file
    assert is_current(pem, "s", "mesh", "mesh-proxy", URI, NOW + LEAF_TTL / 2)
    assert not is_current(pem, "t", "mesh", "mesh-proxy", URI, NOW)  # another CA (a new management token)
    assert not is_current(pem, "s", "mesh", "mesh-proxy", service_uri("mesh", "dc1", "web"), NOW)  # another identity
    assert not is_current(pem, "s", "mesh", "mesh-proxy", URI, NOW + LEAF_TTL)  # expired (a mesh stopped for days)
    assert not is_current("not a certificate", "s", "mesh", "mesh-proxy", URI, NOW)
    # the names another host's proxy checks: `<instance>.mesh-proxy` is answered by this leaf alone
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["mesh-proxy", "*.mesh-proxy"]
    assert not is_current(certificate_pem("s", "mesh", "web", URI, NOW), "s", "mesh", "mesh-proxy", URI, NOW)


def test_the_registry_keeps_the_ca_and_its_key_and_no_other_program_does():
    plan = shipped()
    files = {f.path: f for f in host_secret_files(plan, "local", plan.instances)}
    cert, key = files[str(plan.layout.connect_ca_file)], files[str(plan.layout.connect_ca_key_file)]
    assert cert.owner == key.owner == "meshspec-registry" and cert.name == key.name == connect_ca_name(plan)
    assert cert.text("s") == ca_certificate_pem("s", plan.spec.mesh.name) and key.text("s") == ca_key_pem("s")
    others = [i for i in plan.instances if i.service != plan.spec.consul.service]
    assert not {str(plan.layout.connect_ca_file), str(plan.layout.connect_ca_key_file)} & \
        {f.path for f in host_secret_files(plan, "local", others)}


def test_the_proxy_certificate_is_the_controller_s_and_the_controller_may_ask_for_it():
    plan = shipped()
    wanted = proxy_certificate(plan, plan.instances)
    assert wanted.ca_path == proxy_paths(plan)["ca"] != str(plan.layout.connect_ca_file)  # a copy the controller reads
    assert wanted.owner == plan.proxy_controller_user and wanted.uri == service_uri(
        plan.spec.mesh.name, plan.spec.consul.datacenter, plan.spec.proxy.service)
    assert proxy_certificate(plan, [i for i in plan.instances if i.service != plan.spec.proxy.service]) is None
    # the Connect CA issues a service's certificate for service:write on it
    assert service_rules(plan, plan.spec.proxy.controller)["service"][plan.spec.proxy.service] == {"policy": "write"}
    assert plan.spec.proxy.service not in service_rules(plan, "backend-api")["service"]
