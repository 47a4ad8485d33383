"""The proxy's certificate: HAProxy's mTLS listener reads it when it starts, before the registry,
whose Connect CA issues certificates, answers. So the deploy issues the first one itself, with the
mesh CA it derives from the management token (render.mesh_ca), and again only when the one there
is no longer good (expired after a long stop, another CA, another identity); mesh-controller
rotates it from the registry while the mesh runs."""

from __future__ import annotations

import datetime as dt
import shlex
from io import StringIO
from pathlib import PurePosixPath

from pyinfra import host
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.facts.files import FileContents

from meshspec.converge.facts.shared import SharedFact
from meshspec.converge.facts.snapshot import current
from meshspec.converge.ops.consul import derived_ids, read_token
from meshspec.render.mesh_ca import ca_certificate_pem, certificate_pem, is_current
from meshspec.render.secrets import ProxyCertificate


@operation()
def proxy_certificate(token: SharedFact, wanted: ProxyCertificate | None):
    """
    Keep a good certificate of the proxy's and the mesh CA's certificate beside it (its listener's
    ca-file), each mode 0600, the controller's user's, in a 0700 directory of its.

    + token: the management token file's contents
    + wanted: the proxy's certificate on this host (render.secrets.proxy_certificate), or None
    """
    if wanted is None:
        host.noop("no mTLS listener on this host")
        return
    management = read_token(token)
    if management is None:
        host.noop("the proxy's certificate follows the management token, which this run makes")
        return
    secret, now = derived_ids(management, wanted.ca_name)[1], dt.datetime.now(dt.timezone.utc)
    ca = ca_certificate_pem(secret, wanted.trust_domain)
    found = current(FileContents, path=wanted.path)
    good = found and is_current("\n".join(found) + "\n", secret, wanted.trust_domain, wanted.service, wanted.uri, now)
    current_ca = current(FileContents, path=wanted.ca_path)
    if good and current_ca and "\n".join(current_ca) + "\n" == ca:
        host.noop(f"{wanted.path} holds a certificate of the mesh CA for {wanted.uri}, and the CA is beside it")
        return
    owner, parent = shlex.quote(wanted.owner or "root"), shlex.quote(str(PurePosixPath(wanted.path).parent))
    yield StringCommand("sh", "-c", shlex.quote(f"umask 077 && mkdir -p {parent}"))
    yield StringCommand("chmod", "700", parent)
    texts = {wanted.ca_path: ca}
    if not good:
        texts[wanted.path] = certificate_pem(secret, wanted.trust_domain, wanted.service, wanted.uri, now)
    for path, text in texts.items():
        yield StringCommand("sh", "-c", shlex.quote(f"umask 077 && : > {shlex.quote(path)}"))  # 0600 before it holds a key
        yield FileUploadCommand(StringIO(text), path)
        yield StringCommand("chmod", "600", shlex.quote(path))
        yield StringCommand("chown", owner, shlex.quote(path))
    yield StringCommand("chown", owner, parent)
