"""The proxy's mTLS listener for real: HAProxy 2.6 with the rendered `bind ... ssl ... verify
required`, the embedded agent's Connect CA signing with the mesh CA (as the deploy hands it over),
the controller rotating the proxy's certificate, a real backend. All on 127.0.0.1, free ports."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshspec.common.connect_certs import key_pem, leaf_certificate, service_uri
from meshspec.render.haproxy import proxy_paths
from meshspec.render.mesh_ca import ca_certificate, ca_key
from meshspec.runtime.proxy.controller import Controller
from meshspec.runtime.services.identity import MeshIdentity
from meshspec.runtime.services.mesh_client import MeshRequest, MeshRouter
from tests.agent.conftest import AgentProcess
from tests.bdd.mesh_target import stats_rows
from tests.proxy.harness import CA_SECRET, Backend, ControllerThread, HAProxy, write_proxy_files
from tests.proxy.meshes import free_block, make_mesh, service
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("haproxy") is None, reason="apt-get install haproxy")]

REPO = Path(__file__).resolve().parents[2]
LEAF_TTL = "4s"  # the agent renews at half-life: a rotation every 2 s
CALLER = "web-client"


class TlsMesh(SimpleNamespace):
    """The fixture's processes and files."""


def pem_files(directory: Path, name: str, cert_pem: str, key_pem: str) -> tuple[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_text(cert_pem)
    key.write_text(key_pem)
    return str(cert), str(key)


def made_leaf(ca_secret: str, service: str, now: dt.datetime, ttl: dt.timedelta) -> tuple[str, str]:
    """A leaf signed by the mesh CA of `ca_secret`, by hand (for the ones the agent would never issue)."""
    signer = ca_key(ca_secret)
    cert, key = leaf_certificate(signer, ca_certificate(signer, "testmesh"), service_uri("testmesh", "dc1", service),
                                 service, ttl.total_seconds(), now)
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key)


def allow(agent: AgentProcess, source: str, destination: str, action: str = "allow") -> None:
    httpx.put(f"http://{agent.address}/v1/connect/intentions/exact", params={"source": source, "destination": destination},
              json={"Action": action}, trust_env=False).raise_for_status()


@pytest.fixture(scope="module")
def tls_mesh(tmp_path_factory):
    root = tmp_path_factory.mktemp("mtls")
    agent = AgentProcess(root / "agent")  # its port first: the plan names the registry's address
    plan = make_mesh([service("web", free_block(1), 1)], (free_port(), free_port(), free_port()), root / "state",
                     consul=agent.address, mtls=free_port())
    write_proxy_files(plan)
    agent.extra = ["--trust-domain", "testmesh", "--ca-cert", str(plan.layout.connect_ca_file),
                   "--ca-key", str(plan.layout.connect_ca_key_file), "--leaf-cert-ttl", LEAF_TTL]
    m = TlsMesh(root=root)
    m.plan, m.agent, m.thread, m.backend = plan, agent.start(), None, None
    m.proxy = HAProxy(plan)
    m.mtls = ("127.0.0.1", plan.instances_of("mesh-proxy")[0].ports["mtls"])
    try:
        web = plan.instances_of("web")[0]
        m.backend = Backend(web.id, web.port, root).start().wait()
        httpx.put(f"http://{agent.address}/v1/agent/service/register", trust_env=False, json={
            "ID": web.id, "Name": "web", "Address": "127.0.0.1", "Port": web.port,
            "Check": {"CheckID": f"service:{web.id}", "Name": "ttl", "TTL": "10m", "Status": "passing"}},
        ).raise_for_status()
        allow(agent, CALLER, "web")
        m.proxy.start()
        m.controller = Controller(agent.address, m.proxy.api, m.proxy.config, wait="10s", resync=0.2)
        m.thread = ControllerThread(m.controller).start()
        wait_until(lambda: m.controller.metrics.certificates._value.get() >= 1, 10, what="first certificate installed")
        wait_until(lambda: m.controller.shape["intentions"] in m.controller.installed, 10,
                   what="the intentions map installed")
        # The agent's leaves live 4 s here: the load below presents one the mesh CA signed for an hour.
        m.client_cert = pem_files(root / "client", CALLER, *made_leaf(CA_SECRET, CALLER, dt.datetime.now(dt.timezone.utc),
                                                                      dt.timedelta(hours=1)))
        yield m
    finally:
        if m.thread:
            m.thread.stop()
        m.proxy.stop()
        if m.backend:
            m.backend.stop()
        agent.stop()


