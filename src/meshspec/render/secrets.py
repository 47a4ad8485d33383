"""The secret files a host keeps (each 0600): every program's Consul token, the stats page's
credentials on the host that runs the proxy, and the passwords of the services' credentials (the
service's own file, its dependents' copies, its probe's). Each is root's, or the user's whose
program reads it.

Pure: which files, and each one's text around its secret. The secrets are not here: the deploy
derives each from the management token by its `name` (converge.ops.consul.derived_ids), so a lost
file is rewritten the same, no second secret is stored, and one secret tells nothing of another.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from hashlib import sha256

from meshspec.common.connect_certs import service_uri
from meshspec.plan import Host, Instance, Plan
from meshspec.plan.layout import PROXY_CA, PROXY_CERTIFICATE, PROXY_CONSUMERS, STATS_CREDENTIALS, STATS_USERS
from meshspec.render.acl import host_tokens, policy_name, service_token
from meshspec.render.haproxy import STATS_USER, stats_users
from meshspec.render.mesh_ca import ca_certificate_pem, ca_key_pem
from meshspec.spec.models import PASSWORD

SECRET = "{secret}"
TOKEN_FILE = "{consul.token_file}"  # the placeholder that names a service's own token file
MANAGEMENT_TOKEN_FILE = "{consul.management_token_file}"  # the registry's alone
OWN_CREDENTIALS_FILE = "{credentials.file}"  # a service's own credentials, in their form
CA_FILE, CA_KEY_FILE = "{consul.ca_file}", "{consul.ca_key_file}"  # the mesh CA's, the registry's


@dataclass(frozen=True)
class SecretFile:
    path: str
    name: str  # what its secret is derived from: files of one name hold the same secret
    form: str = SECRET + "\n"  # the file's text, SECRET where the secret goes
    owner: str | None = None  # who may read it besides root: the user of the program that reads it
    make: Callable[[str], str] | None = None  # the text made from the secret, where `form` cannot say it

    def text(self, secret: str) -> str:
        return self.make(secret) if self.make else self.form.replace(SECRET, secret)


def host_secret_files(plan: Plan, host_label: str, instances: list[Instance], owned: bool = True) -> list[SecretFile]:
    """The secret files of a host: its programs' tokens, and the stats page's two files where the
    proxy's instance runs (HAProxy's userlist, and `user:password` for curl -u and the probe).
    `owned`: give each token file to its reader; False where the programs' users are an image's
    (the docker runtime), whose ids the host does not know: then every file is root's."""
    services = sorted({i.service for i in instances})
    readers = {service_token(plan, s).path: token_reader(plan, s) for s in services} if owned else {}
    files = [SecretFile(t.path, t.name, owner=readers.get(t.path)) for t in host_tokens(plan, host_label, instances)]
    proxy = proxy_here(plan, instances)
    if proxy:
        files += stats_files(plan, plan.proxy_controller_user if owned else None, proxy)
    here = {i.service: i.host for i in instances}
    return (files + credentials_files(plan, here, owned) + connect_ca_files(plan, services, owned)
            + edge_files(plan, proxy, owned))


def proxy_here(plan: Plan, instances: list[Instance]) -> Instance | None:
    """The proxy instance among a host's `instances`, if it runs one."""
    return next((i for i in instances if i.service == plan.spec.proxy.service), None)


def password_placeholder(service: str) -> str:
    """The placeholder a dependent's program names its copy of `service`'s password with."""
    return f"{{services.{service}.password_file}}"


