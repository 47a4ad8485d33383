"""Where a mesh keeps its state on a host: everything under one MESH_STATE_DIR; and where the
process runtime's installs are: the install cache (MESH_CACHE_DIR) every mesh of the host shares.

Two meshes with different state dirs (and port offsets) share no state: each has its own
supervisord, agent data and logs. They share installs: an install is named by its recipe, so the
same recipe is installed once per host.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from meshspec.common.digest import digest
from meshspec.spec.models import Install


@dataclass(frozen=True)
class Layout:
    root: PurePosixPath

    def instance_dir(self, instance_id: str) -> PurePosixPath:
        return self.root / "instances" / instance_id

    @property
    def supervisor_dir(self) -> PurePosixPath:
        return self.root / "supervisor"

    @property
    def supervisor_conf(self) -> PurePosixPath:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def supervisor_socket(self) -> PurePosixPath:
        return self.supervisor_dir / "supervisor.sock"

    @property
    def programs_dir(self) -> PurePosixPath:
        return self.supervisor_dir / "programs"

    def program_file(self, instance_id: str) -> PurePosixPath:
        return self.programs_dir / f"{instance_id}.conf"

    @property
    def logs_dir(self) -> PurePosixPath:
        return self.root / "logs"

    @property
    def checker_file(self) -> PurePosixPath:
        """The checks the host's checker runs (render.checker)."""
        return self.root / "checker" / "checks.json"

    @property
    def checker_metrics_dir(self) -> PurePosixPath:
        """Where the host's checker writes its probes' metrics for node-exporter's textfile
        collector to export (the checker serves no HTTP); `{checker.metrics_dir}` in a command."""
        return self.root / "checker" / "metrics"

    @property
    def consul_token_file(self) -> PurePosixPath:
        """The management token: the registry's own, and the deploy's and verify's (the operator's)."""
        return self.root / "consul" / "management-token"

    @property
    def connect_ca_file(self) -> PurePosixPath:
        """The mesh CA's certificate (the registry's Connect CA root), which the deploy derives from
        the management token; beside it, its key, which only the registry's program reads. Among the
        services' secrets, in a directory of their own (a dot: no service is named so)."""
        return self.root / "secrets" / ".connect-ca" / "ca.pem"

    @property
    def connect_ca_key_file(self) -> PurePosixPath:
        return self.root / "secrets" / ".connect-ca" / "key.pem"

    def consumer_key_file(self, consumer: str) -> PurePosixPath:
        """A consumer's API key, root's: the operator hands it to whoever calls as that consumer."""
        return self.root / "secrets" / ".consumers" / consumer

    def service_token_file(self, service: str) -> PurePosixPath:
        """The service's own Consul token (render.acl says what it may do)."""
        return self.root / "consul" / "tokens" / f"service-{service}"

    def credentials_file(self, service: str, reader: str) -> PurePosixPath:
        """The password of `service`'s credentials as the program of `reader` reads it: the service's
        own file (reader == service), or a dependent's copy."""
        return self.root / "secrets" / service / reader

    def probe_credentials_file(self, service: str) -> PurePosixPath:
        """`user:password` of `service`'s credentials, root's: its probe logs in with them. Beside the
        readers' files (a dot: no service is named so)."""
        return self.root / "secrets" / service / ".probe"

    @property
    def checker_token_file(self) -> PurePosixPath:
        """The host's checker's Consul token: it updates the checks of this host's instances."""
        return self.root / "consul" / "tokens" / "checker"


RUNTIME_SOCKET = "runtime.sock"  # HAProxy's runtime API, in the proxy instance's directory
MASTER_SOCKET = "master.sock"  # HAProxy's master CLI (reloads), beside it
# The stats page's credentials, in a 0700 directory of the proxy instance's, both 0600 (the deploy
# writes them): HAProxy's userlist (a config file of its own, loaded with a second -f, so
# haproxy.cfg holds no secret), and the same password as `user:password` for whoever reads the page.
STATS_USERS = "stats/users.cfg"
STATS_CREDENTIALS = "stats/credentials"
# The proxy's certificate and key for its mTLS listener (one PEM, as HAProxy's `crt` reads it), 0600,
# the controller's user's: the controller rotates it from the registry's Connect CA.
PROXY_CERTIFICATE = "tls/certificate.pem"
# Beside it, the mesh CA's certificate, its mTLS listener's `ca-file`: a copy the controller's user
# reads too (it checks what HAProxy will load before each reload), where the registry's is the registry's.
PROXY_CA = "tls/ca.pem"
# The consumers' keys as the edge listener looks them up (their SHA-256 -> the consumer), 0600, the
# controller's user's (it validates what HAProxy will load): no key itself is in it.
PROXY_CONSUMERS = "edge/consumers.map"

# What a deploy creates under the state dir; teardown removes these and nothing else. Installs are
# not here: they live in the shared InstallCache below, which `make purge` empties.
OWNED = ("instances", "supervisor", "logs", "consul", "checker", "secrets")
# Where earlier versions kept the mesh's own installs, under the state dir: teardown removes it too.
FORMER = ("install",)


#: The interpreter of every venv of the install cache: Debian's, which every user may run (a pyenv
#: under /root, mode 0700, is root's alone), so a program from an install can run as its own user.
VENV_PYTHON = "/usr/bin/python3"


def install_key(install: Install) -> str:
    """The digest of an install's recipe as the spec declares it: `after` with its {install_dir}
    unsubstituted, since the directory's name is made of this digest; and the venv's interpreter."""
    return digest([VENV_PYTHON, install.pip, install.npm, *([install.after] if install.after else [])])


@dataclass(frozen=True)
class InstallCache:
    """The process runtime's installs on a host: one directory per recipe, `<service>-<key>`, shared
    by every mesh of the host and kept by teardown (named by its content, so never stale)."""

    root: PurePosixPath

    def install_dir(self, service: str, install: Install) -> PurePosixPath:
        return self.root / f"{service}-{install_key(install)}"

    def meshspec_dir(self, build: str) -> PurePosixPath:
        """meshspec itself, installed from the source whose digest is `build` (render.installs.meshspec_recipe)."""
        return self.root / f"meshspec-{build}"