def tls_context(mesh: TlsMesh, cert: tuple[str, str] | None) -> ssl.SSLContext:
    """Trusts the mesh CA alone; the proxy is known by its certificate's URI, not a host name."""
    context = ssl.create_default_context(cafile=str(mesh.plan.layout.connect_ca_file))
    context.check_hostname = False
    if cert:
        context.load_cert_chain(*cert)
    return context


def server_certificate(mesh: TlsMesh, cert: tuple[str, str] | None) -> x509.Certificate:
    with socket.create_connection(mesh.mtls, timeout=5) as raw, \
            tls_context(mesh, cert).wrap_socket(raw) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def get(mesh: TlsMesh, cert: tuple[str, str] | None, path: str = "/svc/web/who", **kw) -> httpx.Response:
    with httpx.Client(verify=tls_context(mesh, cert), trust_env=False, timeout=5) as client:
        return client.get(f"https://{mesh.mtls[0]}:{mesh.mtls[1]}{path}", **kw)


def test_the_registry_s_certificate_reaches_the_service_which_learns_the_caller(tls_mesh):
    leaf = httpx.get(f"http://{tls_mesh.agent.address}/v1/agent/connect/ca/leaf/{CALLER}", trust_env=False).json()
    cert = pem_files(tls_mesh.root / "client", "from-the-registry", leaf["CertPEM"], leaf["PrivateKeyPEM"])
    response = get(tls_mesh, cert, headers={"X-Mesh-Caller": "someone-else"})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "web-local-0"  # who answered
    headers = {k.lower(): v for k, v in response.json()["headers"].items()}  # HAProxy sends names lowercased
    assert headers["x-mesh-caller"] == CALLER  # from the certificate, not the client's header
    uris = server_certificate(tls_mesh, tls_mesh.client_cert).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == [service_uri("testmesh", "dc1", "mesh-proxy")]


def test_the_edge_listener_passes_no_caller_a_client_claims(tls_mesh):
    response = httpx.get(f"http://127.0.0.1:{tls_mesh.plan.instances_of('mesh-proxy')[0].port}/svc/web/who",
                         headers={"X-Mesh-Caller": CALLER}, trust_env=False, timeout=5)
    assert response.status_code == 200
    assert "x-mesh-caller" not in {k.lower() for k in response.json()["headers"]}


def refused(mesh: TlsMesh, cert: tuple[str, str] | None) -> bool:
    try:
        get(mesh, cert)
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        return True
    return False


def test_no_certificate_another_ca_or_an_expired_one_is_refused(tls_mesh):
    now = dt.datetime.now(dt.timezone.utc)
    directory = tls_mesh.root / "refused"
    assert refused(tls_mesh, None)
    assert refused(tls_mesh, pem_files(directory, "other-ca", *made_leaf("another mesh's CA", CALLER, now,
                                                                        dt.timedelta(hours=1))))
    assert refused(tls_mesh, pem_files(directory, "expired", *made_leaf(CA_SECRET, CALLER, now - dt.timedelta(hours=2),
                                                                       dt.timedelta(hours=1))))
    assert not refused(tls_mesh, pem_files(directory, "good", *made_leaf(CA_SECRET, CALLER, now, dt.timedelta(hours=1))))