def credentials_files(plan: Plan, here: dict[str, Host], owned: bool = True) -> list[SecretFile]:
    """The files of the credentials of the services `here` ({service: the host}: those of a host),
    and of the services they depend on that their programs read: each service's own file in its
    form (`{address}`: this host's), for its program and prepare steps, and its probe's
    `user:password` (root's: the checker's and verify's); a dependent's copy, in the service's
    `copy_form` (`{address}`, `{port}`: where the dependent reaches the service, as
    `{services.<name>.*}` say: Plan.reach), the dependent's program's user's."""
    files = []
    for name in sorted(here):
        service = plan.service(name)
        if service.credentials:
            form = service.credentials.form.replace(PASSWORD, SECRET).replace("{address}", here[name].address)
            owner = service.process.user if owned and reads_secret(plan, name, OWN_CREDENTIALS_FILE) else None
            files += [SecretFile(str(plan.layout.credentials_file(name, name)), _password_name(plan, name), form, owner),
                      SecretFile(str(plan.layout.probe_credentials_file(name)), _password_name(plan, name),
                                 f"{service.credentials.user}:{SECRET}\n")]
        for dep in service.depends_on:
            if (credentials := plan.service(dep).credentials) and reads_secret(plan, name, password_placeholder(dep)):
                address, port = plan.reach(dep, here[name])
                copy = (credentials.copy_form.replace(PASSWORD, SECRET).replace("{address}", address)
                        .replace("{port}", str(port)))
                files.append(SecretFile(str(plan.layout.credentials_file(dep, name)), _password_name(plan, dep), copy,
                                        owner=service.process.user if owned else None))
    return files


def runtime_placeholders(plan: Plan, service: str) -> list[str]:
    """The placeholders of the secret files a service's program may name: its token (the
    management token too, for the registry), its own credentials file, its dependencies' passwords."""
    deps = [password_placeholder(d) for d in plan.service(service).depends_on if plan.service(d).credentials]
    return [TOKEN_FILE, MANAGEMENT_TOKEN_FILE, OWN_CREDENTIALS_FILE, CA_FILE, CA_KEY_FILE, *deps]


def credentials_paths(plan: Plan, service: str) -> list[str]:
    """The credentials files a service's program or its prepare steps read: its own, if it has
    credentials, and its copies of its dependencies' passwords that its program names."""
    own = [str(plan.layout.credentials_file(service, service))] if plan.service(service).credentials else []
    return own + [str(plan.layout.credentials_file(d, service)) for d in plan.service(service).depends_on
                  if plan.service(d).credentials and reads_secret(plan, service, password_placeholder(d))]


def _password_name(plan: Plan, service: str) -> str:
    return policy_name(plan, f"{service}-password")


#: The files rendered for a program (`process.files`, by renderer) that name a secret file of its:
#: prometheus.yml names Prometheus' token, which it presents to list its targets.
RENDERED_SECRETS = {"prometheus": (TOKEN_FILE,)}


def held_keys(plan: Plan, service: str) -> list[str]:
    """The key files of the consumers a service's program calls the edge as (`held_by`)."""
    return [str(plan.layout.consumer_key_file(c.name)) for c in plan.spec.consumers if c.held_by == service]


def reads_secret(plan: Plan, service: str, placeholder: str = TOKEN_FILE) -> bool:
    """Whether a service's program names the secret file `placeholder` stands for (its command,
    environment, or a file rendered for it): its own token file by default."""
    process = plan.service(service).process
    return process is not None and (
        any(placeholder in text for text in [*process.command, *process.env.values()])
        or any(placeholder in RENDERED_SECRETS.get(renderer, ()) for renderer in process.files.values()))


def token_reader(plan: Plan, service: str) -> str | None:
    """The user who may read a service's token file: the one its program runs as, if the program
    reads it; nobody but root otherwise, as for a program that never reads its token."""
    process = plan.service(service).process
    return process.user if process is not None and reads_secret(plan, service) else None


def connect_ca_files(plan: Plan, services: list[str], owned: bool = True) -> list[SecretFile]:
    """The mesh CA (render.mesh_ca), certificate and key, where the registry's program reads them:
    its user's, or root's. (The proxy's copy of the certificate is kept with its own certificate.)"""
    registry = plan.spec.consul.service
    if registry not in services:
        return []
    owner = plan.service(registry).process.user if owned else None
    name = connect_ca_name(plan)
    wanted = [(CA_FILE, SecretFile(str(plan.layout.connect_ca_file), name, owner=owner,
                                   make=partial(ca_certificate_pem, trust_domain=plan.spec.mesh.name))),
              (CA_KEY_FILE, SecretFile(str(plan.layout.connect_ca_key_file), name, owner=owner, make=ca_key_pem))]
    return [file for placeholder, file in wanted if reads_secret(plan, registry, placeholder)]