def test_plaintext_to_the_mtls_listener_is_refused(tls_mesh):
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.ConnectError)):
        httpx.get(f"http://{tls_mesh.mtls[0]}:{tls_mesh.mtls[1]}/svc/web/who", trust_env=False, timeout=5)


def test_rotations_under_load_drop_no_request_and_survive_a_reload(tls_mesh):
    """New connections (a handshake each) and kept-alive ones, while the controller rotates the
    proxy's certificate every 2 s; then a reload serves the newest one, which is in the file."""
    stop, failures, answered = threading.Event(), [], [0]

    def load(keep_alive: bool) -> None:
        client = httpx.Client(verify=tls_context(tls_mesh, tls_mesh.client_cert), trust_env=False, timeout=5)
        url = f"https://{tls_mesh.mtls[0]}:{tls_mesh.mtls[1]}/svc/web/load"
        while not stop.is_set():
            try:
                response = client.get(url, headers={} if keep_alive else {"Connection": "close"})
                if response.status_code != 200 or response.json()["name"] != "web-local-0":
                    failures.append(response.status_code)
                answered[0] += 1
            except httpx.HTTPError as err:
                failures.append(repr(err))
        client.close()

    first_served = server_certificate(tls_mesh, tls_mesh.client_cert).serial_number
    served = set()
    threads = [threading.Thread(target=load, args=(k,)) for k in (False, False, True)]
    installed = tls_mesh.controller.metrics.certificates._value.get()
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 7
        while time.monotonic() < deadline:
            served.add(server_certificate(tls_mesh, tls_mesh.client_cert).serial_number)
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    rotations = tls_mesh.controller.metrics.certificates._value.get() - installed
    print(f"\n{answered[0]} requests, {len(failures)} failed, {rotations:.0f} rotations, "
          f"{len(served)} server certificates seen")
    assert failures == [] and answered[0] > 50
    assert rotations >= 2 and len(served) >= 3

    certificate = Path(proxy_paths(tls_mesh.plan)["certificate"])
    for _ in range(3):  # a rotation between reading the file and the handshake would blur the answer: again
        before = tls_mesh.controller.metrics.certificates._value.get()
        metrics = tls_mesh.controller.metrics
        validity = (metrics.certificate_after._value.get(), metrics.certificate_before._value.get())
        read = x509.load_pem_x509_certificate(certificate.read_bytes())
        on_disk = read.serial_number
        tls_mesh.proxy.reload()
        after_reload = server_certificate(tls_mesh, tls_mesh.client_cert).serial_number
        if tls_mesh.controller.metrics.certificates._value.get() == before:
            assert after_reload == on_disk  # the new worker read the file: the rotated certificate, not the first
            assert on_disk != first_served  # and that is a rotated one
            # the expiry alert's gauges name the installed certificate's validity
            assert validity == (read.not_valid_before_utc.timestamp(), read.not_valid_after_utc.timestamp())
            return
    pytest.fail("a rotation came between every reload and its handshake")