def consumer_key(secret: str, consumer: str) -> str:
    """A consumer's API key: one secret of the mesh's, keyed by the consumer (HMAC), so the map and
    every key file follow from it and one key tells nothing of another."""
    return hmac.new(secret.encode(), f"consumer/{consumer}".encode(), sha256).hexdigest()


def consumers_map(secret: str, consumers: tuple[str, ...]) -> str:
    """The edge listener's map: each consumer's key's SHA-256 (hex) -> the consumer."""
    return "".join(f"{sha256(consumer_key(secret, c).encode()).hexdigest()} {c}\n" for c in consumers)


def edge_files(plan: Plan, proxy: Instance | None, owned: bool = True) -> list[SecretFile]:
    """Where the spec declares consumers: each consumer's key, root's (the operator's to hand out) or
    its holder's program's user's (`held_by`), and, on the proxy's host, the map of their hashes
    (the controller's user's)."""
    if not plan.spec.consumers:
        return []
    name, consumers = policy_name(plan, "edge-keys"), tuple(c.name for c in plan.spec.consumers)
    files = [SecretFile(str(plan.layout.consumer_key_file(c.name)), name, make=partial(_key_line, consumer=c.name),
                        owner=plan.service(c.held_by).process.user if owned and c.held_by else None)
             for c in plan.spec.consumers]
    if proxy:
        files.append(SecretFile(plan.proxy_file(PROXY_CONSUMERS, proxy), name, owner=plan.proxy_controller_user if owned else None,
                                make=partial(consumers_map, consumers=consumers)))
    return files


def _key_line(secret: str, consumer: str) -> str:
    return consumer_key(secret, consumer) + "\n"


def connect_ca_name(plan: Plan) -> str:
    return policy_name(plan, "connect-ca")


@dataclass(frozen=True)
class ProxyCertificate:
    """The proxy's certificate for its mTLS listener, which HAProxy needs before it starts: the
    deploy issues one with the mesh CA where there is none still good; the controller rotates it."""
    path: str
    ca_path: str  # the mesh CA's certificate beside it (the listener's ca-file)
    ca_name: str  # the mesh CA's secret's name
    trust_domain: str
    service: str
    uri: str
    owner: str | None  # the controller's user, who rewrites it; None: root's


def proxy_certificate(plan: Plan, instances: list[Instance], owned: bool = True) -> ProxyCertificate | None:
    """The proxy's certificate, on the host that runs the proxy, where it has an mTLS listener."""
    proxy = proxy_here(plan, instances)
    if proxy is None or plan.spec.proxy.mtls_port_name not in proxy.ports:
        return None
    return ProxyCertificate(plan.proxy_file(PROXY_CERTIFICATE, proxy), plan.proxy_file(PROXY_CA, proxy),
                            connect_ca_name(plan), plan.spec.mesh.name, proxy.service,
                            service_uri(plan.spec.mesh.name, plan.spec.consul.datacenter, proxy.service),
                            plan.proxy_controller_user if owned else None)


def stats_files(plan: Plan, controller_user: str | None = None, proxy: Instance | None = None) -> list[SecretFile]:
    """HAProxy's userlist of the stats page (the controller's user's: it validates the files HAProxy
    will re-read before a reload), and the same password as `user:password` (root's: the checker's),
    in a proxy's directory (by default the first's)."""
    name = policy_name(plan, "haproxy-stats")
    return [SecretFile(plan.proxy_file(STATS_USERS, proxy), name, stats_users(SECRET), owner=controller_user),
            SecretFile(plan.proxy_file(STATS_CREDENTIALS, proxy), name, f"{STATS_USER}:{SECRET}\n")]