def test_a_rotation_under_locust_load_drops_no_request(tls_mesh, tmp_path):
    """loadtests/mtls.py (Locust, kept-alive and new connections) through the mTLS listener while the
    controller rotates the proxy's certificate every 2 s: every answer is the backend's own."""
    ca, (cert, key) = tls_mesh.plan.layout.connect_ca_file, tls_mesh.client_cert
    env = {**os.environ, "MESH_CA": str(ca), "MESH_CLIENT_CERT": cert, "MESH_CLIENT_KEY": key,
           "MESH_PATH": "/svc/web/load", "MESH_EXPECT": '"web-local-0"'}
    installed = tls_mesh.controller.metrics.certificates._value.get()
    run = subprocess.run([str(Path(sys.executable).parent / "locust"), "-f", str(REPO / "loadtests" / "mtls.py"),
                          "--headless", "-u", "6", "-r", "6", "-t", "7s", "--stop-timeout", "3", "--only-summary",
                          "--host", f"https://{tls_mesh.mtls[0]}:{tls_mesh.mtls[1]}", "--csv", str(tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=60)
    rotations = tls_mesh.controller.metrics.certificates._value.get() - installed
    total = next(row for row in csv.DictReader(open(tmp_path / "run_stats.csv")) if row["Name"] == "Aggregated")
    print(f"\nLocust: {total['Request Count']} requests, {total['Failure Count']} failed, {rotations:.0f} rotations")
    assert run.returncode == 0 and total["Failure Count"] == "0", run.stderr[-2000:]
    assert int(total["Request Count"]) > 100 and rotations >= 2


def test_intentions_decide_on_the_caller_s_certificate_and_follow_the_registry_at_runtime(tls_mesh):
    now, directory = dt.datetime.now(dt.timezone.utc), tls_mesh.root / "intentions"
    intruder = pem_files(directory, "intruder", *made_leaf(CA_SECRET, "intruder", now, dt.timedelta(hours=1)))
    denied = get(tls_mesh, intruder)  # no intention names it: deny by default
    assert denied.status_code == 403 and denied.text.strip() == "intention denies intruder -> web", denied.text
    assert get(tls_mesh, tls_mesh.client_cert).status_code == 200  # web-client -> web: allow

    started = time.monotonic()
    allow(tls_mesh.agent, CALLER, "web", "deny")
    try:
        wait_until(lambda: get(tls_mesh, tls_mesh.client_cert).status_code == 403, 2, interval=0.02,
                   what="the new deny enforced")
        print(f"\ndeny enforced {1000 * (time.monotonic() - started):.0f} ms after the registry took it")
        allow(tls_mesh.agent, "*", "web")  # a wildcard allow: the more specific deny still wins
        time.sleep(0.5)
        assert get(tls_mesh, tls_mesh.client_cert).status_code == 403
        assert get(tls_mesh, intruder).status_code == 200  # but it lets in any caller no intention names
    finally:
        allow(tls_mesh.agent, CALLER, "web")
        httpx.delete(f"http://{tls_mesh.agent.address}/v1/connect/intentions/exact",
                     params={"source": "*", "destination": "web"}, trust_env=False).raise_for_status()
    wait_until(lambda: get(tls_mesh, tls_mesh.client_cert).status_code == 200 and
               get(tls_mesh, intruder).status_code == 403, 2, what="back to the allow")
    # denials are counted: HAProxy's frontend keeps them
    assert int(stats_rows(tls_mesh.proxy.api, "mesh")["FRONTEND"]["dreq"]) >= 3


def test_a_service_presents_the_identity_the_registry_keeps_current(tls_mesh):
    """backend-api's and task-worker's router with the identity they hold: each call through the
    mTLS listener presents the leaf the registry issued, and the next one after each rotation."""
    mtls_url = f"https://{tls_mesh.mtls[0]}:{tls_mesh.mtls[1]}"

    async def calls() -> tuple[list[tuple[int, str, str]], set[str]]:
        identity = MeshIdentity(tls_mesh.agent.address, None, CALLER)
        identity.start()
        answers, serials = [], set()
        try:
            async with aiohttp.ClientSession() as session:
                router = MeshRouter(session, None, mtls_url, tls=identity.context)
                deadline = time.monotonic() + 5
                while not identity.status["ok"] and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                deadline = time.monotonic() + 6  # three half-lives of a 4 s leaf
                while time.monotonic() < deadline:
                    response = await router.send(MeshRequest(service="web", path="/who"))
                    body = json.loads(response.body)
                    headers = {k.lower(): v for k, v in body["headers"].items()}
                    answers.append((response.status, body["name"], headers.get("x-mesh-caller", "")))
                    serials.add(identity.status["serial"])
                    await asyncio.sleep(0.1)
        finally:
            await identity.close()
        return answers, serials

    answers, serials = asyncio.run(calls())
    assert answers and set(answers) == {(200, "web-local-0", CALLER)}, set(answers)
    assert len(serials) >= 2, serials  # it rotated, and the calls after it still passed
